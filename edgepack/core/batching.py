"""Feeds are ``{input name: array}`` with samples stacked on axis 0; run them through any callable in batches."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Feeds = dict[str, np.ndarray]


def num_samples(feeds: Feeds) -> int:
    counts = {len(v) for v in feeds.values()}
    if len(counts) != 1:
        raise ValueError(f"feeds disagree on the number of samples: {sorted(counts)}")
    return counts.pop()


def take(feeds: Feeds, index: slice | np.ndarray) -> Feeds:
    return {k: v[index] for k, v in feeds.items()}


def max_batch(first_input_shape: Sequence[int | None]) -> int | None:
    """Largest batch a model takes in one call, from its first input's shape: None = any (dynamic batch)."""
    first = list(first_input_shape)
    return None if (first and first[0] is None) else (first[0] if first else 1)


def run_batched(infer: Callable[[Feeds], Feeds], feeds: Feeds, max_batch: int | None) -> Feeds:
    """Run ``infer`` over all samples in chunks of ``max_batch`` (None = all at once) and stack the outputs.

    A model with a fixed batch B > 1 gets its last chunk padded with the last sample; padding is dropped.
    """
    n = num_samples(feeds)
    step = n if max_batch is None else max_batch
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, step):
        part = take(feeds, slice(start, start + step))
        got = len(next(iter(part.values())))
        if max_batch is not None and got < max_batch:
            part = {k: np.concatenate([v] + [v[-1:]] * (max_batch - got)) for k, v in part.items()}
        out = infer(part)
        for k, v in out.items():
            chunks.setdefault(k, []).append(np.asarray(v)[:got])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def first_batch(feeds: Feeds, max_batch: int | None) -> Feeds:
    """One model call's worth of samples (what latency is timed on)."""
    return take(feeds, slice(0, max_batch or 1))

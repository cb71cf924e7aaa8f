"""Feeds are ``{input name: array}`` with samples stacked on axis 0; run them through any callable in batches."""

from __future__ import annotations

from typing import Callable, Sequence, Union

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


def axes_of(specs: Sequence) -> dict[str, int | None]:
    """Each input's batch axis, from TensorSpecs or their manifest dicts (absent = 0)."""
    out: dict[str, int | None] = {}
    for t in specs:
        d = t if isinstance(t, dict) else t.__dict__
        out[d["name"]] = d.get("batch_axis", 0)
    return out


def per_sample(axes: dict[str, int | None] | None) -> bool:
    """Inputs whose samples are not on axis 0 are fed one sample per call (batch 1)."""
    return bool(axes) and any(a != 0 for a in axes.values())


def to_model(part: Feeds, axes: dict[str, int | None] | None) -> Feeds:
    """Samples stacked on axis 0 → the tensors the model takes (batch axis moved into place; a batch-less input
    is one whole tensor, so ``part`` holds exactly one sample)."""
    if not per_sample(axes):
        return part
    out = {}
    for k, v in part.items():
        a = axes.get(k, 0)  # type: ignore[union-attr]
        out[k] = np.asarray(v[0]) if a is None else (np.ascontiguousarray(np.moveaxis(v, 0, a)) if a else v)
    return out


CALLS = "calls"  # run_batched mode: each call's raw outputs, unsliced (what tracing a model's output shapes needs)
CALL_BATCH = "edgepack:call_batch"  # in CALLS mode: the batch size of each call (after padding)
OutAxes = Union[dict[str, Union[int, None, str]], str, None]


def _batch_axis(name: str, v: np.ndarray, b: int, axis: int | None | str) -> int:
    """The axis of ``v`` (one call's output for a batch of ``b``) that holds the samples. ``"auto"``: axis 0 when its
    size is the batch, else the only axis of that size; anything else is refused rather than sliced blindly."""
    if isinstance(axis, int):
        if not 0 <= axis < v.ndim or v.shape[axis] < b:
            raise ValueError(f"output '{name}' has shape {v.shape} for a call of {b} samples: its batch_axis {axis} "
                             "cannot hold them")
        return axis
    if v.ndim and v.shape[0] == b:
        return 0
    same = [i for i in range(v.ndim) if v.shape[i] == b]
    if len(same) == 1:
        return same[0]
    raise ValueError(f"output '{name}' has shape {v.shape} for a call of {b} samples: its batch axis is "
                     f"{'ambiguous' if same else 'not found'}; declare it (--output {name}=KIND,batch_axis=N|none)")


def _samples_first(name: str, v: np.ndarray, b: int, got: int, axis: int | None | str) -> np.ndarray:
    """One call's output with its samples on axis 0 (padding dropped); every other axis whole, in order."""
    v = np.asarray(v)
    if axis is None:  # no batch axis: one whole tensor for the call's one sample
        return v[None]
    a = _batch_axis(name, v, b, axis)
    return (np.moveaxis(v, a, 0) if a else v)[:got]


def run_batched(infer: Callable[[Feeds], Feeds], feeds: Feeds, max_batch: int | None,
                axes: dict[str, int | None] | None = None, links: dict[str, str] | None = None,
                out_axes: OutAxes = None) -> Feeds:
    """Run ``infer`` over all samples in chunks of ``max_batch`` (None = all at once) and stack the outputs,
    samples first.

    ``out_axes`` gives each output's batch axis in the model's own output (an int, None = the output has no batch
    axis, "auto" or absent = axis 0 when its size is the call's batch, else the only axis of that size, else a
    ValueError): that axis is moved to axis 0 and every other axis kept whole. An output without a batch axis makes
    every call hold one sample. ``out_axes=CALLS`` returns each call's raw outputs unsliced, stacked on a new axis 0,
    with the calls' batch sizes under ``CALL_BATCH`` (for tracing output shapes).

    A model with a fixed batch B > 1 gets its last chunk padded with the last sample; padding is dropped. When an
    input's batch axis is not 0 (``axes``), samples go one per call and every output is stacked as one whole
    tensor per sample. ``links`` (input → output) feeds an output back into an input on the next call (recurrent
    state: the first sample's own value starts the trajectory).
    """
    n = num_samples(feeds)
    calls = out_axes == CALLS
    oax: dict[str, int | None | str] = {} if calls or not isinstance(out_axes, dict) else out_axes
    if per_sample(axes) or links:
        chunks1: dict[str, list[np.ndarray]] = {}
        carry: dict[str, np.ndarray] = {}
        for i in range(n):
            part = to_model(take(feeds, slice(i, i + 1)), axes)
            part.update(carry)
            out = infer(part)
            for k, v in out.items():
                v = np.asarray(v)
                if not per_sample(axes) and not calls:
                    v = _samples_first(k, v, 1, 1, oax.get(k, "auto"))
                chunks1.setdefault(k, []).append(v)
            carry = {inp: np.asarray(out[o]) for inp, o in (links or {}).items()}
        if per_sample(axes) or calls:
            res = {k: np.stack(v) for k, v in chunks1.items()}
            return {**res, CALL_BATCH: np.ones(n, np.int64)} if calls else res
        return {k: np.concatenate(v) for k, v in chunks1.items()}
    step = n if max_batch is None else max_batch
    if any(a is None for a in oax.values()):
        step = 1  # an output without a batch axis answers for the whole call: one sample per call
    chunks: dict[str, list[np.ndarray]] = {}
    sizes: list[int] = []
    for start in range(0, n, step):
        part = take(feeds, slice(start, start + step))
        got = len(next(iter(part.values())))
        if max_batch is not None and got < max_batch:
            part = {k: np.concatenate([v] + [v[-1:]] * (max_batch - got)) for k, v in part.items()}
        b = len(next(iter(part.values())))
        sizes.append(b)
        out = infer(part)
        for k, v in out.items():
            chunks.setdefault(k, []).append(np.asarray(v)[None] if calls
                                            else _samples_first(k, v, b, got, oax.get(k, "auto")))
        if calls:
            break  # one call is what a trace needs
    res = {k: np.concatenate(v) for k, v in chunks.items()}
    return {**res, CALL_BATCH: np.asarray(sizes, np.int64)} if calls else res


def model_batches(feeds: Feeds, max_batch: int | None, axes: dict[str, int | None] | None = None) -> list[Feeds]:
    """The model-form feeds ``run_batched`` would make (for quantizers' calibration readers)."""
    n = num_samples(feeds)
    step = 1 if per_sample(axes) else (n if max_batch is None else max_batch)
    out = []
    for start in range(0, n, step):
        part = take(feeds, slice(start, start + step))
        got = len(next(iter(part.values())))
        if max_batch is not None and got < max_batch and not per_sample(axes):
            part = {k: np.concatenate([v] + [v[-1:]] * (max_batch - got)) for k, v in part.items()}
        out.append(to_model(part, axes))
    return out


def first_batch(feeds: Feeds, max_batch: int | None, axes: dict[str, int | None] | None = None) -> Feeds:
    """One model call's worth of samples, in the model's form (what latency is timed on)."""
    return to_model(take(feeds, slice(0, 1 if per_sample(axes) else (max_batch or 1))), axes)

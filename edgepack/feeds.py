"""Feeds are ``{input name: array}`` with samples stacked on axis 0; helpers run them through any callable in batches."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

Feeds = dict[str, np.ndarray]


def num_samples(feeds: Feeds) -> int:
    counts = {len(v) for v in feeds.values()}
    if len(counts) != 1:
        raise ValueError(f"feeds disagree on the number of samples: {sorted(counts)}")
    return counts.pop()


def take(feeds: Feeds, index: slice | np.ndarray) -> Feeds:
    return {k: v[index] for k, v in feeds.items()}


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and contents)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def save_npz(path: Path, arrays: Feeds) -> None:
    """Write arrays uncompressed, with deterministic bytes for identical inputs."""
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def load_npz(path: Path) -> Feeds:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

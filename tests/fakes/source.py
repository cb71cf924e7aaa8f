"""A linear classifier stored as ``.fakemodel`` (an .npz): logits = flatten(x) @ weight.T + bias. numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.errors import InputError
from edgepack.feeds import Feeds, sha256_file
from edgepack.signature import TensorSpec
from edgepack.sources import Source


def make(path: Path, *, classes: int = 10, shape: tuple[int, ...] = (1, 1, 32, 32), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape[1:]))
    with open(path, "wb") as f:
        np.savez(f, weight=rng.standard_normal((classes, d)).astype(np.float32) * 0.05,
                 bias=rng.standard_normal(classes).astype(np.float32) * 0.1, input_shape=np.array(shape))
    return Path(path)


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None) -> Source:  # noqa: ARG001
    p = Path(model)
    if not p.is_file():
        raise InputError(f"model not found: {model}")
    with np.load(p, allow_pickle=False) as z:
        shape = tuple(int(x) for x in z["input_shape"])
        classes = int(z["weight"].shape[0])
    return Source(kind="fake", format="fakemodel", path=str(p), name=p.stem,
                  inputs=(TensorSpec("input", (None, *shape[1:])),), outputs=(TensorSpec("logits", (None, classes)),),
                  sha256=sha256_file(p))


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float32) @ weights["weight"].T + weights["bias"]).astype(np.float32)


def reference(source: Source, feeds: Feeds) -> Feeds:
    with np.load(source.path, allow_pickle=False) as z:
        w = {k: z[k] for k in z.files}
    return {"logits": forward(w, feeds["input"])}

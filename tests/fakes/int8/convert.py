"""fake_int8's worker side: a quantsearch Space over column blocks of the linear classifier's weight."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgepack import quantsearch
from edgepack.artifact import Artifact

BLOCKS = 8


def row_digest(row: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest()[:12]


class LinearSpace(quantsearch.Space):
    def __init__(self, weights: dict[str, np.ndarray], step: float) -> None:
        self.w, self.b, self.step = weights["weight"], weights["bias"], step
        self.cols = np.array_split(np.arange(self.w.shape[1]), BLOCKS)

    def recipes(self):
        return [quantsearch.Recipe("plain", {"step": self.step}, "the profile's grid"),
                quantsearch.Recipe("finer", {"step": self.step / 2}, "half the grid step"),
                quantsearch.Recipe("finest", {"step": self.step / 8}, "an eighth of the grid step")]

    def build(self, recipe, float_layers):
        w = self.w.copy()
        for i, cols in enumerate(self.cols):
            if f"block{i}" in float_layers:
                continue
            blk = w[:, cols]
            step = recipe.settings["step"] * float(np.abs(blk).max())
            w[:, cols] = np.round(blk / step) * step
        return w

    def run(self, candidate, feeds):
        x = feeds["input"]
        return {"logits": (x.reshape(len(x), -1).astype(np.float32) @ candidate.T + self.b).astype(np.float32)}

    def layers(self, candidate):
        return [f"block{i}" for i in range(BLOCKS)]

    def size(self, candidate):
        return int(candidate.size)


def convert(source, profile, options, data, out_dir: Path) -> Artifact:
    with np.load(source.path, allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    space = LinearSpace(weights, options.step)
    tuning = data.search_tuning()
    result = quantsearch.search(space, tuning, options.accuracy_search)
    np.savez(Path(out_dir) / "model.npz", weight=result.candidate.astype(np.float32), bias=weights["bias"],
             input_shape=weights["input_shape"])
    details = {"accuracy_search": result.to_dict(),
               "seen": {"calibration": [row_digest(r) for r in data.calibration["input"]],
                        "tuning": [] if tuning is None else [row_digest(r) for r in tuning.feeds["input"]]}}
    if tuning is not None:  # the reference outputs the search compared with are the model's own
        ref = space.run(weights["weight"], tuning.feeds)["logits"]
        details["tuning_reference_max_diff"] = float(np.abs(ref - tuning.reference["logits"]).max())
    return Artifact(backend=profile.backend, precision=profile.precision, primary="model.npz", files=["model.npz"],
                    inputs=list(source.inputs), outputs=list(source.outputs), runtime={"weights": "model.npz"},
                    details=details)

from __future__ import annotations

import shutil
from pathlib import Path

from edgepack.artifact import Artifact


def convert(source, profile, options, data, out_dir: Path, runtime: dict | None = None) -> Artifact:
    shutil.copyfile(source.path, Path(out_dir) / "model.npz")
    return Artifact(backend=profile.backend, precision=profile.precision, primary="model.npz", files=["model.npz"],
                    inputs=list(source.inputs), outputs=list(source.outputs),
                    runtime={"weights": "model.npz", **(runtime or {})},
                    details={"calibration_samples": len(next(iter(data.calibration.values())))})

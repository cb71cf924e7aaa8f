from __future__ import annotations

import shutil
from pathlib import Path

from edgepack.artifact import Artifact


def convert(source, profile, options, data, out_dir: Path) -> Artifact:
    if options.mode == "crash":  # a converter that takes its process down
        import os

        (Path(out_dir) / "half-written.bin").write_bytes(b"x")
        os._exit(3)
    if options.mode == "slow":  # a converter that takes its time (SIGTERM and kill tests)
        import time

        (Path(out_dir) / "half-written.bin").write_bytes(b"x")
        time.sleep(600)
    if options.mode == "hog":  # a converter that allocates past the worker's memory limit
        import numpy as np

        hog = [np.ones(1 << 27) for _ in range(3)]  # 3 GiB in 1 GiB steps (bounded, should the limit fail)
        del hog
    shutil.copyfile(source.path, Path(out_dir) / "model.npz")
    return Artifact(backend=profile.backend, precision=profile.precision, primary="model.npz", files=["model.npz"],
                    inputs=list(source.inputs), outputs=list(source.outputs),
                    runtime={"weights": "model.npz", "mode": options.mode, "sigma": options.sigma},
                    details={"mode": options.mode})

"""numpy-only device loader of fake_noisy: the reference computation plus a deterministic defect."""

from pathlib import Path

import numpy as np


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    with np.load(Path(bundle) / runtime["weights"], allow_pickle=False) as z:
        w, b = z["weight"], z["bias"]
    mode, sigma = runtime.get("mode", "noise"), float(runtime.get("sigma", 0.01))

    def infer(feed):
        x = feed["input"]
        y = (x.reshape(len(x), -1).astype(np.float32) @ w.T + b).astype(np.float32)
        if mode == "noise":
            y = y + np.float32(sigma * float(np.abs(y).max() or 1.0)) * np.sin(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        elif mode == "zeros":
            y = np.zeros_like(y)
        elif mode == "constant":
            y = np.full_like(y, 0.5)
        elif mode == "nan":
            y = y.copy()
            y[0, 0] = np.nan
        elif mode == "inf":
            y = y.copy()
            y[-1, -1] = np.inf
        elif mode == "shape":
            y = y[:, :-1]
        return {"logits": y.astype(np.float32)}

    return infer, {"runtime": "numpy", "mode": mode, "threads": threads}

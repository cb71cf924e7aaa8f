"""`-t all --skip-unavailable` on a real ONNX model at opset 11 (issue 9): every target that takes ONNX is built,
the others are skipped with their reason before any conversion; ORT INT8 upgrades the opset for per-channel Q/DQ.

Since the onnx → torch bridge (issue 22) every shipped profile takes an ONNX model. The default run builds the targets
that take ONNX directly (ORT, OpenVINO, TensorRT) and checks the plan of all of them; the whole `-t all` build, TFLite
and Core ML through the bridge included (≈ 4 min), is the slow test."""

from __future__ import annotations

import json
import re

import pytest

from edgepack.backends import registry
from edgepack.config import available_targets, load_profile

from tinymodels import make_tiny_onnx

pytest.importorskip("onnxruntime")


BRIDGED = "onnx → torch bridge"


def _profiles() -> dict:
    return {name: registry.resolve(load_profile(str(p))) for name, p in available_targets().items()}


def test_plan_of_all_targets_on_an_opset11_onnx_model(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "old.onnx", width=16, opset=11)
    res = cli("plan", model, "-t", "all", "--skip-unavailable", "--json", tmp_path / "plan.json")
    assert res.exit_code == 0, res.stdout + res.stderr
    rows = {r["target"]: r for r in json.loads((tmp_path / "plan.json").read_text())["targets"]}
    for name, t in _profiles().items():
        ok, route = (False, "") if t.backend.missing() else t.backend.route("onnx")
        assert rows[name]["action"] == ("build" if ok else "skip"), (name, rows[name])
        if ok:
            assert rows[name]["route"] == route
            assert (route == BRIDGED) == ("torch" in t.backend.accepts and "onnx" not in t.backend.accepts)


def test_direct_targets_on_an_opset11_onnx_model(tmp_path, cli):
    _all_targets(tmp_path, cli, bridged=False)


@pytest.mark.slow  # ≈ 4 min: the 9 TFLite and Core ML targets through the bridge
def test_all_targets_on_an_opset11_onnx_model(tmp_path, cli):
    _all_targets(tmp_path, cli, bridged=True)


def _all_targets(tmp_path, cli, bridged: bool) -> None:
    model = make_tiny_onnx(tmp_path / "old.onnx", width=16, opset=11)
    out = tmp_path / "dist"
    profiles = _profiles()
    if not bridged:
        profiles = {n: t for n, t in profiles.items() if t.backend.missing() or t.backend.route("onnx")[1] != BRIDGED}
    chosen = ["-t", "all"] if bridged else [a for n in profiles for a in ("-t", n)]
    res = cli("build", model, *chosen, "--skip-unavailable", "-c", "digits", "--out", out,
              "--junit", tmp_path / "junit.xml")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads((out / "old" / "build-report.json").read_text())
    rows = {t["target"]: t for t in report["targets"]}
    assert set(rows) == set(profiles)
    for name, t in profiles.items():
        takes = not t.backend.missing() and t.backend.route("onnx")[0]
        if takes:
            assert rows[name]["status"] == "passed", (name, rows[name].get("reason"))
            assert (out / "old" / name / "manifest.json").is_file()
        else:
            assert rows[name]["status"] == "skipped" and rows[name]["reason"], name
            assert not (out / "old" / name).exists()
    built = [n for n, r in rows.items() if r["status"] == "passed"]
    assert any(n.startswith("android-ort") for n in built) and any("openvino" in n for n in built)
    int8 = rows["android-ort-int8"]["artifact"]
    assert int8["opset"].startswith("upgraded from opset 11 to 13") and int8["per_channel"] is True
    assert not (out / "old" / "android-ort-int8" / "model.onnx").exists()  # the .ort only
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testsuite ") == len(profiles)
    # a skipped target is a skipped test case ("not applied" and information rows are skipped test cases too)
    for name, r in rows.items():
        if r["status"] == "skipped":
            assert re.search(f'<testcase classname="{re.escape(name)}"[^>]*><skipped ', junit), name
    if bridged:  # every TFLite and Core ML profile built from the ONNX model, with the bridge's fidelity row
        through = [n for n, r in rows.items() if r["status"] == "passed" and r["checks"]
                   and r["checks"][0]["name"] == "bridge fidelity (onnx → torch)"]
        assert any(n.startswith("android-tflite") for n in through) and any(n.startswith("ios-coreml") for n in through)
    assert "summary" in res.stdout

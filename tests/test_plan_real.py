"""`-t all --skip-unavailable` on a real ONNX model at opset 11 (issue 9): every target that takes ONNX is built,
the others are skipped with their reason before any conversion; ORT INT8 upgrades the opset for per-channel Q/DQ."""

from __future__ import annotations

import json

import pytest

from edgepack.backends import registry
from edgepack.config import available_targets, load_profile

from tinymodels import make_tiny_onnx

pytest.importorskip("onnxruntime")


def test_all_targets_on_an_opset11_onnx_model(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "old.onnx", width=16, opset=11)
    out = tmp_path / "dist"
    res = cli("build", model, "-t", "all", "--skip-unavailable", "-c", "digits", "--out", out,
              "--junit", tmp_path / "junit.xml")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads((out / "old" / "build-report.json").read_text())
    rows = {t["target"]: t for t in report["targets"]}
    profiles = {name: registry.resolve(load_profile(str(p))) for name, p in available_targets().items()}
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
    assert junit.count("<testsuite ") == len(profiles) and "<skipped " in junit
    assert "summary" in res.stdout

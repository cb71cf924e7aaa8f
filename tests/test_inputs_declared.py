"""Inputs as real models have them (issue 9): a recurrent state whose batch axis is 1 fed back from an output, a
scalar int64 sample rate declared as a constant; validation that names the input and axis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinymodels import make_stateful_onnx

pytest.importorskip("onnxruntime")

STATE = "state=2x?x8,batch_axis=1,state=stateN"
SR = "sr=:int64,value=16000"


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    root = tmp_path_factory.mktemp("vad")
    model = make_stateful_onnx(root / "vad.onnx")
    t = np.arange(1200)[:, None] / 50.0  # a smooth multi-band signal, frame after frame (order matters for state)
    x = (np.sin(t * (1 + np.arange(16)[None, :] / 4)) * (0.5 + 0.5 * np.sin(t / 7))).astype(np.float32)
    np.savez(root / "frames.npz", x=x)
    return root, model, root / "frames.npz"


def test_stateful_model_builds_and_the_state_follows_the_model(vad, cli):
    root, model, frames = vad
    out = root / "dist"
    res = cli("build", model, "-c", frames, "-t", "android-ort-fp32", "-t", "android-ort-int8", "-t",
              "intel-openvino-fp32", "--input", STATE, "--input", SR, "--output", "output=probabilities",
              "--output", "stateN=state", "--out", out)
    assert res.exit_code == 0, res.stdout + res.stderr
    manifest = json.loads((out / "vad" / "android-ort-int8" / "manifest.json").read_text())
    ins = {t["name"]: t for t in manifest["artifact"]["inputs"]}
    assert ins["state"]["batch_axis"] == 1 and ins["state"]["state_from"] == "stateN"
    assert ins["sr"]["batch_axis"] is None and ins["sr"]["value"] == 16000
    assert manifest["kinds"]["stateN"]["kind"] == "state"
    # golden state inputs are the model's own trajectory: state fed to sample i = stateN of sample i-1
    h_in = np.load(out / "vad" / "holdout" / "inputs.npz")
    h_out = np.load(out / "vad" / "holdout" / "outputs.npz")
    state_out = h_out["stateN"][:, :, 0, :]  # (N, 2, 1, 8) per sample → drop the batch axis (1 of the model)
    assert h_in["state"].shape == (h_out["stateN"].shape[0], 2, 8)
    np.testing.assert_allclose(h_in["state"][1:], state_out[:-1], rtol=0, atol=1e-6)
    assert np.abs(h_in["state"]).max() > 0.1  # real states, not the zeros it started from
    assert (h_in["sr"] == 16000).all() and h_in["sr"].dtype == np.int64
    # the bundle's own runner (numpy + runtime only) feeds the same way and agrees
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(out / "vad" / "android-ort-int8" / "run_bundle.py")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["passed"] is True


def test_undeclared_inputs_are_named(vad, cli):
    root, model, frames = vad
    res = cli("build", model, "-c", frames, "-t", "android-ort-fp32", "--out", root / "d2")
    assert res.exit_code == 2
    assert "but the model's inputs are ['x', 'state', 'sr']" in res.stderr
    assert "--input NAME=:DTYPE,value=NUMBER" in res.stderr


@pytest.mark.parametrize("spec,message", [
    ("state=2x?x8,batch_axis=2", "--input state: axis 2 has size 8 in 2x?x8, so it cannot hold samples"),
    ("state=2x?x8,batch_axis=5", "--input state: batch_axis 5 is outside its rank-3 shape"),
    ("state=2x?,batch_axis=1", "--input state=2x? has rank 2, the model expects 2x?x8 (rank 3)"),
    ("hidden=,value=1", "--input names ['hidden'] are not inputs of"),
    ("state=2x?x8,batch_axis=1,state=nope", "--input state: state=nope is not an output of vad"),
])
def test_bad_declarations_name_the_input_and_axis(vad, cli, spec, message):
    root, model, frames = vad
    res = cli("build", model, "-c", frames, "-t", "android-ort-fp32", "--input", spec, "--input", SR,
              "--out", root / "d3")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_scalar_calibration_array_is_a_clean_error(vad, cli, tmp_path):
    root, model, _ = vad
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 16), np.float32), state=np.zeros((10, 2, 8), np.float32),
             sr=np.array(16000))
    res = cli("build", model, "-c", tmp_path / "c.npz", "-t", "android-ort-fp32", "--input",
              "state=2x?x8,batch_axis=1", "--input", "sr=:int64,batch_axis=none", "--out", tmp_path / "d")
    assert res.exit_code == 2
    assert "array 'sr' in" in res.stderr and "is a scalar" in res.stderr and "value=16000" in res.stderr


def test_model_config_file(vad, cli, tmp_path):
    root, model, frames = vad
    cfg = tmp_path / "vad.toml"
    cfg.write_text('[inputs.state]\nshape = "2x?x8"\nbatch_axis = 1\nstate = "stateN"\n'
                   '[inputs.sr]\ndtype = "int64"\nvalue = 16000\n[outputs]\noutput = "probabilities"\n')
    res = cli("build", model, "-c", frames, "-t", "android-ort-fp32", "--model-config", cfg, "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "d" / "vad" / "android-ort-fp32" / "report.json").read_text())
    assert rep["parity"]["kinds"]["output"] == {"kind": "probabilities", "how": "declared on the command line"}


def test_control_flow_model_one_target_errors_the_others_build(vad, cli, tmp_path):
    """An If in the model (Silero-style head per sample rate): inspect counts the ops inside it; OpenVINO INT8
    cannot calibrate the branch no sample takes — that target is an ERROR with the reason, the others pass."""
    from tinymodels import make_stateful_onnx

    pytest.importorskip("openvino")
    root, _, frames = vad
    model = make_stateful_onnx(tmp_path / "vadif.onnx", control_flow=True)
    res = cli("inspect", model)
    assert res.exit_code == 0 and "If×1" in res.stdout and "MatMul×6" in res.stdout  # 4 outside + 1 per branch
    res = cli("build", model, "-c", frames, "-t", "android-ort-int8", "-t", "intel-openvino-fp32", "-t",
              "intel-openvino-int8", "--input", STATE, "--input", SR, "--output", "output=probabilities",
              "--output", "stateN=state", "--out", tmp_path / "dist", "--junit", tmp_path / "j.xml")
    assert res.exit_code == 2, res.stdout + res.stderr
    report = json.loads((tmp_path / "dist" / "vadif" / "build-report.json").read_text())
    by = {t["target"]: t for t in report["targets"]}
    assert by["android-ort-int8"]["status"] == "passed" and by["intel-openvino-fp32"]["status"] == "passed"
    err = by["intel-openvino-int8"]
    assert err["status"] == "error" and err["stage"] == "conversion"
    assert "no calibration sample takes one of the branches" in err["reason"] and "android-ort-int8" in err["hint"]
    assert "must not be empty" in err["details"]  # NNCF's own words, kept in full
    assert "error: intel-openvino-int8: nncf.quantize cannot calibrate" in res.stderr
    assert "<error " in (tmp_path / "j.xml").read_text()

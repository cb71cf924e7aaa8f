"""Every user error: exit code 2, one line naming the fault, a hint, no traceback, and no bundle left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import make_tiny_onnx

pytest.importorskip("onnx")


def _no_bundle(out: Path) -> None:
    if out.exists():
        leftovers = [p for p in out.rglob("*") if p.name in ("manifest.json",) or p.name.startswith(".staging")]
        assert not leftovers, leftovers


def _error(res, *fragments: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error:"), res.stderr
    for f in fragments:
        assert f in res.stderr, (f, res.stderr)
    assert any(line.startswith("hint:") for line in lines), res.stderr


def test_missing_model_file(tmp_path, cli):
    res = cli("build", tmp_path / "nope.onnx", "-t", "android-ort-fp32", "--out", tmp_path / "d")
    _error(res, "nope.onnx")
    _no_bundle(tmp_path / "d")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_onnx(tmp_path, cli, damage):
    good = make_tiny_onnx(tmp_path / "good.onnx").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"\x00not an onnx model" * 10)
    res = cli("build", bad, "-t", "android-ort-fp32", "--out", tmp_path / "d")
    _error(res, "bad.onnx")
    assert "ONNX" in res.stderr
    _no_bundle(tmp_path / "d")


@pytest.mark.parametrize("spec,fragment", [
    ("input=1x3x32x32", "conflicts with the model's shape"),
    ("image=1x1x32x32", "are not inputs of"),
    ("input=1x1x32", "has rank 3"),
    ("input:1x1", "cannot parse --input"),
])
def test_wrong_input_spec(tiny_onnx, tmp_path, cli, spec, fragment):
    res = cli("build", tiny_onnx, "-t", "android-ort-fp32", "--input", spec, "--out", tmp_path / "d")
    _error(res, fragment)
    _no_bundle(tmp_path / "d")


def test_torch_factory_needs_input_shapes(tmp_path, cli):
    pytest.importorskip("torch")
    res = cli("build", "examples/digits.py:make_cnn", "-t", "android-ort-fp32", "--out", tmp_path / "d")
    _error(res, "needs its input shapes", "--input")


def test_code_carrying_model_needs_trust(tmp_path, cli):
    pytest.importorskip("torch")
    f = tmp_path / "model.pt2"
    f.write_bytes(b"PK")
    res = cli("build", f, "-t", "android-ort-fp32", "--input", "x=1x3", "--out", tmp_path / "d")
    _error(res, "carry code", "--trust-model-code")


def test_unknown_target_with_suggestion(tiny_onnx, tmp_path, cli):
    res = cli("build", tiny_onnx, "-t", "android-ort-in8", "--out", tmp_path / "d")
    _error(res, "unknown target 'android-ort-in8'", "did you mean 'android-ort-int8'")
    assert not (tmp_path / "d").exists()


def test_unsupported_precision(tiny_onnx, tmp_path, cli):
    prof = tmp_path / "p.toml"
    prof.write_text('backend = "ort_mobile"\nprecision = "int4"\n')
    res = cli("build", tiny_onnx, "-t", prof, "--out", tmp_path / "d")
    _error(res, "does not support precision 'int4'", "fp16, fp32, int8")


def test_empty_calibration_data(tiny_onnx, tmp_path, cli):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 32, 32), np.float32))
    res = cli("build", tiny_onnx, "-t", "android-ort-int8", "-c", tmp_path / "empty.npy", "--out", tmp_path / "d")
    _error(res, "is empty")
    _no_bundle(tmp_path / "d")


def test_mismatched_calibration_data(tiny_onnx, tmp_path, cli):
    np.savez(tmp_path / "c.npz", input=np.zeros((10, 3, 32, 32), np.float32))
    res = cli("build", tiny_onnx, "-t", "android-ort-int8", "-c", tmp_path / "c.npz", "--out", tmp_path / "d")
    _error(res, "axis 1 of 1x1x32x32 is 1 in the model, 3 in the data", "1x1x32x32")
    np.savez(tmp_path / "k.npz", pixels=np.zeros((10, 1, 32, 32), np.float32))
    res = cli("build", tiny_onnx, "-t", "android-ort-int8", "-c", tmp_path / "k.npz", "--out", tmp_path / "d")
    _error(res, "['pixels']")
    _no_bundle(tmp_path / "d")


def test_unknown_calibration_recipe(tiny_onnx, tmp_path, cli):
    res = cli("build", tiny_onnx, "-t", "android-ort-int8", "-c", "digts", "--out", tmp_path / "d")
    _error(res, "calibration recipe not found: digts", "did you mean 'digits'")


def test_unwritable_output_folder(tiny_onnx, tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = cli("build", tiny_onnx, "-t", "android-ort-fp32", "--out", blocker / "dist")
    _error(res, "cannot write to output folder", "--out")


def test_verify_and_check_on_non_bundle(tmp_path, cli):
    _error(cli("verify", tmp_path / "missing"), "bundle folder not found")
    (tmp_path / "empty").mkdir()
    _error(cli("check", tmp_path / "empty"), "has no manifest.json")


def test_debug_env_shows_traceback(tmp_path, monkeypatch):
    from edgepack.cli import app
    from edgepack.errors import InputError
    from typer.testing import CliRunner

    monkeypatch.setenv("EDGEPACK_DEBUG", "1")
    res = CliRunner().invoke(app, ["build", str(tmp_path / "nope.onnx"), "-t", "android-ort-fp32"])
    assert res.exit_code == InputError.exit_code == 2  # the same exit code as without EDGEPACK_DEBUG
    assert res.stderr.startswith("error: ") and "Traceback (most recent call last)" in res.stderr


def test_inspect_targets_doctor(tiny_onnx, cli):
    res = cli("inspect", tiny_onnx)
    assert res.exit_code == 0
    assert "input" in res.stdout and "Conv×2" in res.stdout and "android-ort-int8" in res.stdout
    res = cli("targets")
    assert res.exit_code == 0 and "ort_mobile" in res.stdout
    res = cli("doctor")
    assert res.exit_code == 0 and "ort_mobile" in res.stdout and "ready" in res.stdout

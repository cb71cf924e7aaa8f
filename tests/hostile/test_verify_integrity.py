"""What `verify` protects against on the host and on the device path: a verdict edited on its own contradicts the
check rows the manifest records; a Core ML weight blob naming a file out of its package is refused by `verify` with
the rule `check` applies; `device run` verifies every bundle before anything is pushed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import corpus as hostile
import fakes  # noqa: F401 - registers the fake source and backends

from edgepack import bundle as bundles
from edgepack import pipeline, trust


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(a passed bundle, a failed bundle) of the fake backends."""
    from fakes.source import make

    d = tmp_path_factory.mktemp("verify")
    model = make(d / "linear.fakemodel")
    np.savez(d / "cal.npz", input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
    (d / "ok.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    (d / "zeros.toml").write_text('backend = "fake_noisy"\nprecision = "fp32"\n[options]\nmode = "zeros"\n')
    ok, bad = pipeline.build(str(model), [str(d / "ok.toml"), str(d / "zeros.toml")], out=d / "dist",
                             calibration=str(d / "cal.npz"), judge="point")  # 16 samples prove no rate budget
    assert ok.passed and not bad.passed
    return Path(ok.bundle), Path(bad.bundle)


def test_the_manifest_records_the_check_rows_its_verdict_comes_from(built):
    ok, bad = built
    for b, verdict in ((ok, "passed"), (bad, "failed")):
        m = bundles.read_manifest(b)
        report = json.loads((b / "report.json").read_text())
        assert m.verdict == verdict and m.checks
        assert [(c.name, c.passed) for c in m.checks] == [(c["name"], c["passed"]) for c in report["checks"]]


def test_a_verdict_edited_to_passed_is_refused_by_verify_and_check(built, tmp_path, cli):
    _, bad = built
    b = tmp_path / "b"
    shutil.copytree(bad, b)
    hostile.resign(b, lambda m: m.update(verdict="passed"))  # every file re-listed; the rows left as recorded
    res = cli("verify", b)
    assert res.exit_code == 2 and "verdict contradicts the checks" in res.stderr and "hint:" in res.stderr
    assert cli("verify", b, "--allow-failed").exit_code == 2
    assert cli("check", b).exit_code == 2
    # a verdict edited to failed contradicts passing rows just the same
    shutil.rmtree(b)
    shutil.copytree(built[0], b)
    hostile.resign(b, lambda m: m.update(verdict="failed"))
    assert "rows passed" in " ".join(bundles.verify(b, allow_failed=True).problems)


def _ld(num: int, payload: bytes | str) -> bytes:
    return hostile._ld(num, payload)


def mil_spec(file_name: str) -> bytes:
    """A Model whose ML program has one const op reading a weight blob from ``file_name`` (wire format by hand)."""
    blob = _ld(1, file_name) + hostile._varint(2 << 3) + hostile._varint(64)
    value = _ld(5, blob)
    op = _ld(1, "const") + _ld(5, _ld(1, "val") + _ld(2, value))
    block = _ld(3, op)
    function = _ld(3, _ld(1, "CoreML5") + _ld(2, block))
    program = hostile._varint(1 << 3) + hostile._varint(1) + _ld(2, _ld(1, "main") + _ld(2, function))
    return hostile._varint(1 << 3) + hostile._varint(7) + _ld(502, program)


def coreml_package(root: Path, file_name: str) -> Path:
    pkg = root / "m.mlpackage"
    model_dir = pkg / "Data" / "com.apple.CoreML"
    (model_dir / "weights").mkdir(parents=True)
    (model_dir / "model.mlmodel").write_bytes(mil_spec(file_name))
    (model_dir / "weights" / "weight.bin").write_bytes(b"\0" * 128)
    (pkg / "Manifest.json").write_text(json.dumps({"fileFormatVersion": "1.0.0", "rootModelIdentifier": "A",
                                                   "itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel",
                                                                             "name": "model.mlmodel"}}}))
    return pkg


def test_the_wire_reader_finds_the_blob_names_coremltools_writes():
    pb2 = pytest.importorskip("edgepack.backends.coreml.mil.proto")
    try:
        model_pb2, mil_pb2 = pb2.modules()
    except Exception as e:  # noqa: BLE001 - coremltools missing: MissingDependency
        pytest.skip(f"coremltools protobuf definitions unavailable: {e}")
    m = model_pb2.Model()
    m.ParseFromString(mil_spec("@model_path/weights/weight.bin"))
    v = m.mlProgram.functions["main"].block_specializations["CoreML5"].operations[0].attributes["val"]
    assert v.blobFileValue.fileName == "@model_path/weights/weight.bin" and v.blobFileValue.offset == 64
    # and a spec serialized by protobuf itself, with a nested block and a pipeline around it
    op = m.mlProgram.functions["main"].block_specializations["CoreML5"].operations[0]
    inner = op.blocks.add().operations.add()
    inner.type = "const"
    inner.attributes["val"].blobFileValue.fileName = "@model_path/../nested.bin"
    arg = op.inputs["x"].arguments.add()
    arg.value.blobFileValue.fileName = "/abs/input.bin"
    pipe = model_pb2.Model()
    pipe.pipeline.models.add().CopyFrom(m)
    names = trust.coreml_blob_files(pipe.SerializeToString())
    assert sorted(names) == ["/abs/input.bin", "@model_path/../nested.bin", "@model_path/weights/weight.bin"]


@pytest.mark.parametrize("name,refused", [("@model_path/weights/weight.bin", False),
                                          ("@model_path/../../../../../victim/keep.txt", True),
                                          ("/etc/passwd", True), ("@model_path/weights/../../../x", True)])
def test_verify_refuses_a_weight_blob_out_of_its_package(built, tmp_path, cli, name, refused):
    b = tmp_path / "b"
    shutil.copytree(built[0], b)
    coreml_package(b, name)
    hostile.resign(b)
    problems = bundles.verify(b).problems
    assert any("names the weight file" in p for p in problems) == refused, problems
    assert cli("verify", b).exit_code == (2 if refused else 0)


def test_device_run_verifies_before_pushing(built, tmp_path, cli):
    b = tmp_path / "bundles" / "ok"
    shutil.copytree(built[0], b)
    outside = tmp_path / "evil_device.py"
    canary = tmp_path / "CANARY"
    outside.write_text(f"open({str(canary)!r}, 'w')\ndef load(*a):\n    raise SystemExit(0)\n")
    (b / "runner" / "device.py").unlink()
    os.symlink(outside, b / "runner" / "device.py")
    hostile.resign(b)
    (tmp_path / "devices.toml").write_text('[[device]]\nname = "here"\nkind = "local"\n')
    res = cli("device", "run", b, "--devices", tmp_path / "devices.toml", "--out", tmp_path / "runs")
    assert res.exit_code == 2 and "symlink in the bundle: runner/device.py" in res.stderr, res.stderr
    assert not canary.exists() and not (tmp_path / "runs").exists()
    # a bundle whose verdict was edited is refused the same way
    shutil.rmtree(b)
    shutil.copytree(built[1], b)
    hostile.resign(b, lambda m: m.update(verdict="passed"))
    res = cli("device", "run", b, "--devices", tmp_path / "devices.toml", "--out", tmp_path / "runs")
    assert res.exit_code == 2 and "verdict contradicts the checks" in res.stderr

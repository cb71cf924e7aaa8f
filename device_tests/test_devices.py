"""Nightly device run, against the local host as a device: bundles are checked by their own runner with
torch/TensorFlow/edgepack unimportable. Set EDGEPACK_DEVICE_BUNDLES=dist to run on already-built bundles."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import Device, find_bundles, load_inventory, run_all, run_on_device

from edgepack.bundle import read_manifest

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> list[Path]:
    given = os.environ.get("EDGEPACK_DEVICE_BUNDLES")
    if given:
        return find_bundles([Path(given)])
    pytest.importorskip("onnxruntime")
    from tinymodels import make_tiny_onnx
    from typer.testing import CliRunner

    from edgepack.backends import registry
    from edgepack.cli import app
    from edgepack.config import available_targets, load_profile

    root = tmp_path_factory.mktemp("nightly")
    model = make_tiny_onnx(root / "tiny.onnx", width=16)
    targets = []
    for name in available_targets():
        p = load_profile(name)
        backend = registry.resolve(p).backend
        # fp32 + int8 of every installed backend that takes ONNX (ort_mobile, openvino): one bundle per runtime path
        if "onnx" in backend.accepts and not backend.missing() and p.precision in ("fp32", "int8") \
                and not p.options.get("accuracy_control") and not name.startswith("linux-"):
            targets += ["-t", name]
    res = CliRunner().invoke(app, ["build", str(model), "--out", str(root / "dist"), "-c", "digits", *targets])
    assert res.exit_code == 0, res.stdout + res.stderr
    return find_bundles([root / "dist"])


def test_inventory_parses():
    devices = load_inventory(Path(__file__).with_name("inventory.toml"))
    assert devices and devices[0].kind == "local"


def test_local_host_runs_every_bundle(bundles):
    devices = [d for d in load_inventory(Path(__file__).with_name("inventory.toml")) if d.kind == "local"]
    results = run_all(devices, bundles, repeats=5)
    assert len(results) == len(bundles) >= 3
    assert {read_manifest(b).artifact.backend for b in bundles} >= {"ort_mobile"}
    ran = [r for r in results if r["backend"] != "tensorrt"]
    for r in results:
        if r["backend"] == "tensorrt":  # the engine is built on a Jetson: here it is SKIPPED, never PASS
            assert r["status"] == "skipped" and not r["passed"] and "tensorrt" in r["error"], json.dumps(r, indent=2)
            assert r["integrity"]["passed"]
            continue
        assert r["passed"], json.dumps(r, indent=2)
        assert r["integrity"]["passed"] and r["parity"]["checks"] and r["latency_ms"]["p50"] > 0
        assert r["parity"]["samples"] == 400
    assert len(ran) >= 3


def test_device_run_catches_a_tampered_bundle(bundles, tmp_path):
    b = tmp_path / bundles[0].name
    shutil.copytree(bundles[0], b)
    golden = dict(np.load(b / "golden" / "outputs.npz"))
    name = next(iter(golden))
    golden[name] = golden[name] * -1.0
    from edgepack.feeds import save_npz

    save_npz(b / "golden" / "outputs.npz", golden)
    r = run_on_device(Device(name="local"), b, repeats=2)
    assert not r["passed"] and r["exit_code"] == 1
    assert not r["integrity"]["passed"]  # the sha256 no longer matches the manifest
    assert any(not c["passed"] for c in r["parity"]["checks"])


def test_runtime_missing_on_device_is_skipped_not_passed(bundles):
    """A device without the bundle's runtime reports 'skipped' (exit 2), never a pass."""
    ort_bundle = next(b for b in bundles if read_manifest(b).artifact.backend == "ort_mobile")
    r = run_on_device(Device(name="local", unavailable=["onnxruntime"]), ort_bundle, repeats=1)
    assert r["status"] == "skipped" and r["exit_code"] == 2 and not r["passed"]
    assert "onnxruntime" in r["error"]


def test_command_transport(bundles, tmp_path):
    """The generic transport (as used for ssh devices), driven with local commands."""
    dev = Device(name="cmd", kind="command", push="mkdir -p {remote} && cp -r {bundle}/. {remote}",
                 run=f"{sys.executable} {{remote}}/run_bundle.py", remote=str(tmp_path / "{name}"))
    r = run_on_device(dev, bundles[0], repeats=2)
    assert r["passed"], r

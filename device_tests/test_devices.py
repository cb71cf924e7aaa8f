"""Nightly device run (edgepack.devices, the one harness), against the local host as a device: bundles are checked
by their own runner with torch/TensorFlow/edgepack unimportable. Set EDGEPACK_DEVICE_BUNDLES=dist to run on
already-built bundles."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from devicekit import tamper

from edgepack.bundle import read_manifest
from edgepack.devices.inventory import Device, load_inventory
from edgepack.devices.runs import find_bundles, run_all, run_one
from edgepack.devices.verdicts import FAIL, PASS, SKIPPED

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
    record = run_all(devices, bundles, repeats=5, warmup=1, deployment=False)
    results = record["results"]
    assert len(results) == len(bundles) >= 3
    assert {read_manifest(b).artifact.backend for b in bundles} >= {"ort_mobile"}
    ran = [r for r in results if r["backend"] != "tensorrt"]
    for r in results:
        if r["backend"] == "tensorrt":  # the engine is built on a Jetson: here it is SKIPPED, never PASS
            assert r["status"] == SKIPPED and "tensorrt" in r["reason"], json.dumps(r, indent=2)
            continue
        assert r["status"] == PASS, json.dumps(r, indent=2)
        assert r["parity"] and r["latency"]["p50_ms"] > 0 and len(r["latency"]["samples_ms"]) == 5
        assert r["host"]["where"] == "host" and r["host"]["parity"]  # the build host's numbers next to the device's
    assert len(ran) >= 3


def test_device_run_catches_a_tampered_bundle(bundles, tmp_path):
    b = tamper(bundles[0], tmp_path / bundles[0].name)
    r = run_one(Device(name="local"), b, "parity", repeats=2, warmup=0)
    assert r.status == FAIL and r.attempts == [FAIL]
    # sha256 mismatch: the runner loads nothing from a bundle that fails it (no model, no golden file is opened)
    assert "integrity check failed" in r.reason and "nothing was loaded" in r.reason, r.reason


def test_runtime_missing_on_device_is_skipped_not_passed(bundles):
    """A device without the bundle's runtime reports SKIPPED (exit 2), never a pass."""
    ort_bundle = next(b for b in bundles if read_manifest(b).artifact.backend == "ort_mobile")
    r = run_one(Device(name="local", unavailable=("onnxruntime",)), ort_bundle, "parity", repeats=1, warmup=0)
    assert r.status == SKIPPED and not r.ok and "onnxruntime" in r.reason


def test_command_transport(bundles, tmp_path):
    """The generic transport (two shell templates), driven with local commands."""
    dev = Device(name="cmd", kind="command", push="mkdir -p {remote} && cp -r {bundle}/. {remote}",
                 run=f"{sys.executable} {{remote}}/run_bundle.py", remote=str(tmp_path / "{name}"))
    r = run_one(dev, bundles[0], "parity", repeats=2, warmup=0)
    assert r.status == PASS, r

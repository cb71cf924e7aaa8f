"""The device harness for real: the ORT, TFLite and OpenVINO bundles on an emulated ARM64 CPU (qemu-user), and over
a real OpenSSH server on 127.0.0.1 whose Python is that emulated ARM64 one. Failure modes end FAIL or INFRA, never
PASS: a tampered bundle, a connection dropped mid-run, a hanging runner, a killed runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from devicekit import tamper
from sshd import DISCONNECT, FLAKY, HANG, KILLED, script, start

from edgepack.devices import history, runs
from edgepack.devices.inventory import Device
from edgepack.devices.verdicts import FAIL, FLAKY as S_FLAKY, INFRA, PASS

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    import shutil

    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    server = start(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def ssh_device(server, python: str, **kw) -> Device:
    return Device(name=kw.pop("name", "ssh-loopback"), kind="ssh", host="127.0.0.1", port=server.port,
                  user=server.user, identity=str(server.identity), known_hosts=str(server.known_hosts),
                  python=python, **kw)


def test_arm64_emu_runs_every_runtime(tiny_bundles, arm64_python, tmp_path):
    dev = Device(name="arm64-emu", kind="arm64-emu", timeout_s=900)
    record = runs.run_all([dev], list(tiny_bundles.values()), repeats=3, warmup=1)
    by = {(r["backend"], r["config"]): r for r in record["results"]}
    assert set(by) == {("ort_mobile", "parity"), ("tflite", "parity"), ("openvino", "parity"),
                       ("openvino", "deployment")}, by.keys()
    for key in (("ort_mobile", "parity"), ("tflite", "parity"), ("openvino", "parity")):
        r = by[key]
        assert r["status"] == PASS, json.dumps(r, indent=2)
        assert "aarch64" in r["machine"] and r["latency_where"] == "emulated"
        assert len(r["latency"]["samples_ms"]) == 3 and r["parity"]
    assert by[("openvino", "parity")]["runtime"]["inference_precision"] == "f32"
    dep = by[("openvino", "deployment")]
    # OpenVINO's ARM CPU plugin picks f16 on a CPU with FP16 arithmetic (cortex-a76): the deployment configuration
    # differs from the parity one, and the harness says so whatever the verdict
    assert dep["runtime"]["inference_precision"] == "f16", dep["runtime"]
    assert dep["status"] in (PASS, FAIL)
    assert dep["precision_effect"]["deployment_precision"] == "f16"  # reported whether it passes or not
    assert dep["precision_effect"]["parity_precision"] == "f32" and "top1_agreement_change" in dep["precision_effect"]
    if dep["status"] == FAIL:
        assert dep["cause"] == "deployment-precision" and dep["diagnosis"].startswith("deployment precision:"), dep
    runs.write_junit(record, tmp_path / "run.junit.xml")
    history.append(tmp_path / "h.sqlite", record)
    assert len(history.series(tmp_path / "h.sqlite")) == 4


def test_ssh_loopback_runs_on_the_arm64_python(sshd, tiny_bundles, arm64_python, tmp_path):
    dev = ssh_device(sshd, str(arm64_python), timeout_s=900, latency_emulated=True)
    bundles = [tiny_bundles["ort"], tiny_bundles["tflite"], tiny_bundles["openvino"]]
    record = runs.run_all([dev], bundles, repeats=3, warmup=1, deployment=False)  # (deployment: the arm64 test)
    assert len(record["results"]) == 3
    for r in record["results"]:
        assert r["status"] == PASS and "aarch64" in r["machine"], json.dumps(r, indent=2)
        assert r["kind"] == "ssh" and r["latency_where"] == "emulated"


def test_ssh_tampered_bundle_fails(sshd, tiny_bundles, tmp_path):
    bad = tamper(tiny_bundles["ort"], tmp_path / "tampered")
    r = runs.run_one(ssh_device(sshd, sys.executable), bad, "parity", repeats=2, warmup=0)
    assert r.status == FAIL and r.attempts == [FAIL] and "integrity" in r.reason, r


def test_ssh_disconnect_hang_and_kill_are_infra(sshd, tiny_bundles, tmp_path):
    b = tiny_bundles["ort"]
    drop = runs.run_one(ssh_device(sshd, script(tmp_path, "drop.sh", DISCONNECT), retries=1), b, "parity",
                        repeats=2, warmup=0)
    assert drop.status == INFRA and drop.attempts == [INFRA, INFRA] and "no exit marker" in drop.reason, drop
    hanging = script(tmp_path, "hang.sh", HANG)
    hang = runs.run_one(ssh_device(sshd, hanging, timeout_s=8, retries=0), b, "parity", repeats=2, warmup=0)
    assert hang.status == INFRA and "timed out" in hang.reason, hang
    import subprocess
    import time

    time.sleep(6)  # the board's own timeout (-k 5) has killed the runner: nothing is left running there
    left = subprocess.run(["pgrep", "-f", str(hanging)], capture_output=True, text=True).stdout.split()
    assert not left, f"the hung runner outlived the run: {left}"
    killed = runs.run_one(ssh_device(sshd, script(tmp_path, "killed.sh", KILLED), retries=0), b, "parity",
                          repeats=2, warmup=0)
    assert killed.status == INFRA and "signal 9" in killed.reason, killed


def test_pass_after_a_dropped_connection_is_flaky(sshd, tiny_bundles, tmp_path):
    drop = script(tmp_path, "drop.sh", DISCONNECT)
    flaky = script(tmp_path, "flaky.sh", FLAKY.format(state=tmp_path / "state", disconnect=drop,
                                                      python=sys.executable))
    r = runs.run_one(ssh_device(sshd, flaky, retries=2), tiny_bundles["ort"], "parity", repeats=2, warmup=0)
    assert r.status == S_FLAKY and r.attempts == [INFRA, PASS], r


def test_device_run_cli_on_the_local_host(tiny_bundles, tmp_path):
    """`edgepack device run` end to end on the local host: all three runtimes PASS, a tampered bundle FAILs,
    JSON + JUnit written, the history grows, and `edgepack device report` renders it."""
    import xml.etree.ElementTree as ET

    from typer.testing import CliRunner

    from edgepack.cli import app

    bundles = tmp_path / "bundles"
    for k, b in tiny_bundles.items():
        import shutil

        shutil.copytree(b, bundles / k)
    tamper(tiny_bundles["ort"], bundles / "tampered")
    inv = tmp_path / "devices.toml"
    inv.write_text('[[device]]\nname = "local-host"\nkind = "local"\n')
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["device", "run", str(bundles), "--devices", str(inv), "--out", str(out),
                                   "--repeats", "5", "--warmup", "1"])
    assert res.exit_code == 1, res.stdout + res.stderr  # the tampered bundle
    record = json.loads(next(out.glob("*.json")).read_text())
    status = {(Path(r["bundle"]).name, r["config"]): r["status"] for r in record["results"]}
    assert status == {("ort", "parity"): PASS, ("tflite", "parity"): PASS, ("openvino", "parity"): PASS,
                      ("openvino", "deployment"): PASS, ("tampered", "parity"): FAIL}, status
    suite = ET.parse(next(out.glob("*.junit.xml"))).getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    res = CliRunner().invoke(app, ["device", "report", "--history", str(out / "history.sqlite"), "--out",
                                   str(tmp_path / "report")])
    assert res.exit_code == 0, res.stdout
    assert "| local-host | bundles/tflite | parity | PASS |" in (tmp_path / "report" / "report.md").read_text()

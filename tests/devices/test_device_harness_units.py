"""The device harness without devices: exit-code markers and verdicts, the adb transport against a loopback
stand-in (recorded benchmark outputs), regressions, JUnit, history and the report. No ML framework needed."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgepack.devices import adb, history, regressions, report, runs
from edgepack.devices.inventory import Device, InventoryError, parse_devices
from edgepack.devices.transports import MARKER, RawRun, execute, split_marker, with_marker
from edgepack.devices.verdicts import FAIL, FLAKY, INFRA, NOT_RUN, PASS, SKIPPED, combine, judge

FIXTURES = Path(__file__).with_name("fixtures")
GOOD = {"passed": True, "parity": {"samples": 40, "checks": [{"name": "c", "passed": True}], "metrics": {}},
        "latency": {"p50_ms": 1.0, "samples_ms": [1.0, 1.1]}}


def test_marker_carries_the_real_exit_code():
    r = execute(["sh", "-c", with_marker("echo hi && sh -c 'exit 3'")], 10)
    assert r.exit_code == 3 and r.stdout.strip() == "hi"
    assert split_marker("no marker here") == ("no marker here", None)
    assert split_marker(f"x\n{MARKER}=0\n") == ("x\n", 0)


def test_timeout_kills_the_process_group():
    r = execute(["sh", "-c", with_marker("sleep 30")], 0.5)
    assert r.timed_out and r.exit_code is None and r.seconds < 10
    assert judge(r)[0] == INFRA


@pytest.mark.parametrize("raw, status", [
    (RawRun(stdout=json.dumps(GOOD), exit_code=0), PASS),
    (RawRun(stdout=json.dumps({**GOOD, "passed": False}), exit_code=1), FAIL),
    (RawRun(stdout=json.dumps(GOOD), exit_code=None, transport_code=255), INFRA),  # connection lost: no marker
    (RawRun(stdout="", exit_code=137), INFRA),  # killed runner
    (RawRun(stdout=json.dumps(GOOD), exit_code=1), INFRA),  # the exit code contradicts the verdict
    (RawRun(stdout=json.dumps({**GOOD, "parity": {"checks": [], "samples": 0}}), exit_code=0), INFRA),  # ran nothing
    (RawRun(stdout=json.dumps({"passed": False, "error": "runtime unavailable: no onnxruntime"}), exit_code=2),
     SKIPPED),
    (RawRun(stdout="not json", exit_code=0), INFRA),
    (RawRun(infra="scp failed"), INFRA),
], ids=["pass", "fail", "no-marker", "killed", "contradiction", "compared-nothing", "skipped", "garbage", "push"])
def test_judge(raw, status):
    assert judge(raw)[0] == status


def test_retry_statuses():
    assert combine([INFRA, PASS]) == FLAKY and combine([PASS]) == PASS and combine([INFRA, INFRA]) == INFRA


def test_inventory_validation():
    devs = parse_devices({"device": [{"name": "a", "kind": "arm64-emu"}, {"name": "b", "kind": "ssh", "host": "h",
                                                                         "python": "python3", "backends": ["tflite"]}]})
    assert devs[0].emulated and devs[1].backends == ("tflite",)
    with pytest.raises(InventoryError, match="needs host"):
        parse_devices({"device": [{"name": "x", "kind": "ssh", "python": "p"}]})
    with pytest.raises(InventoryError, match="unknown kind"):
        parse_devices({"device": [{"name": "x", "kind": "phone"}]})
    with pytest.raises(InventoryError, match="unknown key 'hots'"):
        parse_devices({"device": [{"name": "x", "hots": "h"}]})


# ------------------------------------------------------------------ adb: recorded outputs, loopback stand-in


def test_parse_recorded_benchmark_model():
    lat = adb.parse_benchmark_model((FIXTURES / "benchmark_model_pixel.txt").read_text())
    assert lat["runs"] == 2874 and lat["mean_ms"] == pytest.approx(0.34617) and lat["p50_ms"] == pytest.approx(0.342)
    assert lat["init_ms"] == pytest.approx(18.274)
    no_pct = adb.parse_benchmark_model("INFO: count=50 first=1 curr=1 min=900 max=1500 avg=1000 std=10\n")
    assert "p50_ms" not in no_pct and no_pct["mean_ms"] == 1.0  # avg is never passed off as a median
    with pytest.raises(ValueError):
        adb.parse_benchmark_model("ERROR: could not open model\n")


def test_parse_recorded_ort_perf_test():
    lat = adb.parse_ort_perf_test((FIXTURES / "onnxruntime_perf_test_pixel.txt").read_text())
    assert lat["runs"] == 50 and lat["p50_ms"] == pytest.approx(1.011) and lat["p90_ms"] == pytest.approx(1.089)
    assert lat["mean_ms"] == pytest.approx(1.02685)
    # the wording of releases up to 2023 ("P50 Latency is … sec", "Average time cost"; as quoted in
    # onnxruntime issue 17313), figures of our own
    old = adb.parse_ort_perf_test((FIXTURES / "onnxruntime_perf_test_2023_format.txt").read_text())
    assert old["runs"] == 500 and old["p50_ms"] == pytest.approx(24.6925) and old["p90_ms"] == pytest.approx(25.9078)
    assert old["mean_ms"] == pytest.approx(24.883) and old["min_ms"] == pytest.approx(23.1654)
    with pytest.raises(ValueError):  # without -s only "Runs:" and CPU lines: no latency is guessed
        adb.parse_ort_perf_test("Avg CPU usage:12\nPeak working set size:24117248\nRuns:50\n")


FAKE_ADB = """#!{python}
# Loopback stand-in for a phone behind `adb`: the same command line as Debian's adb client, executed on this host.
import shutil, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    src, dst = args[1], args[2]
    shutil.copytree(src.rstrip("/."), dst, dirs_exist_ok=True)
    print(f"{{src}}: 1 file pushed")
    sys.exit(0)
if args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", " ".join(args[1:])]).returncode)
sys.exit(1)
"""


def _fake_bundle(folder: Path, backend: str, target: str, model: str) -> Path:
    folder.mkdir(parents=True)
    (folder / model).parent.mkdir(parents=True, exist_ok=True)
    (folder / model).write_bytes(b"\0" * 16)
    (folder / "run_bundle.py").write_text("print('runner')\n")
    (folder / "manifest.json").write_text(json.dumps({"target": {"name": target}, "files": [{"path": model}],
                                                      "artifact": {"backend": backend, "runtime": {"model": model}}}))
    return folder


def _exe(path: Path, body: str) -> str:
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def phone(tmp_path) -> Device:
    fake = _exe(tmp_path / "adb", FAKE_ADB.format(python=sys.executable))
    bench = _exe(tmp_path / "benchmark_model", f"#!/bin/sh\ncat {FIXTURES / 'benchmark_model_pixel.txt'}\n")
    perf = _exe(tmp_path / "perf", f"#!/bin/sh\ncat {FIXTURES / 'onnxruntime_perf_test_pixel.txt'}\n")
    return Device(name="pixel-loopback", kind="adb", serial="loopback", adb=fake, benchmark_model=bench,
                  ort_perf_test=perf, remote=str(tmp_path / "phone" / "{name}"), retries=0)


def test_adb_latency_only_is_never_a_pass(phone, tmp_path):
    ort = _fake_bundle(tmp_path / "b-ort", "ort_mobile", "android-ort-int8", "model.ort")
    r = runs.run_one(phone, ort, "parity", repeats=50, warmup=5)
    assert r.status == NOT_RUN and not r.ok and "parity not run on this device" in r.reason
    assert r.latency["p50_ms"] == pytest.approx(1.011) and r.latency["tool"] == "onnxruntime_perf_test"
    tfl = _fake_bundle(tmp_path / "b-tfl", "tflite", "android-tflite-int8", "model.tflite")
    r = runs.run_one(phone, tfl, "parity", repeats=50, warmup=5)
    assert r.status == NOT_RUN and r.latency["p50_ms"] == pytest.approx(0.342)
    ov = _fake_bundle(tmp_path / "b-ov", "openvino", "intel-openvino-int8", "ir/model.xml")
    assert runs.run_one(phone, ov, "parity", repeats=5, warmup=1).status == NOT_RUN
    assert not list((tmp_path / "phone").iterdir())  # cleaned up on the phone


def test_adb_missing_benchmark_binary_is_infra(phone, tmp_path):
    from dataclasses import replace

    ort = _fake_bundle(tmp_path / "b-ort", "ort_mobile", "android-ort-int8", "model.ort")
    r = runs.run_one(replace(phone, ort_perf_test="/nonexistent/onnxruntime_perf_test"), ort, "parity",
                     repeats=5, warmup=1)
    assert r.status == INFRA and "exited 127" in r.reason


def test_adb_with_a_python_on_the_phone_runs_the_bundle_runner(phone, tmp_path):
    from dataclasses import replace

    b = _fake_bundle(tmp_path / "b", "ort_mobile", "android-ort-int8", "model.ort")
    (b / "run_bundle.py").write_text(f"import json; print(json.dumps({GOOD!r}))\n")
    r = runs.run_one(replace(phone, python=sys.executable), b, "parity", repeats=2, warmup=0)
    assert r.status == PASS


# ------------------------------------------------------------------ history, regressions, report, JUnit


def _result(device: str, target: str, status: str, samples: list[float], agreement: float, n: int = 400,
            where: str = "device") -> dict:
    from edgepack.core.stats import wilson

    lo, hi = wilson(round(agreement * n), n)
    return {"device": device, "kind": "ssh", "device_class": "jetson", "bundle": f"/b/{target}", "target": target,
            "backend": "ort_mobile", "config": "parity", "status": status, "reason": "", "attempts": [status],
            "seconds": 1.0, "latency_where": where, "diagnosis": "",
            "latency": {"p50_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90)),
                        "samples_ms": samples},
            "parity": {"scores": {"top1_agreement": agreement, "top1_agreement_ci_low": lo,
                                  "top1_agreement_ci_high": hi, "sample_cosine_p1": 0.999}},
            "runtime": {"runtime": "onnxruntime 1.31.1"}, "machine": "Linux aarch64"}


def synthetic_history(path: Path, *, slow_last: bool, drop_last: bool, runs_n: int = 7) -> None:
    rng = np.random.default_rng(0)
    for i in range(runs_n):
        last = i == runs_n - 1
        base = 2.0 * (1.3 if (last and slow_last) else 1.0)
        samples = list(np.round(base + 0.05 * rng.standard_normal(20), 4))
        agreement = 0.90 if (last and drop_last) else 0.995
        rs = [_result("jetson", "android-ort-int8", PASS, samples, agreement),
              _result("arm64-emu", "android-ort-int8", PASS, list(np.round(40 + rng.standard_normal(20), 3)), 0.995,
                      where="emulated")]
        history.append(path, {"id": f"run{i}", "started": f"2026-11-{i + 1:02d}T02:00:00+00:00", "results": rs})


def test_mann_whitney_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.1, 0.1, 30).round(2), rng.normal(1.0, 0.1, 80).round(2)
    _, p = regressions.mann_whitney_greater(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True).pvalue
    assert p == pytest.approx(ref, rel=1e-6)


def test_regressions_against_a_baseline_window(tmp_path):
    synthetic_history(tmp_path / "quiet.sqlite", slow_last=False, drop_last=False)
    assert regressions.check_all(history.series(tmp_path / "quiet.sqlite")) == []
    synthetic_history(tmp_path / "bad.sqlite", slow_last=True, drop_last=True)
    flags = regressions.check_all(history.series(tmp_path / "bad.sqlite"))
    assert {(f.device, f.what) for f in flags} == {("jetson", "latency"), ("jetson", "parity")}, flags


def test_report_markdown_html_and_junit(tmp_path):
    synthetic_history(tmp_path / "h.sqlite", slow_last=True, drop_last=False)
    data = history.series(tmp_path / "h.sqlite")
    flags = regressions.check_all(data)
    md = report.markdown(data, flags)
    assert "| jetson | b/android-ort-int8 | parity | PASS |" in md and "emulated" in md and "latency" in md
    page = report.html_page(data, flags)
    assert page.count("<svg") == 3 and "<script" not in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").replace('http-equiv="Content-Security-Policy"', "")
    assert "script-src 'none'" in page
    record = {"id": "r1", "started": "2026-12-01T00:00:00+00:00",
              "results": [_result("d", "t1", PASS, [1.0], 1.0), {**_result("d", "t2", FAIL, [1.0], 0.5), "reason": "x"},
                          {**_result("d", "t3", INFRA, [1.0], 0.0), "reason": "no exit marker"},
                          {**_result("d", "t4", NOT_RUN, [1.0], 0.0), "reason": "parity not run on this device"}]}
    runs.write_junit(record, tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    assert runs.exit_code(record) == 1


def test_device_cli_report(tmp_path):
    from typer.testing import CliRunner

    from edgepack.cli import app

    synthetic_history(tmp_path / "h.sqlite", slow_last=True, drop_last=False)
    res = CliRunner().invoke(app, ["device", "report", "--history", str(tmp_path / "h.sqlite"), "--out",
                                   str(tmp_path / "rep")])
    assert res.exit_code == 1 and "regression latency jetson" in res.stdout, res.stdout
    assert (tmp_path / "rep" / "report.html").is_file()
    res = CliRunner().invoke(app, ["device", "run", str(tmp_path), "--devices", str(tmp_path / "none.toml")])
    assert res.exit_code == 2 and "device inventory not found" in res.stderr and "hint:" in res.stderr


def test_device_package_imports_no_framework():
    import subprocess

    code = ("import sys, edgepack.cli, edgepack.devices.runs, edgepack.devices.report, edgepack.devices.history; "
            "bad = {'torch', 'tensorflow', 'onnxruntime', 'openvino', 'onnx', 'numpy'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}).stdout
    assert out.strip() in ("[]", "['numpy']"), out


def test_emulated_kinds_label_latency_and_pick_their_python():
    from edgepack.devices.transports import LocalTransport

    arm = Device(name="a", kind="arm64-emu")
    x86 = Device(name="x", kind="x86-64-emu", cpu="Haswell")
    assert arm.emulated and x86.emulated and not Device(name="l").emulated
    if __import__("shutil").which("qemu-x86_64-static"):
        cmd = LocalTransport(x86).python()
        assert cmd[1:3] == ["-cpu", "Haswell"] and cmd[3] == sys.executable


def _res(device: str, config: str, status: str, *, where: str = "device", host_passed: bool | None = True,
         precision: str = "f32", top1: float = 1.0, cpu: str = "") -> runs.Result:
    return runs.Result(device=device, kind="arm64-emu" if where == "emulated" else "ssh", device_class="c",
                       bundle="/b/intel-openvino-int8", target="intel-openvino-int8", backend="openvino",
                       config=config, status=status, reason="parity: top1" if status == FAIL else "",
                       latency_where=where, runtime={"inference_precision": precision}, cpu=cpu,
                       parity={"scores": {"top1_agreement": top1, "sample_cosine_p1": top1}},
                       host={"where": "host", "passed": host_passed})


def test_diagnose_names_the_cause_of_a_parity_failure():
    # the runtime's deployment default loses accuracy on this device; its parity configuration passes
    p, d = _res("a76", "parity", PASS, where="emulated"), _res("a76", "deployment", FAIL, where="emulated",
                                                                 precision="f16", top1=0.11)
    runs.diagnose([p, d])
    assert d.cause == "deployment-precision" and "f16" in d.diagnosis and "f32" in d.diagnosis
    assert d.precision_effect == {"parity_precision": "f32", "deployment_precision": "f16",
                                  "top1_agreement_change": pytest.approx(-0.89),
                                  "sample_cosine_p1_change": pytest.approx(-0.89)}
    # the bundle fails on the build host too: the conversion, whatever the device says
    bad = _res("a76", "parity", FAIL, where="emulated", host_passed=False)
    runs.diagnose([bad])
    assert bad.cause == "conversion"
    # fails under one qemu cpu model, passes under another and on the host: emulator or that CPU's kernels
    mx = _res("emu-max", "parity", FAIL, where="emulated", cpu="max")
    a53 = _res("emu-a53", "parity", PASS, where="emulated", cpu="cortex-a53")
    runs.diagnose([mx, a53])
    assert mx.cause == "emulator-or-cpu-kernels" and "emu-a53 (-cpu cortex-a53)" in mx.diagnosis
    # a real board fails what the host passes: that device's runtime
    board = _res("jetson", "parity", FAIL)
    runs.diagnose([board])
    assert board.cause == "device-runtime"
    # no cause is invented for INFRA, a latency budget or an integrity failure
    infra = _res("x", "parity", INFRA)
    tampered = _res("x", "parity", FAIL)
    tampered.reason = "integrity: content changed: model.onnx"
    runs.diagnose([infra, tampered])
    assert infra.cause == tampered.cause == ""


def test_the_devices_own_timeout_bounds_a_hung_runner():
    from edgepack.devices.transports import bounded

    raw = execute(["sh", "-c", with_marker(bounded("sleep 30", 3))], 20)
    assert raw.exit_code == 124 and raw.seconds < 10  # killed on the device side, the marker still arrives
    status, reason, _ = judge(raw)
    assert status == INFRA and "timed out on the device" in reason
    ok = execute(["sh", "-c", with_marker(bounded("echo hi", 30))], 20)
    assert ok.exit_code == 0 and ok.stdout.strip() == "hi"
    # a device without `timeout`: the command runs as it is
    bare = execute(["/bin/sh", "-c", with_marker(bounded("echo hi", 30))], 20, env={"PATH": "/nonexistent"})
    assert bare.stdout.strip() == "hi"

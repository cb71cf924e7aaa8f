"""Device-class latency budgets: the profile schema, no host judgement for android/jetson profiles, the bootstrap
verdicts, and the device run sizing and judging them (real devices only; emulated: recorded, never judged)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack import budgets
from edgepack.config import DeviceLatencyBudget, TargetProfile, host_judges_latency
from edgepack.devices import latency_budget as lb
from edgepack.devices import runs
from edgepack.devices.inventory import Device
from edgepack.devices.verdicts import FAIL, NOT_RUN, PASS
from edgepack.errors import ConfigError


def _profile(klass: str, **budget) -> TargetProfile:
    return TargetProfile.model_validate({"name": "t", "backend": "ort_mobile", "precision": "int8", "device": klass,
                                         "budgets": budget})


def test_profile_schema_holds_per_class_budgets(tmp_path):
    from edgepack.config import load_profile

    (tmp_path / "t-phone.toml").write_text(
        'backend = "ort_mobile"\nprecision = "int8"\ndevice = "android-arm64"\n'
        "[budgets]\nmax_latency_p50_ms = 8\n"
        "[budgets.device.android-arm64]\np50_ms = 5\np90_ms = 9\nwarmup = 20\nmin_runs = 200\nmin_seconds = 10\n"
        "[budgets.device.jetson-orin]\np50_ms = 1.5\n")
    p = load_profile("t-phone", targets_dir=tmp_path)
    a = p.device_latency_budget("android-arm64")
    assert (a.p50_ms, a.p90_ms, a.warmup, a.min_runs, a.min_seconds, a.confidence) == (5, 9, 20, 200, 10, 0.95)
    assert p.device_latency_budget("jetson-orin").p50_ms == 1.5 and p.device_latency_budget("ios") is None
    (tmp_path / "t-bad.toml").write_text('backend = "ort_mobile"\nprecision = "int8"\n'
                                         "[budgets.device.phone]\np50_ms = 5\nmin_runs = 2\n")
    with pytest.raises(ConfigError, match="min_runs"):
        load_profile("t-bad", targets_dir=tmp_path)


def test_top_level_latency_of_a_device_profile_is_its_class_budget_never_a_host_row():
    phone = _profile("android-arm64", max_latency_p50_ms=3.0)
    assert not host_judges_latency("android-arm64") and not host_judges_latency("jetson-orin")
    assert host_judges_latency("intel-x86") and host_judges_latency("linux-x86_64")
    # the host measured 50 ms: for an android profile that is no verdict at all, only the host number
    rows = budgets.check(phone.budgets, 1024, {"p50_ms": 50.0, "p90_ms": 60.0}, phone.device)
    assert [r.name for r in rows] == []
    notes = budgets.device_notes(phone.budgets, phone.device)
    assert "judged by `edgepack device run` on real devices" in notes[0] and "android-arm64" in notes[0]
    own = phone.device_latency_budget("android-arm64")
    assert own.p50_ms == 3.0 and own.p90_ms is None and phone.device_latency_budget("jetson-orin") is None
    x86 = _profile("intel-x86", max_latency_p50_ms=3.0)
    rows = budgets.check(x86.budgets, 1024, {"p50_ms": 50.0, "p90_ms": 60.0}, x86.device)
    assert [(r.name, r.passed) for r in rows] == [("host_latency_p50_ms", False)]
    assert x86.device_latency_budget("intel-x86") is None  # the host judges it


def test_bootstrap_verdicts():
    rng = np.random.default_rng(0)
    samples = list(10.0 + rng.standard_normal(400) * 0.5)
    b = lambda **kw: DeviceLatencyBudget(**{"min_runs": 50, "min_seconds": 0.0, **kw})  # noqa: E731
    met = lb.judge(b(p50_ms=11.0, p90_ms=12.0), {"samples_ms": samples}, device_class="jetson", emulated=False)
    assert met["status"] == lb.MET and [r["verdict"] for r in met["rows"]] == [lb.MET, lb.MET]
    p50 = met["rows"][0]
    assert p50["ci_low"] < p50["measured"] < p50["ci_high"] and p50["ci_high"] - p50["ci_low"] < 0.3
    assert lb.judge(b(p50_ms=9.0), {"samples_ms": samples}, device_class="j", emulated=False)["status"] == lb.EXCEEDED
    # a limit inside the interval: not shown either way
    assert lb.judge(b(p50_ms=p50["measured"]), {"samples_ms": samples}, device_class="j",
                    emulated=False)["status"] == lb.INCONCLUSIVE
    few = lb.judge(b(p50_ms=11.0, min_runs=500), {"samples_ms": samples}, device_class="j", emulated=False)
    assert few["status"] == lb.INSUFFICIENT and "400 runs" in few["note"]
    short = lb.judge(b(p50_ms=11.0, min_seconds=10.0), {"samples_ms": samples}, device_class="j", emulated=False)
    assert short["status"] == lb.INSUFFICIENT  # 400 × 10 ms = 4 s < 10 s
    emu = lb.judge(b(p50_ms=0.001), {"samples_ms": samples}, device_class="j", emulated=True)
    assert emu["status"] == lb.NOT_JUDGED and "emulated" in emu["note"] and not emu["rows"]
    # a phone's benchmark binary: a summary only, judged on the point estimate and said so
    point = lb.judge(b(p50_ms=2.0, p90_ms=1.0), {"p50_ms": 1.5, "p90_ms": 1.8, "runs": 100}, device_class="p",
                     emulated=False)
    assert point["status"] == lb.EXCEEDED and "no per-run samples" in point["rows"][0]["note"]


RUNNER = """
import json, sys
args = sys.argv[1:]
n = int(args[args.index("--repeats") + 1])
samples = [{ms}] * n
print(json.dumps({{"passed": True, "host": "Linux test", "argv": args,
                  "parity": {{"samples": 40, "checks": [{{"name": "c", "passed": True}}], "metrics": {{}}}},
                  "latency": {{"where": "device", "p50_ms": {ms}, "p90_ms": {ms}, "samples_ms": samples}}}}))
"""


def _bundle(folder: Path, ms: float, device_budgets: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_bundle.py").write_text(RUNNER.format(ms=ms))
    target = _profile("android-arm64", device=device_budgets).model_dump(mode="json")
    (folder / "manifest.json").write_text(json.dumps({"target": target, "files": [],
                                                      "artifact": {"backend": "ort_mobile"}}))
    (folder / "report.json").write_text(json.dumps({"latency": {"p50_ms": 0.2, "p90_ms": 0.3},
                                                    "parity": {"passed": True, "metrics": {
                                                        "scores": {"top1_agreement": 1.0}}}}))
    return folder


def test_device_run_sizes_and_judges_the_class_budget(tmp_path):
    """A real device of the class: the run is sized by the budget (runs, warm-up, seconds) and judged; a slow
    device FAILs on latency; an emulated device of the same class records it, never judged; other classes: none."""
    spec = {"android-arm64": {"p50_ms": 20.0, "min_runs": 60, "warmup": 7, "min_seconds": 0.5}}
    fast = _bundle(tmp_path / "fast", 10.0, spec)
    slow = _bundle(tmp_path / "slow", 30.0, spec)
    phone = Device(name="phone", kind="local", device_class="android-arm64", retries=0)
    rec = runs.run_all([phone], [fast, slow], repeats=5, warmup=1)
    by = {Path(r["bundle"]).name: r for r in rec["results"]}
    assert by["fast"]["status"] == PASS and by["fast"]["budget"]["status"] == lb.MET, by["fast"]
    assert len(by["fast"]["latency"]["samples_ms"]) == 60  # min_runs, not --repeats 5
    assert by["fast"]["host"]["p50_ms"] == 0.2 and by["fast"]["host"]["parity"]["scores"]["top1_agreement"] == 1.0
    assert by["slow"]["status"] == FAIL and by["slow"]["budget"]["status"] == lb.EXCEEDED
    assert "android-arm64 latency budget: p50_ms 30.000" in by["slow"]["reason"]
    assert runs.exit_code(rec) == 1
    r = runs.run_one(phone, fast, "parity", repeats=5, warmup=1, budget=DeviceLatencyBudget(p50_ms=20.0))
    emu = runs.run_one(Device(name="emu", kind="local", device_class="android-arm64", latency_emulated=True),
                       slow, "parity", repeats=5, warmup=1, budget=DeviceLatencyBudget(p50_ms=20.0))
    assert r.status == PASS and emu.status == PASS and emu.budget["status"] == lb.NOT_JUDGED
    assert len(emu.latency["samples_ms"]) == 5  # not sized: emulated latency is never judged
    other = runs.run_all([Device(name="jetson", kind="local", device_class="jetson-orin")], [slow], repeats=3)
    assert other["results"][0]["status"] == PASS and other["results"][0]["budget"] == {}


def test_runner_args_ask_for_the_budget_sizing():
    from edgepack.devices.transports import runner_args

    assert "--min-seconds" not in runner_args("/b", 5, 1, "parity")  # older bundles' runners lack the option
    assert runner_args("/b", 60, 7, "deployment", 2.5).endswith("--config deployment --min-seconds 2.5")


def test_budget_on_a_phone_without_python_is_judged_on_the_tools_summary(tmp_path):
    from test_device_harness_units import FAKE_ADB, FIXTURES, _exe  # noqa: F401

    fake = _exe(tmp_path / "adb", FAKE_ADB.format(python=sys.executable))
    perf = _exe(tmp_path / "perf", f"#!/bin/sh\necho \"$@\" > {tmp_path / 'argv'}\n"
                                   f"cat {FIXTURES / 'onnxruntime_perf_test_pixel.txt'}\n")
    phone = Device(name="pixel", kind="adb", serial="loopback", adb=fake, ort_perf_test=perf,
                   device_class="android-arm64", remote=str(tmp_path / "phone" / "{name}"), retries=0)
    b = tmp_path / "b"
    b.mkdir()
    (b / "model.ort").write_bytes(b"\0" * 16)
    (b / "run_bundle.py").write_text("")
    target = _profile("android-arm64", max_latency_p50_ms=0.5).model_dump(mode="json")
    (b / "manifest.json").write_text(json.dumps({"target": target, "files": [{"path": "model.ort"}],
                                                 "artifact": {"backend": "ort_mobile",
                                                              "runtime": {"model": "model.ort"}}}))
    r = runs.run_all([phone], [b], repeats=5, warmup=1)["results"][0]
    assert r["budget"]["status"] == lb.EXCEEDED and r["status"] == FAIL  # p50 1.011 ms > 0.5 ms on the phone
    assert "-r 50" in (tmp_path / "argv").read_text()  # sized by the budget's default min_runs
    assert r["budget"]["rows"][0]["ci_low"] is None
    assert NOT_RUN != r["status"]


def test_android_profile_builds_without_a_host_latency_verdict_and_is_judged_on_the_device(tmp_path):
    """End to end: an android profile whose p50 budget the x86 host would fail builds PASSED (host latency kept as
    `host`, a note says where the budget is judged); on a real device of its class the budget is judged — and
    exceeded — while the same bundle's parity passes."""
    pytest.importorskip("onnxruntime")
    from tinymodels import make_tiny_onnx

    from edgepack import pipeline

    model = make_tiny_onnx(tmp_path / "tiny.onnx", width=8)
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "phone-fp32.toml").write_text(
        'backend = "ort_mobile"\nprecision = "fp32"\ndevice = "android-arm64"\ncalibration = "digits"\n'
        "[budgets]\nmax_latency_p50_ms = 0.000001\n"
        "[budgets.device.jetson-orin]\np50_ms = 1000\nmin_runs = 20\nmin_seconds = 0\n")
    [res] = pipeline.build(str(model), ["phone-fp32"], calibration="digits", out=tmp_path / "dist", targets_dir=tdir)
    assert res.status == "passed", res.checks
    assert not [c for c in res.checks if "latency" in c.name]
    assert res.latency.where == "host" and res.latency.p50_ms > 0.000001
    assert any("judged by `edgepack device run` on real devices" in n for n in res.notes), res.notes
    bundle = tmp_path / "dist" / "tiny" / "phone-fp32"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["budgets"]["device"]["jetson-orin"]["p50_ms"] == 1000
    phone = Device(name="phone", kind="local", device_class="android-arm64", retries=0)
    jetson = Device(name="jetson", kind="local", device_class="jetson-orin", retries=0)
    rec = runs.run_all([phone, jetson], [bundle], repeats=3, warmup=1)
    by = {r["device"]: r for r in rec["results"]}
    assert by["phone"]["status"] == FAIL and by["phone"]["budget"]["status"] == lb.EXCEEDED, by["phone"]
    phone_samples = by["phone"]["latency"]["samples_ms"]
    assert by["phone"]["parity"] and len(phone_samples) >= 50 and sum(phone_samples) >= 1000.0  # default sizing
    assert by["jetson"]["status"] == PASS and by["jetson"]["budget"]["status"] == lb.MET
    assert len(by["jetson"]["latency"]["samples_ms"]) == 20
    assert by["phone"]["host"]["p50_ms"] == pytest.approx(res.latency.p50_ms)


def test_nightly_examples_are_valid():
    """docs/nightly: the inventory loads with every kind, the crontab and the CI workflow call the real CLI."""
    import shlex

    from typer.testing import CliRunner

    from edgepack.cli import app
    from edgepack.devices.inventory import load_inventory

    root = Path(__file__).resolve().parents[2] / "docs" / "nightly"
    devices = load_inventory(root / "devices.toml")
    assert {d.kind for d in devices} >= {"local", "arm64-emu", "ssh", "adb"}
    assert {d.klass for d in devices if not d.emulated and d.kind != "local"} == {"jetson-orin", "android-arm64"}
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((root / "device-nightly.yml").read_text())
    steps = [s.get("run", "") for s in wf["jobs"]["devices"]["steps"]]
    lines = [ln.split("&&", 1)[-1] for ln in (root / "crontab").read_text().splitlines()
             if ln and not ln.startswith("#")]
    commands = [c for c in steps + lines if "edgepack device" in c]
    assert len(commands) == 4
    for c in commands:
        argv = shlex.split(c.split("edgepack", 1)[1].split(">")[0])
        res = CliRunner().invoke(app, [*argv, "--help"])
        assert res.exit_code == 0, (c, res.stdout)
        for opt in (a for a in argv if a.startswith("--")):
            assert opt in res.stdout, (opt, c)


CPU_RUNNER = """
import json, os, sys
bad = os.environ.get("EDGEPACK_QEMU_CPU") in os.environ.get("FAIL_ON_CPUS", "max").split(",")  # follows the CPU
print(json.dumps({"passed": not bad, "host": "Linux aarch64 emu",
                  "parity": {"samples": 16, "checks": [{"name": "parity.min_cosine[out]", "passed": not bad}],
                             "metrics": {"out": {"sample_cosine_p1": -0.2 if bad else 0.9999}}},
                  "latency": {"where": "device", "p50_ms": 1.0, "p90_ms": 1.0, "samples_ms": [1.0]}}))
sys.exit(1 if bad else 0)
"""


def test_an_emulated_parity_failure_is_crosschecked_on_the_reference_cpu(tmp_path, monkeypatch):
    """A parity FAIL under one emulated CPU model, passed by the build host, is run again on the reference model
    (cortex-a76): passing there, the diagnosis puts the fault on the first model's feature paths, not the bundle."""
    b = tmp_path / "ov"
    b.mkdir()
    (b / "run_bundle.py").write_text(CPU_RUNNER)
    (b / "manifest.json").write_text(json.dumps({"target": {"name": "intel-openvino-int8"}, "files": [],
                                                 "artifact": {"backend": "ort_mobile"}}))
    (b / "report.json").write_text(json.dumps({"parity": {"passed": True, "metrics": {}}}))
    emu = Device(name="arm64-max", kind="arm64-emu", cpu="max", python=sys.executable, retries=0)
    rec = runs.run_all([emu], [b], repeats=1, warmup=0)
    by = {r["device"]: r for r in rec["results"]}
    assert set(by) == {"arm64-max", "arm64-max@cortex-a76"}
    assert by["arm64-max"]["status"] == FAIL and by["arm64-max@cortex-a76"]["status"] == PASS
    assert by["arm64-max"]["cause"] == "emulator-or-cpu-kernels"
    assert "arm64-max@cortex-a76 (-cpu cortex-a76)" in by["arm64-max"]["diagnosis"]
    # failing on the reference CPU itself: nothing to re-run, and the sentence says which cpu to try
    monkeypatch.setenv("FAIL_ON_CPUS", "max,cortex-a76")
    ref = Device(name="arm64", kind="arm64-emu", cpu="cortex-a76", python=sys.executable, retries=0)
    [only] = runs.run_all([ref], [b], repeats=1, warmup=0)["results"]
    assert only["status"] == FAIL and "rerun with another qemu cpu" in only["diagnosis"]
    # the same failure with the build host failing too is the conversion, and is not re-run either
    (b / "report.json").write_text(json.dumps({"parity": {"passed": False, "metrics": {}}}))
    [conv] = runs.run_all([emu], [b], repeats=1, warmup=0)["results"]
    assert conv["cause"] == "conversion"

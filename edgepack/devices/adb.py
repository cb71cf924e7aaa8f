"""Android over adb: push the bundle, run it, pull nothing back but stdout.

A phone has no Python by default, so by default an adb device measures latency only, with the benchmark binary the
user placed on the phone (docs/devices.md says which build and where):

* LiteRT (``tflite`` bundles): ``benchmark_model`` (``/data/local/tmp/benchmark_model``),
* ONNX Runtime (``ort_mobile`` bundles): ``onnxruntime_perf_test`` (``/data/local/tmp/onnxruntime_perf_test``),

and reports NOT_RUN for parity ("parity not run on this device"), never PASS. When the inventory gives the phone a
``python`` (e.g. Termux with numpy and the runtime), the bundle's own ``run_bundle.py`` runs there and parity is
judged like on any other device.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from edgepack.devices.transports import (RawRun, Transport, execute, fresh_remote, make_fresh, runner_args, step,
                                         with_marker)

_NUM = r"([0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)"


def parse_benchmark_model(text: str) -> dict:
    """Latency from LiteRT ``benchmark_model`` output (its ``count=… avg=…`` lines are in microseconds).

    The last ``count=`` line is the measured (non-warm-up) run; ``median``/``p5``/``p95`` appear when the tool
    prints percentiles; otherwise only avg/min/max/std are known and p50 is left out rather than guessed."""
    stats = [dict(re.findall(r"(\w+)=" + _NUM, line)) for line in text.splitlines()
             if re.search(r"\bcount=\d+", line) and "avg=" in line]
    if not stats:
        raise ValueError("no 'count=... avg=...' line in benchmark_model output")
    s = {k: float(v) for k, v in stats[-1].items()}
    out = {"tool": "benchmark_model", "runs": int(s["count"]), "mean_ms": s["avg"] / 1000.0,
           "min_ms": s["min"] / 1000.0, "max_ms": s["max"] / 1000.0, "std_ms": s.get("std", 0.0) / 1000.0}
    if "median" in s:
        out["p50_ms"] = s["median"] / 1000.0
    if "p95" in s:
        out["p95_ms"] = s["p95"] / 1000.0
    init = re.search(r"Init:\s*" + _NUM, text)
    if init:
        out["init_ms"] = float(init.group(1)) / 1000.0
    return out


def parse_ort_perf_test(text: str) -> dict:
    """Latency from ONNX Runtime's ``onnxruntime_perf_test -s`` output, in seconds: ``P50 Latency: 0.0051 s``
    (current releases, ``-s`` prints the statistics) or ``P50 Latency is 0.0051 sec`` (releases up to 2023), with
    ``Average inference time cost: … ms`` (or the older ``Average time cost: … ms``)."""
    def sec(label: str) -> float | None:
        m = re.search(rf"^{label} Latency(?::| is)\s*{_NUM}\s*s(?:ec)?\b", text, re.M)
        return float(m.group(1)) * 1000.0 if m else None

    avg = re.search(r"Average (?:inference )?time cost:\s*" + _NUM + r"\s*ms", text)
    runs = (re.search(r"^Runs:\s*(\d+)", text, re.M) or re.search(r"Total inference requests:\s*(\d+)", text)
            or re.search(r"^Total iterations:\s*(\d+)", text, re.M))
    if avg is None and sec("P50") is None:
        raise ValueError("no latency lines in onnxruntime_perf_test output")
    out = {"tool": "onnxruntime_perf_test", "runs": int(runs.group(1)) if runs else 0}
    if avg:
        out["mean_ms"] = float(avg.group(1))
    for label, key in (("Min", "min_ms"), ("Max", "max_ms"), ("P50", "p50_ms"), ("P90", "p90_ms"),
                       ("P95", "p95_ms"), ("P99", "p99_ms")):
        v = sec(label)
        if v is not None:
            out[key] = v
    return out


PARSERS = {"benchmark_model": parse_benchmark_model, "onnxruntime_perf_test": parse_ort_perf_test}


class AdbTransport(Transport):
    """``adb -s SERIAL push/shell`` with the marker; parity via ``python`` on the phone when configured."""

    def adb(self, *args: str) -> list[str]:
        return [self.device.adb, "-s", self.device.serial, *args]

    def benchmark_command(self, manifest: dict, remote: str, repeats: int, warmup: int,
                          min_seconds: float = 0.0) -> tuple[str, str] | None:
        d = self.device
        art = manifest["artifact"]
        model = (art.get("runtime") or {}).get("model") or next(
            (f["path"] for f in manifest["files"] if f["path"].endswith((".tflite", ".ort", ".onnx"))), "")
        path = shlex.quote(f"{remote}/{model}")
        if art["backend"] == "tflite":
            return "benchmark_model", (f"{shlex.quote(d.benchmark_model)} --graph={path} --num_runs={repeats} "
                                       f"--warmup_runs={warmup} --num_threads=1"
                                       + (f" --min_secs={min_seconds:g}" if min_seconds > 0 else ""))
        if art["backend"] == "ort_mobile":
            # -s prints the P50/P90 lines (without it only the average); -I random inputs (a bundle has no .pb test data)
            return "onnxruntime_perf_test", f"{shlex.quote(d.ort_perf_test)} -I -s -m times -r {repeats} -x 1 -y 1 {path}"
        return None

    def run(self, bundle: Path, *, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> RawRun:
        d = self.device
        manifest = json.loads((bundle / "manifest.json").read_text())
        base, remote = fresh_remote(d.remote, bundle.name)
        mk = execute(self.adb("shell", with_marker(make_fresh(base, remote))), d.timeout_s)
        if mk.exit_code != 0:
            return RawRun(infra=mk.infra or f"adb {d.serial}: cannot create {remote}: "
                                             f"{(mk.stderr or mk.stdout).strip()[-300:]}",
                          transport_code=mk.transport_code, timed_out=mk.timed_out)
        try:  # from here on the fresh folder is ours: removed whatever happens (only it, never its parent)
            why = step(self.adb("push", f"{bundle}/.", remote), d.timeout_s, "adb push")
            if why:
                return RawRun(infra=why)
            if d.python:
                args = runner_args(remote, repeats, warmup, config, min_seconds)
                cmd = f"{shlex.quote(d.python)} {shlex.quote(remote + '/run_bundle.py')} {args}"
                return execute(self.adb("shell", with_marker(cmd)), d.timeout_s)
            bench = self.benchmark_command(manifest, remote, repeats, warmup, min_seconds)
            if bench is None:
                return RawRun(extra={"not_run": f"no benchmark binary for {manifest['artifact']['backend']} "
                                                "bundles on Android and no python on the phone"})
            tool, cmd = bench
            raw = execute(self.adb("shell", with_marker(cmd)), d.timeout_s)
            raw.extra["benchmark_tool"] = tool
            return raw
        finally:
            execute(self.adb("shell", f"rm -rf {shlex.quote(remote)}"), min(60.0, d.timeout_s), marker=False)


def judge_benchmark(raw: RawRun) -> tuple[str, str, dict]:
    """A latency-only run on a phone: NOT_RUN (parity) with the parsed latency, or INFRA."""
    from edgepack.devices.verdicts import INFRA, NOT_RUN, judge

    if "not_run" in raw.extra:
        return NOT_RUN, "parity not run on this device: " + raw.extra["not_run"], {}
    if raw.infra or raw.timed_out or raw.exit_code is None:
        return INFRA, judge(raw)[1], {}
    if raw.exit_code != 0:  # 127: the binary is not where the inventory says
        return INFRA, (f"{raw.extra.get('benchmark_tool')} exited {raw.exit_code}: "
                       f"{(raw.stderr or raw.stdout).strip()[-300:]}"), {}
    tool = raw.extra["benchmark_tool"]
    try:
        lat = PARSERS[tool](raw.stdout)
    except ValueError as e:
        return INFRA, f"{tool}: {e}", {}
    verdict = {"passed": None, "latency": {"where": "device", **lat},
               "latency_ms": {k: lat[k] for k in ("p50_ms", "p90_ms") if k in lat}}
    return NOT_RUN, f"parity not run on this device (latency only, from {tool})", verdict

"""Build-time benchmark: wall-clock time of `edgepack build` (the CLI, in a subprocess) for two scenarios.

    python benchmarks/bench_build.py --scenario all --json /tmp/bench.json
    python benchmarks/bench_build.py --repo /tmp/before --scenario mnv2 --repeat 3   # another checkout's CLI

Scenarios:
* ``demo``  what scripts/demo.sh builds: the digits CNN (examples/digits.py:make_cnn, trained once and cached),
  ``--target all --skip-unavailable --calibration digits``.
* ``mnv2``  MobileNetV2 (examples/mobilenetv2.py, seeded random init, ~3.5 M params) for fp32 + fp16 + int8 on
  ONNX Runtime Mobile, TFLite and OpenVINO in one command, ``--calibration digits``.

The CLI is the `edgepack` executable next to this interpreter, run with PYTHONPATH=<repo> and cwd=<repo>, so
`--repo` times another checkout with the same virtualenv (checked: the subprocess must import edgepack from
<repo>). Exit code 1 (a parity budget missed, e.g. on the untrained MobileNetV2) still counts as a timing;
the exit code, each target's status and its `build_time_s` (from the build's JSON report) are recorded, with
the CPU time of the CLI and its workers (less sensitive than wall time to other work on the machine) and the
1-minute load average sampled during the run (`--wait-idle LOAD` waits for a quiet machine before each run).
Not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE_REPO = Path(__file__).resolve().parents[1]
INPUT = "input=1x1x32x32"
MNV2_TARGETS = (
    "android-ort-fp32", "android-ort-fp16", "android-ort-int8",
    "android-tflite-fp32", "android-tflite-fp16", "android-tflite-int8",
    "intel-openvino-fp32", "intel-openvino-fp16", "intel-openvino-int8",
)
SCENARIOS = ("demo", "mnv2")


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _wait_idle(max_load: float, timeout_s: float) -> None:
    """Wait until the 1-minute load average is below max_load (other work on the machine skews wall time)."""
    deadline = time.monotonic() + timeout_s
    while (load := _loadavg()) and load[0] >= max_load and time.monotonic() < deadline:
        print(f"  waiting for load1 < {max_load} (now {load[0]})", flush=True)
        time.sleep(30)


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("COLUMNS", "160")  # wide, untruncated tables in the captured logs
    return env


def _check_import(repo: Path, env: dict[str, str]) -> str:
    """The subprocess environment must import edgepack from `repo` (not the venv's editable install)."""
    out = subprocess.run([sys.executable, "-c", "import edgepack; print(edgepack.__file__)"], env=env, cwd=repo,
                         capture_output=True, text=True, check=True).stdout.strip()
    got = Path(out).resolve()
    if got != (repo / "edgepack" / "__init__.py").resolve():
        sys.exit(f"bench_build: the subprocess imports edgepack from {got}, not from {repo}")
    return str(got)


def _git(repo: Path) -> dict[str, object]:
    def run(*args: str) -> str | None:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _cnn_weights(args, repo: Path, env: dict[str, str]) -> Path:
    if args.cnn_weights:
        return args.cnn_weights.resolve()
    weights = args.cache / "cnn.pt"
    if not weights.is_file():
        print(f"training the digits CNN once → {weights}", flush=True)
        subprocess.run([sys.executable, "examples/digits.py", "--model", "cnn", "--out", str(args.cache)],
                       env=env, cwd=repo, check=True)
    return weights


def _mnv2_model(repo: Path) -> tuple[str, Path]:
    """The factory spec (relative to the repo when it has the example) and the script that makes the weights."""
    own = repo / "examples" / "mobilenetv2.py"
    script = own if own.is_file() else HERE_REPO / "examples" / "mobilenetv2.py"
    spec = "examples/mobilenetv2.py" if own.is_file() else str(script)
    return f"{spec}:make_mobilenetv2", script


def _mnv2_weights(args, script: Path, env: dict[str, str], repo: Path) -> Path:
    if args.mnv2_weights:
        return args.mnv2_weights.resolve()
    weights = args.cache / "mobilenetv2.pt"
    if not weights.is_file():
        subprocess.run([sys.executable, str(script), "--out", str(weights)], env=env, cwd=repo, check=True)
    return weights


def _command(scenario: str, args, repo: Path, env: dict[str, str], out: Path) -> list[str]:
    if scenario == "demo":
        cmd = ["build", "examples/digits.py:make_cnn", "--weights", str(_cnn_weights(args, repo, env)),
               "--input", INPUT, "--target", "all", "--skip-unavailable", "--calibration", "digits",
               "--out", str(out)]
    else:
        spec, script = _mnv2_model(repo)
        cmd = ["build", spec, "--weights", str(_mnv2_weights(args, script, env, repo)), "--input", INPUT]
        for t in MNV2_TARGETS:
            cmd += ["--target", t]
        cmd += ["--calibration", "digits", "--out", str(out)]
    return cmd


def _targets(report: Path) -> list[dict] | None:
    if not report.is_file():
        return None
    data = json.loads(report.read_text())
    rows = []
    for t in data.get("targets", []):
        row = {"target": t.get("target"), "status": t.get("status"), "build_time_s": t.get("build_time_s")}
        failed = [c.get("name") for c in t.get("checks", []) if isinstance(c, dict) and c.get("passed") is False]
        if failed:
            row["failed_checks"] = failed
        if t.get("status") == "skipped" and t.get("reason"):
            row["reason"] = t["reason"]
        rows.append(row)
    return rows


def _run_once(scenario: str, args, repo: Path, env: dict[str, str], exe: Path, index: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench_build_{scenario}_"))
    out, report, log = work / "dist", work / "build-report.json", work / "build.log"
    cmd = [str(exe), *_command(scenario, args, repo, env, out), "--report", str(report)]
    if args.wait_idle:
        _wait_idle(args.wait_idle, args.wait_timeout)
    load_before, samples = _loadavg(), []
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=repo, stdout=fh, stderr=subprocess.STDOUT)
        while True:
            try:
                rc = proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                load = _loadavg()
                if load:
                    samples.append(load[0])
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)  # the CLI + its (joined) workers
    run = {"run": index, "exit_code": rc, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
           "loadavg_before": load_before, "loadavg_after": _loadavg(),
           "load1_during": {"mean": round(statistics.fmean(samples), 2), "max": max(samples)} if samples else None,
           "command": cmd, "targets": _targets(report)}
    times = [t["build_time_s"] for t in run["targets"] or [] if t.get("build_time_s") is not None]
    run["sum_build_time_s"] = round(sum(times), 3) if times else None
    if rc not in (0, 1) or run["targets"] is None:
        tail = log.read_text().splitlines()[-15:]
        print(f"[{scenario} #{index}] exit {rc}; last lines of {log}:\n  " + "\n  ".join(tail), flush=True)
        run["log_tail"] = tail
    if args.keep or rc not in (0, 1):
        run["workdir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return run


def _print(results: dict) -> None:
    for name, sc in results["scenarios"].items():
        print(f"\n== {name}: wall median {sc['wall_s_median']:.1f} s, min {sc['wall_s_min']:.1f} s, "
              f"cpu median {sc['cpu_s_median']:.1f} s over {len(sc['runs'])} run(s)")
        for run in sc["runs"]:
            s = run["sum_build_time_s"]
            during = run["load1_during"] or {}
            print(f"  run {run['run']}: exit {run['exit_code']}, wall {run['wall_s']:.1f} s, cpu {run['cpu_s']:.1f} s, "
                  f"Σ build_time_s {s if s is not None else '—'}, loadavg {run['loadavg_before']} → "
                  f"{run['loadavg_after']}, load1 during mean {during.get('mean', '—')} max {during.get('max', '—')}")
            for t in run["targets"] or []:
                bt = t["build_time_s"]
                extra = f"  ({', '.join(t['failed_checks'])})" if t.get("failed_checks") else ""
                print(f"    {t['target']:<28} {t['status']:<8} {f'{bt:.1f} s' if bt is not None else '—':>9}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--repo", type=Path, default=HERE_REPO, help="checkout whose CLI to time (default: this one)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--cnn-weights", type=Path, help="digits CNN state dict (default: trained once into --cache)")
    ap.add_argument("--mnv2-weights", type=Path, help="MobileNetV2 state dict (default: made once into --cache)")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgepack-bench",
                    help="where trained/initialised weights are cached (default ~/.cache/edgepack-bench)")
    ap.add_argument("--wait-idle", type=float, metavar="LOAD",
                    help="before each run, wait until the 1-minute load average is below LOAD")
    ap.add_argument("--wait-timeout", type=float, default=3600, help="give up waiting after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep each run's output folder and log")
    args = ap.parse_args()
    repo = args.repo.resolve()
    args.cache = args.cache.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "edgepack"
    if not exe.is_file():
        sys.exit(f"bench_build: no edgepack executable next to {sys.executable}")
    env = _env(repo)
    imported = _check_import(repo, env)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results: dict = {
        "meta": {"repo": str(repo), "edgepack_imported_from": imported, **_git(repo), "executable": str(exe),
                 "python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_start": _loadavg()},
        "scenarios": {},
    }
    print(f"edgepack from {imported} ({results['meta']['commit']}), loadavg {results['meta']['loadavg_start']}",
          flush=True)
    for name in scenarios:
        runs = []
        for i in range(1, args.repeat + 1):
            print(f"[{name} #{i}] building…", flush=True)
            runs.append(_run_once(name, args, repo, env, exe, i))
            print(f"[{name} #{i}] exit {runs[-1]['exit_code']}, {runs[-1]['wall_s']:.1f} s", flush=True)
        walls = [r["wall_s"] for r in runs]
        results["scenarios"][name] = {"wall_s_median": round(statistics.median(walls), 3),
                                      "wall_s_min": round(min(walls), 3),
                                      "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
                                      "runs": runs}
    results["meta"]["loadavg_end"] = _loadavg()
    _print(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

"""Zoo benchmark: wall and CPU time of building a zoo serially (one `edgepack build` per model, as one engineer
does today), with `edgepack zoo build --executor local` and `--executor ray` (a local single-node head), and of a
second, unchanged run against the cache (hit ratio, time vs the first run); per-cell costs (CPU seconds, peak
RSS, by backend) from the cells' records, and the cost-on-paper of a larger zoo from them.

    python benchmarks/bench_zoo.py --models 4 --targets linux-ort-fp32,linux-ort-int8,android-ort-fp32,\\
        android-ort-fp16,android-ort-int8,intel-openvino-fp32 --json /tmp/bench_zoo.json

The models are seeded tiny ONNX image classifiers (tests/tinymodels.py, widths 8, 16, 24, …) calibrated on seeded
random arrays: the figures measure the zoo machinery and per-cell overhead, not real-model conversion costs (pass
--zoo to time your own zoo file instead). The CLI is the `edgepack` next to this interpreter, run with
PYTHONPATH=<repo>. Not a test: it asserts nothing about the figures; the 1-minute load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGEPACK = str(Path(sys.executable).with_name("edgepack"))
DEFAULT_TARGETS = "linux-ort-fp32,linux-ort-int8,android-ort-fp32,android-ort-fp16,android-ort-int8,intel-openvino-fp32"


def make_zoo(folder: Path, models: int, targets: list[str]) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np
    from tinymodels import make_tiny_onnx

    folder.mkdir(parents=True)
    np.savez(folder / "calib.npz",
             input=np.random.default_rng(0).standard_normal((128, 1, 32, 32)).astype(np.float32))
    text = ""
    for i in range(models):
        make_tiny_onnx(folder / f"m{i}.onnx", seed=i, width=8 * (i + 1))
        text += (f'[[model]]\nname = "m{i}"\nsource = "m{i}.onnx"\ncalibration = "calib.npz"\n'
                 f"targets = {json.dumps(targets)}\nskip_unavailable = true\n[model.outputs]\nlogits = \"scores\"\n\n")
    (folder / "zoo.toml").write_text(text)
    return folder / "zoo.toml"


def timed(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([EDGEPACK, *args], env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"args": args[:3], "exit": r.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "load1": round(os.getloadavg()[0], 2)}


def cell_costs(out: Path) -> dict:
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*/*.json")]
    built = [r for r in recs if r.get("cpu_seconds") is not None]
    by: dict[str, list[dict]] = {}
    for r in built:
        by.setdefault(f"{r['backend']}/{r['precision']}", []).append(r)
    return {k: {"cells": len(v), "cpu_s_median": round(statistics.median(x["cpu_seconds"] for x in v), 2),
                "cpu_s_max": max(x["cpu_seconds"] for x in v), "peak_rss_mb_max": max(x["peak_rss_mb"] for x in v)}
            for k, v in sorted(by.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--targets", default=DEFAULT_TARGETS)
    ap.add_argument("--zoo", type=Path, help="time this zoo file instead of the generated one (no serial mode)")
    ap.add_argument("--modes", default="serial,local,ray,cache")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-zoo-"))
    targets = a.targets.split(",")
    results: dict = {"targets": targets, "models": a.models, "cpus": os.cpu_count(), "modes": {}}
    try:
        zoo = a.zoo or make_zoo(work / "zoo", a.models, targets)
        modes = a.modes.split(",")
        if "serial" in modes and not a.zoo:
            runs = [timed(["build", str(zoo.parent / f"m{i}.onnx"), *sum((["-t", t] for t in targets), []),
                           "-c", str(zoo.parent / "calib.npz"), "--skip-unavailable", "--output", "logits=scores",
                           "--out", str(work / "serial")]) for i in range(a.models)]
            results["modes"]["serial"] = {"wall_s": round(sum(r["wall_s"] for r in runs), 2),
                                          "cpu_s": round(sum(r["cpu_s"] for r in runs), 2),
                                          "exits": [r["exit"] for r in runs]}
        for executor in [m for m in ("local", "ray") if m in modes]:
            out = work / executor
            results["modes"][executor] = timed(["zoo", "build", str(zoo), "--executor", executor, "--out", str(out)])
            results["modes"][executor]["cells"] = len(list((out / "cells").glob("*/*.json")))
            results["cell_costs"] = cell_costs(out)
        if "cache" in modes:
            first = timed(["zoo", "build", str(zoo), "--cache", str(work / "cache"), "--out", str(work / "c1")])
            second = timed(["zoo", "build", str(zoo), "--cache", str(work / "cache"), "--out", str(work / "c2")])
            recs = [json.loads(p.read_text()) for p in (work / "c2" / "cells").glob("*/*.json")]
            runnable = [r for r in recs if r.get("cache") != "off"]
            results["modes"]["cache"] = {
                "first": first, "second": second,
                "hit_ratio": round(sum(r["cache"] == "hit" for r in runnable) / max(1, len(runnable)), 3),
                "second_vs_first_wall": round(second["wall_s"] / first["wall_s"], 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

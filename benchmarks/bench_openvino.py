#!/usr/bin/env python3
"""OpenVINO benchmark rows: IR size ratios, int8 accuracy/agreement (NNCF defaults vs the shipped profile),
accuracy control, and the INT8/FP32 host latency ratio of the ResNet-shaped example at batch 1, 1 thread.

    python benchmarks/bench_openvino.py [--work /tmp/ov-bench] [--models cnn dwcnn resnet] [--rounds 7]

Trains the example models on the digits data when ``WORK/<model>.onnx`` is missing (examples/digits.py), builds
every openvino target from the ONNX export with the digits recipe, and writes ``benchmarks/results/openvino.csv`` plus a
Markdown table on stdout. Latency is measured again after the builds in one worker that alternates fp32 and int8
in ``--rounds`` blocks (a shared, busy host drifts; interleaving keeps the ratio fair) and reports medians.
Figures are host figures: OpenVINO CPU plugin on the build machine, never a device number.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack import pipeline  # noqa: E402
from edgepack.isolation import run_isolated  # noqa: E402

SHIPPED = ("intel-openvino-fp32", "intel-openvino-fp16", "intel-openvino-int8", "intel-openvino-int8-acc")
DEFAULTS_PROFILE = """# NNCF's own defaults (no [options]): the baseline the shipped int8 profile is compared with.
backend = "openvino"
precision = "int8"
calibration = "digits"
[budgets.parity]
min_top1_agreement = 0.98
max_accuracy_drop = 0.01
"""


def ensure_model(name: str, work: Path) -> Path:
    onnx = work / f"{name}.onnx"
    if not onnx.is_file():
        subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", name, "--out", str(work),
                        "--onnx"], check=True)
    return onnx


def _latency_worker(bundles: dict[str, str], rounds: int, block: int, threads: int) -> dict[str, dict]:
    """Interleaved batch-1 timing of each bundle's deployment compile (the profile's performance hint)."""
    import time

    import numpy as np

    from edgepack.artifact import Artifact
    from edgepack.backends import registry
    from edgepack.feeds import load_npz

    runners, feeds = {}, {}
    for key, path in bundles.items():
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        art = Artifact.model_validate(manifest["artifact"])
        r = registry.get(art.backend).runner(art, Path(path), threads=threads)
        r.activate()
        runners[key] = r
        feeds[key] = {k: v[:1] for k, v in load_npz(Path(path) / "golden" / "inputs.npz").items()}
    times: dict[str, list[float]] = {k: [] for k in bundles}
    for key, r in runners.items():  # warm-up
        for _ in range(20):
            r.infer_for_latency(feeds[key])
    for _ in range(rounds):
        for key, r in runners.items():
            for _ in range(block):
                t0 = time.perf_counter()
                r.infer_for_latency(feeds[key])
                times[key].append((time.perf_counter() - t0) * 1000)
    out = {}
    for key, r in runners.items():
        t = np.asarray(times[key])
        out[key] = {"p50_ms": float(np.median(t)), "min_ms": float(t.min()), "samples": len(t),
                    "inference_precision": r.facts["inference_precision"],
                    "execution_devices": r.facts["execution_devices"], "int8_runtime_ops": r.facts["int8_runtime_ops"]}
        r.deactivate()
    return out


def row(model: str, label: str, rep, fp32_size: int | None) -> dict:
    """One CSV row from a TargetReport (its ``artifact`` holds the converter's details)."""
    m = next(iter(rep.parity.metrics.values()))
    info = rep.artifact
    ac = info.get("accuracy_control") or {}
    size = rep.size_bytes
    return {
        "model": model, "target": label, "status": rep.status, "size_bytes": size,
        "size_ratio_vs_fp32": round(size / fp32_size, 3) if fp32_size else 1.0,
        "ref_accuracy": m.get("reference_accuracy"), "bundle_accuracy": m.get("bundle_accuracy"),
        "accuracy_drop_points": None if m.get("accuracy_drop") is None else round(100 * m["accuracy_drop"], 2),
        "top1_agreement": m.get("top1_agreement"), "cosine": round(m["cosine"], 6),
        "int8_runtime_ops": info.get("int8_runtime_ops", ""),
        "quantized_compute_ops": f"{info['quantized_compute_ops']}/{info['compute_ops']}"
        if "quantized_compute_ops" in info else "",
        "settings": ", ".join(f"{k}={info[k]}" for k in ("preset", "target_device", "fast_bias_correction")
                              if k in info),
        "acc_control": (f"{ac['metric']} fp32 {ac['fp32_metric']:.4f} / plain {ac['plain_int8_metric']:.4f} / "
                        f"final {ac['final_metric']:.4f}, reverted {ac['reverted_to_float']}") if ac else "",
        "host_p50_ms": round(rep.latency.p50_ms, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ov-bench")
    ap.add_argument("--models", nargs="+", default=["cnn", "dwcnn", "resnet"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=40)
    ap.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "openvino.csv")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    defaults = args.work / "openvino-int8-nncf-defaults.toml"
    defaults.write_text(DEFAULTS_PROFILE)
    rows: list[dict] = []
    latency: dict[str, dict] = {}
    for name in args.models:
        onnx = ensure_model(name, args.work)
        targets = list(SHIPPED) + [str(defaults)] if name != "resnet" else [SHIPPED[0], SHIPPED[2]]
        results = pipeline.build(str(onnx), targets, out=args.work / "dist", calibration="digits",
                                 progress=lambda s: print("  ", s, flush=True))
        fp32 = next(r for r in results if r.target == SHIPPED[0]).size_bytes
        for r in results:
            rows.append(row(name, r.target, r, fp32))
        if name == "resnet":
            paths = {r.target: r.bundle for r in results}
            latency = run_isolated(_latency_worker, paths, args.rounds, args.block, 1, what="latency benchmark")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ["model", "target", "status", "size_ratio_vs_fp32", "ref_accuracy", "bundle_accuracy",
            "accuracy_drop_points", "top1_agreement", "int8_runtime_ops", "settings", "acc_control"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    if latency:
        f32, i8 = latency[SHIPPED[0]], latency[SHIPPED[2]]
        print(f"\nresnet batch 1, 1 thread, interleaved {args.rounds}x{args.block}: fp32 p50 {f32['p50_ms']:.3f} ms "
              f"({f32['inference_precision']}), int8 p50 {i8['p50_ms']:.3f} ms ({i8['int8_runtime_ops']} int8 ops) "
              f"→ INT8/FP32 = {i8['p50_ms'] / f32['p50_ms']:.3f} (goal ≤ 0.55)")
        (args.csv.with_name("openvino-latency.json")).write_text(json.dumps(latency, indent=2) + "\n")
    print(f"\nrows: {args.csv}")


if __name__ == "__main__":
    main()

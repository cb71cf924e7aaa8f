"""Side-by-side benchmark of every available backend × precision on an example model, in one run.

    python benchmarks/bench.py --model cnn                 # digits CNN: accuracy, agreement, size ratios
    python benchmarks/bench.py --model resnet --threads 1  # ResNet-shaped: INT8/FP32 latency ratios

For each target profile whose backend is installed it builds a bundle (through the same pipeline as
`edgepack build`), then times every bundle's host runner and the reference runtime (onnxruntime on the fp32
ONNX export) interleaved in one process at batch 1: medians of many runs, so ratios are measured side by side
on the same machine state. Prints size ratio vs the backend's fp32 bundle, latency ratios vs that fp32 bundle
and vs the reference, build time, and parity on the digits holdout split. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _train(model: str, out: Path, epochs: int) -> Path:
    weights = out / f"{model}.pt"
    if not weights.is_file():
        subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", model, "--epochs",
                        str(epochs), "--onnx", "--out", str(out)], check=True)
    return weights


def _time_interleaved(runners: dict[str, object], feed: dict, repeats: int, warmup: int = 10) -> dict[str, float]:
    for r in runners.values():
        for _ in range(warmup):
            r.infer(feed)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r.infer(feed)
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


class _Reference:
    """onnxruntime on the fp32 ONNX export (what 'the reference runtime' means in the ratios)."""

    def __init__(self, path: Path, threads: int) -> None:
        from edgepack.sources.onnx import session

        self.sess = session(str(path), threads, optimize=True)
        self.names = [o.name for o in self.sess.get_outputs()]

    def infer(self, feed):
        return self.sess.run(self.names, feed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("cnn", "dwcnn", "resnet"), default="cnn")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 12; resnet 4)")
    ap.add_argument("--backends", default="", help="comma-separated backends (default: every installed one)")
    ap.add_argument("--targets", default="", help="comma-separated target profiles (default: all of those backends)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()

    from edgepack import pipeline
    from edgepack.backends import registry
    from edgepack.bundle import read_manifest
    from edgepack.config import available_targets, load_profile
    from edgepack.feeds import load_npz
    from edgepack.signature import TensorSpec

    out = args.out / args.model
    out.mkdir(parents=True, exist_ok=True)
    weights = _train(args.model, out, args.epochs or (4 if args.model == "resnet" else 12))
    wanted_backends = set(filter(None, args.backends.split(","))) or set(registry.names())
    wanted_targets = set(filter(None, args.targets.split(",")))
    profiles = []
    from edgepack.errors import EdgepackError

    for name in available_targets():
        try:
            p = load_profile(name)
        except EdgepackError as e:
            print(f"skip {name}: {e.message}")
            continue
        if p.backend in wanted_backends and (not wanted_targets or name in wanted_targets):
            if registry.get(p.backend).missing():
                print(f"skip {name}: {p.backend} not installed")
                continue
            profiles.append(p)
    rows = []
    for p in profiles:
        t0 = time.perf_counter()
        try:
            [res] = pipeline.build(f"{REPO}/examples/digits.py:make_{args.model}", [p.path], weights=str(weights),
                                   inputs=(TensorSpec("input", (1, 1, 32, 32)),), out=out / "dist")
        except Exception as e:  # noqa: BLE001 - a benchmark reports failures and goes on
            print(f"{p.name}: build failed: {e}")
            continue
        m = next(iter((res.parity.metrics if res.parity else {}).values()), {})
        rows.append({"target": p.name, "backend": p.backend, "device": p.device, "precision": p.precision,
                     "bundle": str(res.bundle),
                     "size_bytes": res.size_bytes, "build_s": res.build_time_s or time.perf_counter() - t0,
                     "accuracy": m.get("bundle_accuracy"), "reference_accuracy": m.get("reference_accuracy"),
                     "agreement": m.get("top1_agreement"), "cosine": m.get("cosine"), "status": res.status})
    # Latency: every runner that can run here, interleaved in this one process.
    feeds = None
    runners: dict[str, object] = {}
    for row in rows:
        b = Path(row["bundle"])
        manifest = read_manifest(b)
        feeds = feeds or {k: v[:1] for k, v in load_npz(b / manifest.golden.inputs).items()}
        try:
            r = registry.get(row["backend"]).runner(manifest.artifact, b, threads=args.threads)
            r.activate()
            runners[row["target"]] = r
        except Exception as e:  # noqa: BLE001 - e.g. Core ML has no runtime here
            row["latency_note"] = f"not timed: {type(e).__name__}: {str(e)[:80]}"
    onnx_ref = out / f"{args.model}.onnx"
    if onnx_ref.is_file():
        runners["reference (onnxruntime fp32)"] = _Reference(onnx_ref, args.threads)
    med = _time_interleaved(runners, feeds, args.repeats) if runners and feeds else {}
    ref_ms = med.get("reference (onnxruntime fp32)")
    fp32 = {(r["backend"], r["device"]): r for r in rows if r["precision"] == "fp32"}  # baseline per device class
    print(f"\nmodel {args.model}, batch 1, {args.threads} thread(s), median of {args.repeats} interleaved runs\n")
    hdr = f"{'target':<24}{'size KB':>10}{'size×fp32':>11}{'p50 ms':>9}{'lat×fp32':>10}{'lat×ref':>9}" \
          f"{'build s':>9}{'acc':>8}{'agree':>8}"
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        base = fp32.get((row["backend"], row["device"]))
        row["latency_ms"] = med.get(row["target"])
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"] if base else None
        row["latency_ratio"] = (row["latency_ms"] / med[base["target"]]
                                if base and row["latency_ms"] and base["target"] in med else None)
        row["latency_vs_reference"] = row["latency_ms"] / ref_ms if row["latency_ms"] and ref_ms else None

        def f(v, fmt):
            return format(v, fmt) if v is not None else "—"

        print(f"{row['target']:<24}{row['size_bytes'] / 1024:>10.1f}{f(row['size_ratio'], '.3f'):>11}"
              f"{f(row['latency_ms'], '.3f'):>9}{f(row['latency_ratio'], '.3f'):>10}"
              f"{f(row['latency_vs_reference'], '.3f'):>9}{row['build_s']:>9.1f}"
              f"{f(row['accuracy'], '.4f'):>8}{f(row['agreement'], '.4f'):>8}"
              + (f"  {row['latency_note']}" if row.get("latency_note") else ""))
    if ref_ms:
        print(f"{'reference (onnxruntime fp32)':<24}{'':>10}{'':>11}{ref_ms:>9.3f}")
    for r in runners.values():
        if hasattr(r, "deactivate"):
            r.deactivate()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""TFLite rows: size ratio, INT8/FP32 host latency ratio, build time and accuracy on the digits example.

Builds the digits CNN from PyTorch (litert-torch) and from Keras (.keras) for every android-tflite-* target, then
prints one row per bundle and writes the figures as JSON. The PyTorch route converts with litert-torch once per
build (the tflite worker caches the float result; ``fp32_conversion_reused`` marks the targets that reused it). Latency is measured on the build host (XNNPACK, batch 1,
1 thread): it is labelled ``host`` and is not a phone number.

    python benchmarks/bench_tflite.py --torch-weights /tmp/ex/cnn.pt --keras /tmp/exk/cnn.keras --out /tmp/bench
    python benchmarks/bench_tflite.py --out /tmp/bench          # trains both models first (~3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ["android-tflite-fp32", "android-tflite-fp16", "android-tflite-int8", "android-tflite-int8-dynamic"]


def _rows(results, route: str) -> list[dict]:
    """One row per TargetReport (its ``artifact`` holds the converter's details)."""
    rows = []
    by_precision = {r.precision: r for r in results if r.status != "skipped"}
    fp32 = by_precision.get("fp32")
    for rep in results:
        metrics = next(iter(rep.parity.metrics.values()))
        info = rep.artifact
        row = {
            "route": route, "target": rep.target, "precision": rep.precision, "status": rep.status,
            "size_bytes": rep.size_bytes, "build_s": rep.build_time_s,
            "host_p50_ms": rep.latency.p50_ms if rep.latency else None,
            "accuracy": metrics.get("bundle_accuracy"), "reference_accuracy": metrics.get("reference_accuracy"),
            "top1_agreement": metrics.get("top1_agreement"), "cosine": metrics.get("cosine"),
            "quantized_share": info.get("quantized_share"),
            "int8_weight_bytes": info.get("weight_bytes", {}).get("INT8"),
            "fp32_conversion_reused": any("float conversion reused" in n for n in rep.notes),
        }
        if fp32:
            row["size_ratio_vs_fp32"] = rep.size_bytes / fp32.size_bytes
            if rep.latency and fp32.latency:
                row["latency_ratio_vs_fp32"] = rep.latency.p50_ms / fp32.latency.p50_ms
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-weights", type=Path, help="state dict of examples/digits.py:make_cnn (else trained)")
    ap.add_argument("--keras", type=Path, help="examples/digits_keras.py model (.keras; else trained)")
    ap.add_argument("--out", type=Path, default=Path("dist/bench-tflite"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if args.torch_weights is None:
        subprocess.run([py, str(REPO / "examples" / "digits.py"), "--model", "cnn", "--out", str(args.out)], check=True)
        args.torch_weights = args.out / "cnn.pt"
    if args.keras is None:
        subprocess.run([py, str(REPO / "examples" / "digits_keras.py"), "--out", str(args.out)], check=True)
        args.keras = args.out / "cnn.keras"

    from edgepack import pipeline
    from edgepack.signature import TensorSpec

    rows = []
    t0 = time.perf_counter()
    torch_results = pipeline.build(f"{REPO / 'examples' / 'digits.py'}:make_cnn", TARGETS, calibration="digits",
                                   weights=str(args.torch_weights), inputs=(TensorSpec("input", (1, 1, 32, 32)),),
                                   out=args.out / "torch")
    rows += _rows(torch_results, "pytorch (litert-torch + ai-edge-quantizer)")
    keras_results = pipeline.build(str(args.keras), TARGETS, calibration="digits-nhwc", out=args.out / "keras")
    rows += _rows(keras_results, "keras (TFLiteConverter)")
    total = time.perf_counter() - t0
    head = f"{'route':44} {'precision':13} {'status':7} {'KB':>8} {'×fp32':>6} {'p50 ms':>7} {'×fp32':>6} " \
           f"{'build s':>7} {'acc':>7} {'agree':>7} {'q-share':>7}"
    print(head)
    print("-" * len(head))

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    for r in rows:
        print(f"{r['route']:44} {r['precision']:13} {r['status']:7} {r['size_bytes'] / 1024:8.1f} "
              f"{fmt(r.get('size_ratio_vs_fp32'), '6.3f')} {fmt(r['host_p50_ms'], '7.3f')} "
              f"{fmt(r.get('latency_ratio_vs_fp32'), '6.2f')} {r['build_s']:7.1f} {fmt(r['accuracy'], '7.4f')} "
              f"{fmt(r['top1_agreement'], '7.4f')} {fmt(r['quantized_share'], '7.2f')}")
    for r in rows:
        if r["precision"] == "int8" and r.get("int8_weight_bytes"):
            floor = r["int8_weight_bytes"] / next(x["size_bytes"] for x in rows
                                                  if x["route"] == r["route"] and x["precision"] == "fp32")
            print(f"{r['route']}: int8 size floor (params × 1 byte) = {floor:.3f} × fp32; "
                  f"measured {r['size_ratio_vs_fp32']:.3f} ×")
    out = args.out / "bench_tflite.json"
    out.write_text(json.dumps({"rows": rows, "total_s": total, "latency_where": "host"}, indent=2))
    print(f"figures: {out} (total {total:.0f} s; latency measured on this host, not a phone)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Probe an OpenVINO bundle on the CPU this interpreter runs on (e.g. the arm64-emu device under a given qemu -cpu):
compile the bundle's IR with an explicit inference precision (or the plugin's default), run the first N golden
inputs one by one, and print one JSON line: the CPU features the process sees (AT_HWCAP/AT_HWCAP2, SVE vector
length), the precision that actually ran, and the agreement with the golden outputs (cosine, top-1).

Needs numpy + openvino only (it runs under the device's Python). Evidence for docs/devices/openvino-arm64.md:

    EDGEPACK_QEMU_CPU=max ~/.cache/edgepack/devices/arm64-emu/bin/python3 scripts/openvino_arm64_probe.py \
        dist/make_cnn/intel-openvino-int8 --precision f16 -n 64
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

HWCAP = {9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}


def cpu_features() -> dict:
    """What the kernel (or qemu-user) tells this process about the CPU: the aux vector's HWCAP bits and SVE length."""
    out: dict = {"machine": platform.machine()}
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return out
    if out["machine"] not in ("aarch64", "arm64"):
        return out
    aux = dict(struct.iter_unpack("QQ", raw[: len(raw) // 16 * 16]))
    hw, hw2 = aux.get(16, 0), aux.get(26, 0)
    out["hwcap"] = sorted([n for b, n in HWCAP.items() if hw >> b & 1] + [n for b, n in HWCAP2.items() if hw2 >> b & 1])
    if hw >> 22 & 1:
        try:
            libc = ctypes.CDLL(None)
            vl = libc.prctl(51, 0, 0, 0, 0)  # PR_SVE_GET_VL: vector length in bytes (low 16 bits)
            out["sve_vector_bits"] = (vl & 0xFFFF) * 8 if vl >= 0 else None
        except OSError:
            pass
    return out


def fp16_selftest(out: Path) -> None:
    """IEEE half-precision arithmetic of this CPU (or of qemu's emulation of it) on 200,000 seeded operands per op,
    saved for a bit-for-bit comparison with another machine's file."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(200_000) * 4).astype(np.float16)
    b = (rng.standard_normal(200_000) * 4).astype(np.float16)
    with np.errstate(all="ignore"):  # overflow to inf is part of the test
        ops = {"add": a + b, "mul": a * b, "div": a / b, "sqrt": np.sqrt(np.abs(a))}
    np.savez(out, **ops,
             cvt=(rng.standard_normal(200_000) * 100).astype(np.float32).astype(np.float16))
    print(json.dumps({"fp16_selftest": str(out), **cpu_features()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, nargs="?")
    ap.add_argument("--fp16-selftest", type=Path, metavar="OUT.npz", help="only write the fp16 arithmetic self-test")
    ap.add_argument("--precision", default="default", help="f32, f16, bf16 or default (the plugin's own choice)")
    ap.add_argument("-n", type=int, default=64, help="golden samples to run")
    ap.add_argument("--threads", type=int, default=1, help="INFERENCE_NUM_THREADS; 0 = the plugin's default")
    ap.add_argument("--hint", default="LATENCY", help="PERFORMANCE_HINT (LATENCY, THROUGHPUT) or none")
    ap.add_argument("--kernels", action="store_true", help="also list the kernels the CPU plugin picked per layer "
                    "type (the compiled model's execution graph: layerType → primitiveType)")
    args = ap.parse_args()
    if args.fp16_selftest:
        fp16_selftest(args.fp16_selftest)
        return 0
    import openvino as ov

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    xml = args.bundle / ((manifest["artifact"].get("runtime") or {}).get("model") or "ir/model.xml")
    core = ov.Core()
    cfg: dict = {}
    if args.threads > 0:
        cfg["INFERENCE_NUM_THREADS"] = args.threads
    if args.hint != "none":
        cfg["PERFORMANCE_HINT"] = args.hint
    if args.precision != "default":
        cfg["INFERENCE_PRECISION_HINT"] = args.precision
    t0 = time.monotonic()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", cfg)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    threads = compiled.get_property("INFERENCE_NUM_THREADS")
    streams = compiled.get_property("NUM_STREAMS")
    x = dict(np.load(args.bundle / manifest["golden"]["inputs"]))
    y = dict(np.load(args.bundle / manifest["golden"]["outputs"]))
    name_in, name_out = next(iter(x)), next(iter(y))
    n = min(args.n, len(x[name_in]))
    req = compiled.create_infer_request()
    outs = np.concatenate([np.array(req.infer({0: x[name_in][i:i + 1]})[0]).reshape(1, -1) for i in range(n)])
    ref = y[name_out][:n].reshape(n, -1).astype(np.float64)
    o = outs.astype(np.float64)
    cos = (o * ref).sum(1) / (np.linalg.norm(o, axis=1) * np.linalg.norm(ref, axis=1) + 1e-30)
    kernels: dict = {}
    if args.kernels:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            prim = info["primitiveType"].astype(str) if "primitiveType" in info else "?"
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            if layer not in ("Parameter", "Result", "Const", "Input", "Output"):
                kernels.setdefault(f"{layer}", set()).add(f"{prim}/{prec}")
        kernels = {k: sorted(v) for k, v in sorted(kernels.items())}
    print(json.dumps({
        **({"kernels": kernels} if kernels else {}),
        "bundle": args.bundle.name, "openvino": ov.__version__, **cpu_features(),
        "asked": args.precision, "ran": ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran),
        "threads": int(threads), "streams": int(streams.to_integer() if hasattr(streams, "to_integer") else streams),
        "n": n, "cosine_mean": round(float(cos.mean()), 5), "cosine_p1": round(float(np.percentile(cos, 1)), 5),
        "cosine_min": round(float(cos.min()), 5),
        "top1_agreement": round(float(np.mean(o.argmax(1) == ref.argmax(1))), 4),
        "max_abs_error": round(float(np.abs(o - ref).max()), 5), "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

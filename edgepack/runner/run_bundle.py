#!/usr/bin/env python3
"""Run this edgepack bundle on the device it sits on and check it against its golden outputs.

Needs only numpy and the bundle's runtime (onnxruntime, openvino, ai_edge_litert/tflite_runtime, or coremltools
on macOS) — no torch, no TensorFlow, no edgepack. Prints a JSON verdict on stdout.

    python run_bundle.py [--bundle DIR] [--repeats 50] [--warmup 5] [--threads 1] [--no-verify]

Exit codes: 0 parity (and integrity) passed, 1 a check failed, 2 the runtime is missing or the bundle unreadable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _integrity(bundle: Path, manifest: dict) -> list[str]:
    problems = []
    for e in manifest["files"]:
        p = bundle / e["path"]
        if not p.is_file():
            problems.append(f"missing: {e['path']}")
        elif _sha256(p) != e["sha256"]:
            problems.append(f"content changed: {e['path']}")
    return problems


# ------------------------------------------------------------------------------------- runtimes
# Each loader returns (infer(feed) -> {name: array}, facts). Feeds/outputs are in the reference model's layout.


def _load_ort(bundle: Path, art: dict, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / art["primary"]), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return (lambda feed: dict(zip(names, sess.run(names, feed)))), {"runtime": f"onnxruntime {ort.__version__}"}


def _load_openvino(bundle: Path, art: dict, threads: int):
    """OpenVINO IR on the CPU plugin (OPENVINO_DEVICE=GPU/NPU to try another), f32 inference precision forced."""
    import os

    import openvino as ov

    device = os.environ.get("OPENVINO_DEVICE", "CPU")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(bundle / art["primary"] / "model.xml")), device, config)
    request = compiled.create_infer_request()
    in_names = [t["name"] for t in art["inputs"]]
    out_names = [t["name"] for t in art["outputs"]]

    def infer(feed):
        res = request.infer({n: np.ascontiguousarray(feed[n]) for n in in_names})
        return {n: np.array(res[compiled.output(n)]) for n in out_names}

    facts = {"runtime": f"openvino {ov.__version__}", "device": device}
    for key, prop in (("inference_precision", "INFERENCE_PRECISION_HINT"), ("execution_devices", "EXECUTION_DEVICES")):
        try:
            value = compiled.get_property(prop)
            if isinstance(value, (list, tuple)):
                facts[key] = list(value)
            else:
                facts[key] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except RuntimeError:  # not every plugin reports every property
            pass
    return infer, facts


def _load_tflite(bundle: Path, art: dict, threads: int):
    """LiteRT (ai_edge_litert, else tflite_runtime) with XNNPACK; transposes NHWC I/O and (de)quantizes int I/O."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        runtime = "ai_edge_litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
        runtime = "tflite_runtime"
    io = art["info"]["io"]
    it = Interpreter(model_path=str(bundle / art["primary"]), num_threads=threads)
    sig = it.get_signature_runner(io.get("signature", "serving_default"))
    ins = list(zip([t["name"] for t in art["inputs"]], io["inputs"]))
    outs = list(zip([t["name"] for t in art["outputs"]], io["outputs"]))

    def infer(feed):
        args = {}
        for name, rec in ins:
            x = np.asarray(feed[name])
            if rec.get("transpose"):
                x = np.moveaxis(x, 1, -1)
            if rec["dtype"] in ("int8", "uint8", "int16") and rec.get("scale"):
                info = np.iinfo(rec["dtype"])
                x = np.clip(np.round(x / rec["scale"]) + rec["zero_point"], info.min, info.max)
            args[rec["tflite_name"]] = np.ascontiguousarray(x.astype(rec["dtype"]))
        got = sig(**args)
        result = {}
        for name, rec in outs:
            y = np.asarray(got[rec["tflite_name"]])
            if rec["dtype"] in ("int8", "uint8", "int16") and rec.get("scale"):
                y = (y.astype(np.float32) - rec["zero_point"]) * np.float32(rec["scale"])
            result[name] = np.moveaxis(y, -1, 1) if rec.get("transpose") else y
        return result

    return infer, {"runtime": runtime, "threads": threads}


def _load_coreml(bundle: Path, art: dict, threads: int):  # noqa: ARG001 - Core ML picks its own threads
    """Core ML through coremltools' MLModel.predict: macOS only (on a phone the app runs the .mlpackage)."""
    if platform.system() != "Darwin":
        raise ImportError("Core ML models run only on macOS/iOS; parity on Linux is edgepack's build-time evaluator")
    import coremltools as ct

    model = ct.models.MLModel(str(bundle / art["primary"]))
    in_names = [t["name"] for t in art["inputs"]]

    def infer(feed):
        outs = [model.predict({n: feed[n][i:i + 1] for n in in_names}) for i in range(len(feed[in_names[0]]))]
        return {t["name"]: np.concatenate([np.asarray(o[t["name"]]) for o in outs]) for t in art["outputs"]}

    return infer, {"runtime": f"coremltools {ct.__version__} (MLModel.predict)"}


LOADERS = {"ort_mobile": _load_ort, "openvino": _load_openvino, "tflite": _load_tflite, "coreml": _load_coreml}


# ------------------------------------------------------------------------------------- checks


def _metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    d = np.abs(ref - got)
    denom = float(np.linalg.norm(ref) * np.linalg.norm(got))
    m = {"max_abs_error": float(d.max()), "cosine": float((ref.ravel() @ got.ravel()) / denom) if denom else 1.0}
    if ref.ndim == 2 and ref.shape[1] > 1:
        m["top1_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
    return m


def _checks(metrics: dict, limits: dict) -> list[dict]:
    rows = []
    for out, m in metrics.items():
        for key, metric, better in (("max_abs_error", "max_abs_error", "le"), ("min_cosine", "cosine", "ge"),
                                    ("min_top1_agreement", "top1_agreement", "ge")):
            lim = limits.get(key)
            if lim is None or metric not in m:
                continue
            ok = m[metric] <= lim if better == "le" else m[metric] >= lim
            rows.append({"name": f"{key}[{out}]", "limit": lim, "measured": m[metric], "passed": bool(ok)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-verify", action="store_true", help="skip the sha256 integrity check")
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(json.dumps({"passed": False, "error": f"cannot read manifest: {e}"}))
        return 2
    art = manifest["artifact"]
    result: dict = {"bundle": str(bundle), "target": manifest["target"]["name"], "backend": art["backend"],
                    "host": f"{platform.system()} {platform.machine()} {platform.node()}"}
    problems = [] if args.no_verify else _integrity(bundle, manifest)
    result["integrity"] = {"passed": not problems, "problems": problems}
    loader = LOADERS.get(art["backend"])
    try:
        if loader is None:
            raise ImportError(f"this runner has no loader for backend '{art['backend']}'")
        infer, facts = loader(bundle, art, args.threads)
    except ImportError as e:
        result.update(passed=False, error=f"runtime unavailable: {e}")
        print(json.dumps(result, indent=2))
        return 2
    result["runtime"] = facts
    with np.load(bundle / manifest["golden"]["inputs"], allow_pickle=False) as z:
        inputs = {k: z[k] for k in z.files}
    with np.load(bundle / manifest["golden"]["outputs"], allow_pickle=False) as z:
        golden = {k: z[k] for k in z.files}
    n = len(next(iter(inputs.values())))
    batch = art["inputs"][0]["shape"][0] if art["inputs"] and art["inputs"][0]["shape"] else None
    step = n if batch is None else batch
    outs: dict[str, list] = {}
    for s in range(0, n, step):
        part = {k: v[s:s + step] for k, v in inputs.items()}
        got = len(next(iter(part.values())))
        if batch is not None and got < batch:
            part = {k: np.concatenate([v] + [v[-1:]] * (batch - got)) for k, v in part.items()}
        for k, v in infer(part).items():
            outs.setdefault(k, []).append(np.asarray(v)[:got])
    outputs = {k: np.concatenate(v) for k, v in outs.items()}
    metrics = {k: _metrics(golden[k], outputs[k]) for k in golden if k in outputs}
    missing = [k for k in golden if k not in outputs]
    checks = _checks(metrics, manifest.get("parity_limits", {}))
    one = {k: v[:1] if batch in (None, 1) else v[:batch] for k, v in inputs.items()}
    for _ in range(args.warmup):
        infer(one)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        infer(one)
        times.append((time.perf_counter() - t0) * 1000)
    result["latency_ms"] = {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}
    result["parity"] = {"samples": n, "metrics": metrics, "checks": checks, "missing_outputs": missing}
    result["passed"] = bool(not problems and not missing and all(c["passed"] for c in checks))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

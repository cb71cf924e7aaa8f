"""LiteRT device loader (numpy + ai_edge_litert/tflite_runtime only; shipped in every tflite bundle as
runner/device.py). The edgepack host runner runs this same function, so host and device share one code path.

The interpreter (XNNPACK on) runs the runtime spec's signature; each I/O record (``tflite_name``, ``dtype``,
``scale``, ``zero_point``, ``transpose``) tells how the reference model's arrays are (de)quantized and transposed
at the edges: ``infer`` takes and returns arrays in the reference layout and dtype, keyed by reference names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIGNATURE_KEY = "serving_default"
INT_IO = ("int8", "uint8", "int16")


# ------------------------------------------------------------------------------------------ edges


def to_file_layout(arr: np.ndarray) -> np.ndarray:
    """(N, C, ...) → (N, ..., C)."""
    return np.ascontiguousarray(np.moveaxis(arr, 1, -1))


def from_file_layout(arr: np.ndarray) -> np.ndarray:
    """(N, ..., C) → (N, C, ...)."""
    return np.ascontiguousarray(np.moveaxis(arr, -1, 1))


def quantize(arr: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(arr / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(arr: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((arr.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)


def _quantized(rec: dict) -> bool:
    return rec["dtype"] in INT_IO and bool(rec.get("scale"))


# ------------------------------------------------------------------------------------------ loader


def _interpreter():
    """(Interpreter class, import name, distribution name); ImportError when no LiteRT runtime is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert", "ai-edge-litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter

            return Interpreter, "tflite_runtime", "tflite-runtime"
        except ImportError:
            raise ImportError("no LiteRT runtime here (pip install ai-edge-litert)") from None


def _version(module: str, dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        import importlib

        return str(getattr(importlib.import_module(module), "__version__", "?"))


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    """``(infer, facts)`` for the bundle's .tflite model; ImportError when the runtime (or the Flex delegate the
    model's Select-TF ops need) is missing here."""
    Interpreter, module, dist = _interpreter()
    try:
        interp = Interpreter(model_path=str(Path(bundle) / artifact["primary"]), num_threads=threads)
        sig = interp.get_signature_runner(runtime.get("signature") or SIGNATURE_KEY)
    except (RuntimeError, ValueError) as e:
        if runtime.get("flex_ops"):
            raise ImportError(f"this LiteRT build has no Flex delegate for the model's Select-TF ops ({e})") from None
        raise
    ins = list(zip([t["name"] for t in artifact["inputs"]], runtime["inputs"]))
    outs = list(zip([t["name"] for t in artifact["outputs"]], runtime["outputs"]))

    def infer(feed: dict) -> dict:
        args = {}
        for name, rec in ins:
            x = np.asarray(feed[name])
            if rec.get("transpose"):
                x = to_file_layout(x)
            if _quantized(rec):
                x = quantize(x, rec["dtype"], rec["scale"], rec["zero_point"])
            else:
                x = x.astype(rec["dtype"], copy=False)
            args[rec["tflite_name"]] = np.asarray(x, order="C")
        got = sig(**args)
        result = {}
        for name, rec in outs:
            y = np.asarray(got[rec["tflite_name"]])
            if _quantized(rec):
                y = dequantize(y, rec["scale"], rec["zero_point"])
            result[name] = from_file_layout(y) if rec.get("transpose") else y
        return result

    facts = {"runtime": f"{module} {_version(module, dist)}", "delegate": "?", "delegated_partitions": None,
             "threads": threads}

    def census() -> None:
        """LiteRT applies XNNPACK when the signature first runs: count the delegated partitions then."""
        try:
            n = sum(1 for d in interp._get_ops_details() if d.get("op_name") == "DELEGATE")  # noqa: SLF001
        except Exception:  # noqa: BLE001 - a private API; older runtimes may lack it
            return
        facts.update(delegate="XNNPACK" if n else "none", delegated_partitions=n)

    first = [True]

    def infer_counted(feed: dict) -> dict:
        out = infer(feed)
        if first[0]:
            first[0] = False
            census()
        return out

    census()
    return infer_counted, facts

"""TensorRT device loader (numpy + the ``tensorrt`` package + the CUDA runtime through ctypes; no torch, no pycuda).
Shipped in every tensorrt bundle as ``runner/device.py`` and run by ``run_bundle.py`` on the Jetson.

The engine lives outside the bundle (whose files are signed), in an engine cache keyed by TensorRT version, SM and
bundle hash (``$EDGEPACK_ENGINE_CACHE``, default ``~/.cache/edgepack/engines``): where ``build_engine.sh`` /
``build_engine.py`` put it, or built there with the bundle's ``build_engine.py`` the first time. A ``model.engine`` +
``engine.json`` in the bundle folder is used as is (then run ``run_bundle.py --no-verify``). Before a plan is deserialized, the
versions its ``engine.json`` records (TensorRT, SM, L4T) are compared with the live device's: a mismatch is refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

H2D, D2H = 1, 2


class Cuda:
    """The few CUDA runtime calls the loader needs, through ctypes."""

    def __init__(self) -> None:
        lib = None
        for name in filter(None, [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.12",
                                  "libcudart.so.11.0"]):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise ImportError("the CUDA runtime (libcudart) is not available")
        self.lib = lib
        self.stream = ctypes.c_void_p()
        self._ok(lib.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with CUDA error {status}")

    def sm(self) -> int:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0), "cudaDeviceGetAttribute")
        self._ok(self.lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0), "cudaDeviceGetAttribute")
        return major.value * 10 + minor.value

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        self._ok(self.lib.cudaMemcpy(ctypes.c_void_p(ptr), array.ctypes.data_as(ctypes.c_void_p),
                                     ctypes.c_size_t(array.nbytes), H2D), "cudaMemcpy H2D")

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        self._ok(self.lib.cudaMemcpy(array.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(ptr),
                                     ctypes.c_size_t(array.nbytes), D2H), "cudaMemcpy D2H")

    def sync(self) -> None:
        self._ok(self.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


def l4t_release() -> str | None:
    try:
        text = Path("/etc/nv_tegra_release").read_text()
    except OSError:
        return None
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def mismatches(record: dict, live: dict) -> list[str]:
    """What differs between the versions a plan was built with and the live device (unknowns are not compared)."""
    out = []
    for key in ("tensorrt", "sm", "l4t"):
        built, here = record.get(key), live.get(key)
        if built is None or here is None:
            continue
        if key == "tensorrt":
            built, here = ".".join(str(built).split(".")[:3]), ".".join(str(here).split(".")[:3])
        if str(built) != str(here):
            out.append(f"{key} {built} (plan) != {here} (device)")
    return out


def engine_files(bundle: Path, runtime: dict, trt_version: str, sm: int) -> tuple[Path, Path]:
    """The plan and its engine.json: the bundle's own, else the cache's (built there with build_engine.py)."""
    own = bundle / runtime["engine"]
    if own.is_file() and (bundle / runtime["engine_json"]).is_file():
        return own, bundle / runtime["engine_json"]
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("EDGEPACK_ENGINE_CACHE", Path.home() / ".cache" / "edgepack" / "engines"))
    folder = root / f"trt{'.'.join(trt_version.split('.')[:3])}-sm{sm}-{digest}"
    engine, record = folder / runtime["engine"], folder / runtime["engine_json"]
    if not (engine.is_file() and record.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, str(bundle / runtime["build_script"]), "--out", str(engine)],
                              capture_output=True, text=True, cwd=bundle)
        if proc.returncode != 0:
            raise RuntimeError(f"engine build failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-400:]}")
    return engine, record


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    """``(infer, facts)`` over the TensorRT engine; ImportError without tensorrt or a CUDA runtime."""
    import tensorrt as trt

    bundle = Path(bundle)
    cuda = Cuda()
    live = {"tensorrt": trt.__version__, "sm": cuda.sm(), "l4t": l4t_release()}
    engine_path, record_path = engine_files(bundle, runtime, trt.__version__, live["sm"])
    record = json.loads(record_path.read_text())
    bad = mismatches(record, live)
    if bad:
        raise RuntimeError(f"refused to deserialize {engine_path.name}: built for another device ({'; '.join(bad)})"
                           "; rebuild it with build_engine.sh on this device")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialize {engine_path}")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]

    def infer(feed: dict) -> dict:
        ptrs = []
        try:
            for n in inputs:
                x = np.ascontiguousarray(feed[n], dtype=trt.nptype(engine.get_tensor_dtype(n)))
                context.set_input_shape(n, x.shape)
                p = cuda.malloc(x.nbytes)
                ptrs.append(p)
                cuda.to_device(p, x)
                context.set_tensor_address(n, p)
            result, where = {}, {}
            for n in outputs:
                y = np.empty(tuple(context.get_tensor_shape(n)), dtype=trt.nptype(engine.get_tensor_dtype(n)))
                p = cuda.malloc(y.nbytes)
                ptrs.append(p)
                context.set_tensor_address(n, p)
                result[n], where[n] = y, p
            if not context.execute_async_v3(cuda.stream.value or 0):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            cuda.sync()
            for n in outputs:
                cuda.to_host(result[n], where[n])
            return {n: (v.astype(np.float32) if v.dtype == np.float16 else v) for n, v in result.items()}
        finally:
            for p in ptrs:
                cuda.free(p)

    facts = {"runtime": f"tensorrt {trt.__version__}", "where": "device engine", "sm": live["sm"],
             "l4t": live["l4t"], "engine": str(engine_path), "built_with": record.get("built_with"),
             "int8_fallback_layers": len(record.get("int8_fallback_layers", [])),
             "dla_gpu_fallback_layers": len(record.get("dla_gpu_fallback_layers", [])), "threads": threads}
    return infer, facts

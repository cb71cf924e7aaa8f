"""The device-side build: ``build_engine.sh`` (trtexec) and ``build_engine.py`` (TensorRT Python API), rendered
from ``scripts/*.in`` with the exact settings for the profile's TensorRT version. No framework import.

INT8 on the GPU builds from the explicit Q/DQ network (``model.qdq.onnx``): ``--stronglyTyped`` on TensorRT 10.x
(types come from the Q/DQ graph), ``--int8 --fp16`` on 8.x. INT8 on the DLA builds the float network with the
calibration cache (``--int8 --fp16 --calib``; implicit quantization, which is what DLA takes on 8.x).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from edgepack.backends.tensorrt.spec import (
    BUILD_PY,
    BUILD_SH,
    CACHE,
    ENGINE,
    ENGINE_JSON,
    MODEL,
    QDQ_MODEL,
    TensorRTOptions,
)

TEMPLATES = Path(__file__).with_name("scripts")


def _dims(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(d) for d in shape)


def plan(opts: TensorRTOptions, precision: str, shapes: dict[str, dict[str, list[int]]], target: str) -> dict[str, Any]:
    """Everything both scripts need, as data (also stored in the artifact details)."""
    int8 = precision == "int8"
    dla = opts.dla_core is not None
    trt10 = opts.trt_major >= 10
    explicit = int8 and not dla
    cfg: dict[str, Any] = {
        "target": target, "tensorrt": opts.tensorrt, "l4t": opts.l4t, "sm": opts.sm, "precision": precision,
        "onnx": QDQ_MODEL if explicit else MODEL, "calib": CACHE if int8 and dla else "", "engine": ENGINE,
        "engine_json": ENGINE_JSON, "int8": int8, "strongly_typed": explicit and trt10,
        "int8_flag": int8 and not (explicit and trt10), "fp16": precision == "fp16" or (int8 and not (explicit and trt10)),
        "dla_core": opts.dla_core, "gpu_fallback": opts.gpu_fallback, "workspace_mib": opts.workspace_mib,
        "shapes": shapes,
    }
    flags: list[str] = []
    if cfg["strongly_typed"]:
        flags.append("--stronglyTyped")
    if cfg["int8_flag"]:
        flags.append("--int8")
    if cfg["fp16"]:
        flags.append("--fp16")
    if shapes:
        for key, which in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            flags.append(f"{key}=" + ",".join(f"{n}:{_dims(s[which])}" for n, s in shapes.items()))
    flags.append(f"--memPoolSize=workspace:{opts.workspace_mib}")
    if dla:
        flags.append(f"--useDLACore={opts.dla_core}")
        if opts.gpu_fallback:
            flags.append("--allowGPUFallback")
    # build only: --skipInference from 8.6 on (trtexec 8.4/8.5 logs "Build only", the older spelling --buildOnly)
    build_only = "--buildOnly" if tuple(int(p) for p in opts.tensorrt.split(".")[:2]) < (8, 6) else "--skipInference"
    flags += ["--profilingVerbosity=detailed", build_only]
    cfg["trtexec_flags"] = flags
    calib = [f"--calib={cfg['calib']}"] if cfg["calib"] else []
    # $ENGINE_DIR: the engine cache folder on the device (outside the signed bundle; see build_engine.sh)
    cfg["command"] = " ".join(["trtexec", f"--onnx={cfg['onnx']}", f"--saveEngine=$ENGINE_DIR/{ENGINE}", *flags,
                                 "--timingCacheFile=$ENGINE_DIR/timing.cache",
                                 f"--exportLayerInfo=$ENGINE_DIR/{ENGINE}.layers.json", *calib])
    return cfg


def _fill(text: str, cfg: dict[str, Any]) -> str:
    dla = f", DLA core {cfg['dla_core']}" if cfg["dla_core"] is not None else ""
    for key, value in {"TARGET": cfg["target"], "TENSORRT": cfg["tensorrt"], "L4T": cfg["l4t"], "SM": str(cfg["sm"]),
                       "DLA_NOTE": dla, "ONNX": cfg["onnx"], "CALIB": cfg["calib"], "ENGINE": cfg["engine"],
                       "INT8": "1" if cfg["int8"] else "0",
                       "FLAGS": " ".join(shlex.quote(f) for f in cfg["trtexec_flags"])}.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def write(out_dir: Path, cfg: dict[str, Any]) -> list[str]:
    """Write build_engine.sh and build_engine.py into the bundle (executable)."""
    sh = out_dir / BUILD_SH
    sh.write_text(_fill((TEMPLATES / f"{BUILD_SH}.in").read_text(), cfg))
    py = out_dir / BUILD_PY
    config = {k: v for k, v in cfg.items() if k not in ("trtexec_flags", "command")}
    py.write_text((TEMPLATES / f"{BUILD_PY}.in").read_text().replace(
        "@@CONFIG@@", f"json.loads({json.dumps(config, sort_keys=True)!r})").replace("@@TARGET@@", cfg["target"]).replace(
        "@@TENSORRT@@", cfg["tensorrt"]).replace("@@L4T@@", cfg["l4t"]).replace("@@SM@@", str(cfg["sm"])))
    for p in (sh, py):
        p.chmod(0o755)
    return [BUILD_SH, BUILD_PY]

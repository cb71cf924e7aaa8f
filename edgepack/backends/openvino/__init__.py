"""OpenVINO: IR bundles (``ir/model.xml`` + ``ir/model.bin``) for Intel CPUs, iGPUs and NPUs, checked on the host CPU.

* Sources: ONNX and TensorFlow/Keras, converted with ``openvino.convert_model``. PyTorch sources reach this backend
  as the build's one shared torch → ONNX export (the pipeline bridges them): converting the ONNX file takes a few
  seconds where re-tracing the torch model took ~20 s per target.
* fp32: the converted IR, weights stored float32.
* fp16: weights stored float16 (``save_model(compress_to_fp16=True)``); I/O stays float32. The CPU plugin
  decompresses them and computes in f32, so fp16 halves the download, not the arithmetic.
* int8: NNCF post-training quantization on the recipe's calibration split (preset, subset size, bias correction,
  model type, ignored scope from ``[options]``; defaults are NNCF's own). When it misses the parity budget on the
  tuning split, the INT8 accuracy search (``[options.accuracy_search]``) tries NNCF's other recipes, then keeps the
  most sensitive layers in float (ignored scope), or runs NNCF accuracy control (``[options.accuracy_control]``) as
  that stage; both tune on the tuning split only (see ``quantize.py``). Fails when no compute op runs in int8 on the
  CPU plugin.
* App-ready: preprocessing (mean/scale, layout, colour order) and labels go into the IR's ``rt_info`` (the
  OpenVINO Model API ``model_info`` section, plus an ``edgepack`` section) — the manifest carries them too.

Files: ``spec.py`` (Options, RuntimeSpec), ``convert.py`` (worker: conversion, int8 check), ``ir.py`` (sources →
``ov.Model``, IR inspection, rt_info), ``quantize.py`` (NNCF), ``runner.py`` (host runner), ``device.py`` (the
bundle's loader). The host runner compiles twice: parity with the device loader's own compile
(``INFERENCE_PRECISION_HINT=f32``: no silent bf16/f16 on CPUs that have it), latency with the profile's performance
hint; the facts record what the plugin actually used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.base import Backend, Runner
from edgepack.backends.openvino.spec import (IR_DIR, XML, AccuracyControl, IgnoredScope, OpenVINOOptions,
                                             OpenVINORuntime)

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

__all__ = ["IR_DIR", "XML", "AccuracyControl", "IgnoredScope", "OpenVINOBackend", "OpenVINOOptions",
           "OpenVINORuntime"]


class OpenVINOBackend(Backend):
    name = "openvino"
    requires = ("openvino", "nncf")
    extra = "openvino"
    accepts = frozenset({"onnx", "tf"})  # torch: the pipeline's shared torch → ONNX export
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = OpenVINOOptions
    Runtime = OpenVINORuntime
    description = "OpenVINO IR (.xml + .bin) for Intel CPUs/iGPUs/NPUs on edge boxes and x86 gateways"

    def tunes_on_data(self, profile: "TargetProfile", options: OpenVINOOptions) -> bool:
        """The base default (calibrated int8 with ``options.accuracy_search`` enabled), or accuracy control, which
        measures its metric on the tuning split too (int8 only; other precisions ignore both). Never the holdout."""
        return super().tunes_on_data(profile, options) or (
            self.needs_calibration(profile, options) and options.accuracy_control is not None)

    def convert(self, source: "Source", profile: "TargetProfile", options: OpenVINOOptions, data: ConvertData,
                out_dir: Path) -> Artifact:
        from edgepack.backends.openvino.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.openvino.runner import OpenVINORunner

        return OpenVINORunner(artifact, bundle_dir, threads)

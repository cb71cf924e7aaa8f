"""TensorRT for Jetson: TensorRT-ready bundles built here, proven statically and by proxy here, engines built and
checked on the device.

An engine is tied to the TensorRT version, the GPU architecture and the platform, and parsing ONNX with TensorRT
needs a CUDA device, so the bundle carries what the device needs and the host proves what it can without a GPU:

* ``model.onnx``: TensorRT-ready (opset within the profile's limit, constants folded and shapes inferred by
  onnxslim, an explicit min/opt/max for every dynamic input); INT8 adds ``model.qdq.onnx`` (explicit Q/DQ with
  TensorRT's rules, ``qdq.py``) and ``calibration.cache`` (the same scales, for DLA and implicit mode, ``cache.py``).
* ``build_engine.sh`` (trtexec) and ``build_engine.py`` (Python API), rendered per TensorRT version
  (``buildscript.py``); both refuse the two silent-garbage INT8 builds and write ``engine.json``.
* Host checks, each a named report row (``details["host_checks"]``, see :meth:`Backend.host_checks`): opset/IR,
  every op against the vendored onnx-tensorrt table of the profile's TensorRT (``tables.py``, ``data/``; refused up
  front naming op, node and version), dynamic-shape/DLA lint, Q/DQ lint, cache lint, FP16 overflow scan.
* Parity on the host is ``host-proxy``: the same ONNX in ONNX Runtime on the CPU (``runner.py``), never engine
  numbers. ``device.py`` runs the engine on the Jetson (tensorrt + CUDA runtime via ctypes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.backends.tensorrt.spec import TensorRTOptions, TensorRTRuntime
from edgepack.core.checks import Check
from edgepack.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from edgepack.config import TargetProfile
    from edgepack.sources import Source

__all__ = ["TensorRTBackend", "TensorRTOptions", "TensorRTRuntime"]


class TensorRTBackend(Backend):
    name = "tensorrt"
    requires = ("onnx", "onnxruntime", "onnxslim")
    extra = "tensorrt"
    accepts = frozenset({"onnx"})  # torch and TF sources: the pipeline's shared ONNX export
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = TensorRTOptions
    Runtime: ClassVar[type[RuntimeSpec]] = TensorRTRuntime
    description = "TensorRT for Jetson (JetPack 5/6/7): TRT-ready ONNX + build scripts; engines built on the device"
    host_parity = "host-proxy"

    def validate(self, profile: TargetProfile) -> BaseModel:
        options = super().validate(profile)
        where = profile.path or profile.name
        if options.dla_core is not None and profile.precision == "fp32":
            raise ConfigError(f"{where}: DLA runs FP16 or INT8 only, not fp32",
                              hint="use precision fp16 or int8, or drop options.dla_core")
        return options

    def needs_calibration(self, profile: TargetProfile, options: BaseModel) -> bool:
        """INT8 calibrates on it; FP16 scans its activation ranges for overflow."""
        return profile.precision in ("int8", "fp16")

    def tunes_on_data(self, profile: TargetProfile, options: TensorRTOptions) -> bool:
        """INT8 judges its Q/DQ candidates on the tuning split (the accuracy search, or accuracy_control)."""
        return profile.precision == "int8" and (options.accuracy_control is not None
                                                or options.accuracy_search.enabled)

    def preflight(self, source: Source, profile: TargetProfile, options: TensorRTOptions) -> None:
        """Every op against the profile's TensorRT table, before any target of the build converts."""
        from edgepack.backends.tensorrt.convert import check_source_ops

        check_source_ops(source, options)

    def host_checks(self, artifact: Artifact) -> list[Check]:
        return [Check.from_dict(r) for r in artifact.details.get("host_checks", [])]

    def convert(self, source: Source, profile: TargetProfile, options: TensorRTOptions, data: ConvertData,
                out_dir: Path) -> Artifact:
        from edgepack.backends.tensorrt.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.tensorrt.runner import HostProxyRunner

        return HostProxyRunner(artifact, bundle_dir, threads)

"""ONNX Runtime Mobile: ``.ort`` models (plus the ONNX they came from) and ``required_operators.config``.

* fp32: ORT's own graph optimizations baked in for the target platform ("Fixed" style).
* fp16: float16 weights and activations (I/O kept float32 for apps), ORT inserts casts where a kernel lacks fp16.
* int8: static QDQ quantization (onnxruntime.quantization) calibrated on the recipe's calibration split,
  per-channel int8 weights; fails if the result has no quantized compute op (a silent no-op). When the plain
  build misses the parity budget on the tuning split, the accuracy search (``search.py`` over
  :mod:`edgepack.quantsearch`) tries other calibration recipes, transformer recipes and dynamic INT8, then keeps
  the most sensitive layers in float (``options.accuracy_search``).
* int8 with ``options.quantization = "dynamic"``: int8 weights, activations quantized at run time (no
  calibration data needed).

Host and device run the same loader (``device.py``): a CPU onnxruntime session over ``model.ort``.
Modules: ``spec.py`` (Options, Runtime spec, file name; shared with ``convert.py``), ``convert.py`` (worker side),
``search.py`` (the INT8 search space, worker side), ``runner.py`` (host runner), ``device.py`` (the loader shipped in every bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.backends.ort_mobile.spec import OrtOptions, OrtRuntime

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

__all__ = ["OrtMobileBackend", "OrtOptions", "OrtRuntime"]


class OrtMobileBackend(Backend):
    name = "ort_mobile"
    requires = ("onnx", "onnxruntime")
    extra = "ort"
    accepts = frozenset({"onnx"})
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = OrtOptions
    Runtime: ClassVar[type[RuntimeSpec]] = OrtRuntime
    description = "ONNX Runtime Mobile (.ort + reduced-operator config) for Android/iOS apps"

    def needs_calibration(self, profile: TargetProfile, options: OrtOptions) -> bool:
        """Static int8 calibrates activation ranges; dynamic int8 (``options.quantization = "dynamic"``) does not."""
        return profile.precision == "int8" and options.quantization == "static"

    def tunes_on_data(self, profile: TargetProfile, options: OrtOptions) -> bool:
        """Static and dynamic int8 both search on the tuning split when ``options.accuracy_search.enabled``."""
        return profile.precision == "int8" and options.accuracy_search.enabled

    def preflight(self, source: Source, profile: TargetProfile, options: OrtOptions) -> None:
        """Dynamic int8 of a model without MatMul/Gemm/RNN/Attention would quantize nothing: not applicable (the
        plan skips it) rather than an ERROR after conversion."""
        if profile.precision != "int8" or options.quantization != "dynamic":
            return
        from edgepack.backends.ort_mobile.convert import check_dynamic_applies

        check_dynamic_applies(source)

    def convert(self, source: Source, profile: TargetProfile, options: OrtOptions, data: ConvertData,
                out_dir: Path) -> Artifact:
        from edgepack.backends.ort_mobile.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.ort_mobile.runner import OrtRunner

        return OrtRunner(artifact, bundle_dir, threads)

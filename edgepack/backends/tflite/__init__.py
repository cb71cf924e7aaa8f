"""TensorFlow Lite / LiteRT: one ``model.tflite`` for Android (and anything else that runs LiteRT).

Routes (each runs inside the conversion worker, which imports only its own framework; see ``convert.py``):

* tf sources (Keras ``.keras``/``.h5``, SavedModel): ``tf.lite.TFLiteConverter`` from a concrete function with the
  source's own tensor names. fp16 = float16 weights; int8 = full-integer, the calibration split as representative
  dataset, per-channel weights, int8/uint8/float32 I/O; int8-dynamic = dynamic-range (int8 weights, float I/O).
* torch sources: ``litert-torch`` to a float ``.tflite`` (NHWC I/O when the profile says ``layout = "nhwc"``), then
  ``ai-edge-quantizer`` for fp16 weights, static int8 (calibrated, per-channel weights; float32 I/O by leaving its
  virtual INPUT/OUTPUT ops unquantized, so QUANTIZE/DEQUANTIZE run inside the model, or int8 I/O) or dynamic int8.
  The float conversion is cached per worker process, so the precisions of one build convert the model once.

int8 runs the accuracy search (``search.py``, :mod:`edgepack.quantsearch`) on the tuning split: the profile's plain
recipe first, then the other weight granularity and 16x8, then layers kept in float (per-op recipes /
QuantizationDebugger ``denylisted_nodes``). fp16 keeps ops whose constants float16 cannot hold in float32
(``fp16.py``) and fails a file that answers NaN/inf where float32 does not.
* onnx sources: the pipeline's onnx → torch bridge (``edgepack.sources.onnx_torch``, onnx2torch) makes them a torch
  source (a ``torch.export`` program), which takes the torch route above; see docs/bridge.md.

Select-TF ("Flex") and custom ops are refused unless the profile allows them. After an int8 build the share of
compute ops that really run in int8 is measured; a build that came out float fails. Calibration data that looks
scaled differently from what the model expects is reported as warnings. Profile metadata, input normalization and
class names go into the file as TFLite Support metadata (``metadata.py``).

Host and device run the same loader (``device.py``): the LiteRT interpreter behind the signature runner.

Modules: ``spec.py`` (the Runtime spec, shared with ``convert.py``), ``flatbuffer.py`` (.tflite facts, I/O,
calibration checks) and ``metadata.py`` (app metadata) never import this package; ``convert.py`` and ``runner.py``
are imported lazily from here and import only those helpers, so the package has no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.backends.tflite.spec import PRIMARY, SIGNATURE_KEY, TFLiteIO, TFLiteRuntime
from edgepack.errors import UnsupportedConversion
from edgepack.quantsearch import AccuracySearch

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

__all__ = ["PRIMARY", "SIGNATURE_KEY", "TFLiteBackend", "TFLiteIO", "TFLiteOptions", "TFLiteRuntime"]


class TFLiteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    io_type: Literal["float32", "int8", "uint8"] = Field(
        "float32", description="int8 precision only: dtype of the model's inputs/outputs; float32 = quantize/dequantize "
                               "inside the model (Keras and PyTorch sources), int8/uint8 = the app (de)quantizes with "
                               "the scale/zero-point recorded in the manifest (uint8: Keras/SavedModel sources only)")
    per_channel: bool = Field(True, description="int8: per-channel weight scales (per-tensor when false)")
    float_fallback: bool = Field(False, description="int8 (tf sources): ops without an int8 kernel stay float instead "
                                                    "of failing the conversion")
    min_quantized_share: float = Field(0.5, ge=0.0, le=1.0, description="int8: least share of compute ops that must "
                                       "run in int8 (or hold int8 weights for int8-dynamic); below it the build fails")
    allow_flex_ops: bool = Field(False, description="allow Select-TF (Flex) ops; the app then needs the Flex delegate")
    allow_custom_ops: bool = Field(False, description="allow custom ops; the app must register their kernels")
    model_name: str = Field("", description="model name recorded in the manifest (default: the source's name)")
    input_mean: tuple[float, ...] = Field((), description="normalization the model expects on raw 0-255 inputs: "
                                          "(x - mean) / std (recorded for apps; calibration data is checked against it)")
    input_std: tuple[float, ...] = ()
    accuracy_search: AccuracySearch = Field(AccuracySearch(), description="int8: recipe search and sensitivity-ranked "
                                            "mixed precision on the tuning split when the plain build misses the "
                                            "parity budget")


class TFLiteBackend(Backend):
    name = "tflite"
    requires = ("ai_edge_litert",)
    extra = "tflite"
    accepts = frozenset({"tf", "torch"})
    precisions = frozenset({"fp32", "fp16", "int8", "int8-dynamic"})
    Options = TFLiteOptions
    Runtime: ClassVar[type[RuntimeSpec]] = TFLiteRuntime
    description = "TensorFlow Lite / LiteRT (.tflite) for Android apps; checked on the host with ai_edge_litert"
    refusals = {"onnx": "ONNX models reach TFLite through the onnx → torch bridge, which needs onnx2torch: "
                        "pip install --no-deps -c constraints.txt onnx2torch (as scripts/setup-env.sh does; docs/bridge.md) (or give the Keras/PyTorch source; ONNX files "
                        "also go to the ort_mobile/openvino targets)"}

    def convert(self, source: "Source", profile: "TargetProfile", options: TFLiteOptions, data: ConvertData,
                out_dir: Path) -> Artifact:
        if source.kind in self.refusals:
            raise UnsupportedConversion(f"backend '{self.name}' cannot take {source.kind} sources",
                                        hint=self.refusals[source.kind])
        from edgepack.backends.tflite.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.tflite.runner import TFLiteRunner

        return TFLiteRunner(artifact, bundle_dir, threads)

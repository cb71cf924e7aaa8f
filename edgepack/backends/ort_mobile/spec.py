"""The ort_mobile Options and Runtime spec and the model file name, shared by the package ``__init__`` and
``convert.py`` without either importing the other."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import RuntimeSpec
from edgepack.quantsearch import AccuracySearch

MODEL = "model.ort"

__all__ = ["MODEL", "OrtOptions", "OrtRuntime"]


class OrtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target_platform: Literal["arm", "amd64"] = Field(
        "arm", description="platform whose optimizations are baked into the .ort (arm: Android/iOS phones)"
    )
    quantization: Literal["static", "dynamic"] = Field(
        "static", description="int8: static (QDQ, activation ranges calibrated on data) or dynamic (int8 weights, "
        "activations quantized per call at run time; needs no calibration data)")
    calibration_method: Literal["minmax", "entropy", "percentile", "distribution"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100)
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False
    symmetric_activations: bool = False
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    accuracy_search: AccuracySearch = Field(AccuracySearch(), description="int8: search recipes and "
                                            "sensitivity-ranked float layers on the tuning split when the plain "
                                            "build misses the parity budget")
    ship_onnx: bool = Field(False, description="also ship the optimized model.onnx next to model.ort (for tools that "
                            "cannot read .ort); off by default: the app needs only the .ort")


class OrtRuntime(RuntimeSpec):
    """How to open the model: an onnxruntime session over ``model`` with these execution providers."""

    model: str = Field(MODEL, description="the .ort file, relative to the bundle")
    providers: tuple[str, ...] = Field(("CPUExecutionProvider",), description="onnxruntime execution providers, "
                                       "in order of preference")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime session graph optimization level at load time")

"""The tensorrt backend's Options (one target profile's ``[options]``: what the Jetson has) and RuntimeSpec (what the
host-proxy runner and the device loader read), plus the bundle's file names. No framework import.

``JETPACK`` pins each JetPack line to the L4T release and TensorRT version it ships: a profile that names a
JetPack and a TensorRT that do not go together is refused when the profile is validated.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepack.artifact import RuntimeSpec
from edgepack.quantsearch import AccuracySearch

MODEL = "model.onnx"
QDQ_MODEL = "model.qdq.onnx"
CACHE = "calibration.cache"
ENGINE = "model.engine"
ENGINE_JSON = "engine.json"
BUILD_SH = "build_engine.sh"
BUILD_PY = "build_engine.py"

# JetPack → (L4T release, TensorRT version, largest ONNX opset onnx-tensorrt parses on that line).
# Opset limits: onnx-tensorrt docs/operators.md of the branch (8.5-GA, 8.6-GA: "up to Opset 17"; 10.x: "opset 9 to
# opset 20"); see data/onnx-trt-*.json.
JETPACK: dict[str, tuple[str, str, int]] = {
    "5.1": ("35.2.1", "8.5.2", 17),
    "5.1.1": ("35.3.1", "8.5.2", 17),
    "5.1.2": ("35.4.1", "8.5.2", 17),
    "6.0": ("36.3.0", "8.6.2", 17),
    "6.1": ("36.4.0", "10.3.0", 20),
    "6.2": ("36.4.3", "10.3.0", 20),
    "7.0": ("38.2.0", "10.13.3", 20),
}
SM_WITH_DLA = {72: 2, 87: 2}  # Xavier (sm_72), Orin (sm_87): DLA cores on the AGX/NX modules; Orin Nano has none


class InputShape(BaseModel):
    """Explicit optimization profile for one input: every dynamic dimension gets min ≤ opt ≤ max."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @model_validator(mode="after")
    def _ordered(self) -> InputShape:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError("min, opt and max must have the same rank")
        if any(not (0 < a <= b <= c) for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError("each dimension needs 0 < min <= opt <= max")
        return self


class AccuracyControl(BaseModel):
    """Accuracy-aware Q/DQ (int8): weighted layers go back to float, most drifting first, until top-1 agreement
    with the float network on the tuning split loses at most ``max_drop`` (same shape as openvino's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_drop: float = Field(..., ge=0, le=1)
    metric: Literal["top1_agreement"] = "top1_agreement"
    max_iterations: int = Field(10, ge=1)


class TensorRTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    jetpack: str = Field(..., description=f"JetPack release on the device: {', '.join(JETPACK)}")
    tensorrt: str = Field(..., description="TensorRT version on the device (must be the JetPack's)")
    l4t: str = Field(..., description="L4T release on the device (must be the JetPack's)")
    sm: int = Field(..., description="GPU compute capability ×10: 87 Orin, 72 Xavier")
    max_opset: int = Field(..., ge=9, le=23, description="largest ONNX opset the device's parser takes")
    dla_core: int | None = Field(None, ge=0, description="DLA core to build for (None: GPU only)")
    gpu_fallback: bool = Field(True, description="DLA: let layers DLA cannot run fall back to the GPU (recorded)")
    workspace_mib: int = Field(1024, ge=16, description="trtexec --memPoolSize=workspace")
    max_batch: int = Field(1, ge=1, description="max of a dynamic batch dimension when [options.shapes] omits it")
    shapes: dict[str, InputShape] = Field(default_factory=dict, description="input → explicit min/opt/max")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100)
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    accuracy_control: AccuracyControl | None = None
    accuracy_search: AccuracySearch = Field(AccuracySearch(), description="the INT8 accuracy search on the tuning "
                                            "split (recipes, then weighted layers kept in float)")
    fp16_margin: float = Field(0.5, gt=0, le=1, description="FP16 scan: warn when an activation's range exceeds "
                                                              "this share of 65504")

    @model_validator(mode="after")
    def _device(self) -> TensorRTOptions:
        if self.jetpack not in JETPACK:
            raise ValueError(f"unknown jetpack '{self.jetpack}' (known: {', '.join(JETPACK)})")
        l4t, trt, opset = JETPACK[self.jetpack]
        if self.tensorrt != trt:
            raise ValueError(f"JetPack {self.jetpack} ships TensorRT {trt}, not {self.tensorrt}")
        if self.l4t != l4t:
            raise ValueError(f"JetPack {self.jetpack} is L4T {l4t}, not {self.l4t}")
        if self.max_opset > opset:
            raise ValueError(f"TensorRT {trt} parses ONNX opset <= {opset}; max_opset {self.max_opset} is too high")
        if self.dla_core is not None and self.dla_core >= SM_WITH_DLA.get(self.sm, 0):
            raise ValueError(f"sm_{self.sm} has {SM_WITH_DLA.get(self.sm, 0)} DLA cores; dla_core {self.dla_core} "
                             "does not exist")
        return self

    @property
    def trt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


class TensorRTRuntime(RuntimeSpec):
    """How the bundle runs: on the device an engine built from ``model`` (or ``qdq_model``) by the bundle's build
    script; on the build host a host-proxy ONNX Runtime CPU session over the same ONNX (never an engine)."""

    model: str = Field(MODEL, description="the TensorRT-ready ONNX")
    qdq_model: str | None = Field(None, description="the explicit Q/DQ ONNX (int8)")
    calibration_cache: str | None = Field(None, description="TensorRT calibration cache (int8 implicit / DLA)")
    engine: str = Field(ENGINE, description="the plan the device's build writes (not in the bundle)")
    engine_json: str = Field(ENGINE_JSON, description="the build's record, written on the device")
    build_script: str = BUILD_PY
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    proxy_model: str = Field(MODEL, description="what the host-proxy runs in ONNX Runtime")
    proxy_fp16: bool = Field(False, description="host-proxy: cast weights/activations to float16 before running")
    tensorrt: str
    l4t: str
    sm: int
    dla_core: int | None = None

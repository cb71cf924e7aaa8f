"""The coreml Options and Runtime models and the file names, shared by the package ``__init__`` and ``convert.py``
without either importing the other. No framework import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import RuntimeSpec

PRIMARY = "model.mlpackage"
ACCEPTS = frozenset({"torch", "tf"})
REFUSALS = {"onnx": "ONNX models reach Core ML through the onnx → torch bridge, which needs onnx2torch: "
                    "pip install --no-deps -c constraints.txt onnx2torch (as scripts/setup-env.sh does; docs/bridge.md) (or give the original PyTorch/Keras model)"}
COMPRESSED = {"w8": "8-bit linear (symmetric, per-channel)", "palette6": "6-bit palette (k-means)",
              "palette4": "4-bit palette (k-means)"}
ComputeUnits = Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"]
ColorLayout = Literal["RGB", "BGR", "GRAYSCALE"]


class CoreMLOptions(BaseModel):
    """``[options]`` of a coreml target profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum_deployment_target: Literal["iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14",
                                       "macOS15"] = "iOS16"
    compute_units: ComputeUnits = "ALL"
    input_type: Literal["tensor", "image"] = "tensor"
    image_scale: float = Field(1.0, description="pixel → model input: x = pixel * scale + bias (image inputs)")
    image_bias: tuple[float, ...] = Field((0.0,), description="one value, or one per channel")
    color_layout: ColorLayout = "RGB"
    fp32_io: bool = Field(False, description="keep fp32 inputs/outputs on fp16 programs (casts inside the model)")
    class_labels: list[str] | None = Field(None, description="makes the model a classifier with these labels")
    input_descriptions: dict[str, str] = Field(default_factory=dict)
    output_descriptions: dict[str, str] = Field(default_factory=dict)
    weight_threshold: int = Field(2048, ge=0, description="compress only weights with more elements than this")
    route: Literal["auto", "export", "trace"] = "auto"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CoreMLImage(_Spec):
    """An image input: the program takes pixels and computes ``x = pixel * scale + bias`` itself."""

    scale: float
    bias: list[float] = Field(description="one value per channel")
    color_layout: Literal["RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16"] = Field(
        description="the package's color space: 8-bit RGB/BGR/GRAYSCALE images, or float GRAYSCALE_FLOAT16 "
                    "(grayscale on fp16 programs)")


class CoreMLInput(_Spec):
    name: str = Field(description="the reference (and program) input name")
    layout: Literal["nchw", "nhwc"] = Field(description="layout of the reference input; Core ML keeps it")
    image: CoreMLImage | None = None


class CoreMLClassifier(_Spec):
    """A classifier head: the program's scores come back as a label → probability dictionary."""

    labels: list[str]
    scores: str = Field(description="program variable holding the class scores (the reference output)")
    output: str = Field(description="the model output MLModel.predict returns the label → score dictionary in")


class CoreMLRuntime(RuntimeSpec):
    """What the host evaluator and the device loader need to run the package."""

    package: str = Field(PRIMARY, description="the .mlpackage folder, relative to the bundle")
    compute_units: ComputeUnits = "ALL"
    compute_precision: Literal["fp32", "fp16"] = Field(description="the program's arithmetic (fp16 is emulated "
                                                       "per op by the evaluator)")
    inputs: list[CoreMLInput]
    classifier: CoreMLClassifier | None = None

"""The tflite Runtime spec (what the host runner and ``device.py`` read) and the file names, shared by the package
``__init__`` and ``convert.py`` without either importing the other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import RuntimeSpec
from edgepack.backends.tflite.flatbuffer import SIGNATURE_KEY

PRIMARY = "model.tflite"

__all__ = ["PRIMARY", "SIGNATURE_KEY", "TFLiteIO", "TFLiteRuntime"]


class TFLiteIO(BaseModel):
    """One signature tensor as the runner feeds/reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tflite_name: str = Field(description="the tensor's name in the signature")
    dtype: str = Field(description="the tensor's dtype in the file (float32, int8, uint8, ...)")
    scale: float | list[float] | None = Field(None, description="quantization scale of int I/O")
    zero_point: int | list[int] | None = Field(None, description="quantization zero point of int I/O")
    transpose: bool = Field(False, description="the file keeps this tensor channel-last (NHWC) while the reference "
                                               "model is channel-first: the runner moves axis 1 ↔ last")


class TFLiteRuntime(RuntimeSpec):
    """How to run ``model.tflite``: the signature runner's key and its I/O, in the artifact's I/O order."""

    signature: str = Field(SIGNATURE_KEY, description="signature key the runner calls")
    inputs: tuple[TFLiteIO, ...]
    outputs: tuple[TFLiteIO, ...]
    flex_ops: tuple[str, ...] = Field((), description="Select-TF ops in the model: the runtime needs the Flex delegate")

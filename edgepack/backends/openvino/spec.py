"""The openvino backend's Options (validated once from a target profile's ``[options]``) and RuntimeSpec (what the
host runner and the bundle's device loader read), plus the IR's place in the bundle. No framework import."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import RuntimeSpec
from edgepack.quantsearch import AccuracySearch

IR_DIR = "ir"
XML = f"{IR_DIR}/model.xml"


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IgnoredScope(_Opts):
    """Operations NNCF leaves in float (IR operation names, op types such as "GroupConvolution", or regexes)."""

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()


class AccuracyControl(_Opts):
    """nncf.quantize_with_accuracy_control on the tuning split (never the holdout): revert layers to float until the
    metric drop is within max_drop. It is the mixed-precision stage of the INT8 accuracy search."""

    max_drop: float = Field(..., gt=0, le=1, description="largest allowed drop of the metric from the fp32 IR")
    metric: str = Field("auto", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                        description="auto (top1_agreement for a class-score output, else parity) | parity "
                        "(edgepack's parity score of the profile's budget on the tuning split: any output kind) | "
                        "top1_agreement | accuracy | the name of an installed `edgepack.metrics` entry "
                        "point, enabled with `--allow-metric NAME` (profiles never name code)")
    drop_type: Literal["absolute", "relative"] = "absolute"
    max_iterations: int = Field(20, ge=1, description="most layer groups reverted")
    ranking_subset_size: int | None = Field(None, ge=1)
    tune_hyperparams: bool = False


class OpenVINOOptions(_Opts):
    performance_hint: Literal["latency", "throughput"] = Field(
        "latency", description="CPU plugin PERFORMANCE_HINT for latency runs (parity always runs forced f32)")
    preset: Literal["performance", "mixed"] = Field(
        "performance", description="NNCF preset: performance = symmetric activations, mixed = asymmetric")
    target_device: Literal["any", "cpu", "gpu", "npu", "cpu_spr"] = "any"
    subset_size: int = Field(300, ge=1, description="calibration samples NNCF reads")
    fast_bias_correction: bool = True
    model_type: Literal["cnn", "transformer"] = "cnn"
    ignored_scope: IgnoredScope = IgnoredScope()
    accuracy_control: AccuracyControl | None = None
    accuracy_search: AccuracySearch = Field(AccuracySearch(), description="INT8 accuracy search on the tuning split: "
                                            "NNCF recipes, then layers kept in float (NNCF ignored scope, or "
                                            "accuracy control when [options.accuracy_control] is set)")


class OpenVINORuntime(RuntimeSpec):
    """What the host runner and the bundle's device loader read to run the IR."""

    model: str = Field(XML, description="the IR's .xml, relative to the bundle (its .bin sits beside it)")
    parity_precision: Literal["f32"] = Field(
        "f32", description="CPU plugin INFERENCE_PRECISION_HINT of the parity compile (host and device)")
    performance_hint: Literal["latency", "throughput"] = Field(
        "latency", description="CPU plugin PERFORMANCE_HINT of the host's latency compile")

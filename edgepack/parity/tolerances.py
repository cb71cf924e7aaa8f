"""Default parity tolerances, one row per backend × precision, each with the reason for its numbers.

A target profile's ``[budgets.parity]`` overrides any field. ``None`` means "not checked by default".
Cosine and top-1 agreement are scale-free, so they carry the load for quantized rows; absolute error is only
a default where the arithmetic is the reference's own (fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgepack.core.limits import Limits
from edgepack.core.tasks import TASKS

TASK_KINDS = tuple(TASKS)

if TYPE_CHECKING:
    from edgepack.config import ParityBudget


@dataclass(frozen=True)
class Tolerance:
    max_abs_error: float | None
    min_cosine: float | None
    min_top1_agreement: float | None
    max_accuracy_drop: float | None
    reason: str


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("ort_mobile", "fp32"): Tolerance(
        1e-3, 0.99999, 0.99, None,
        "same fp32 arithmetic as the ONNX reference; only fusion/reassociation rounding differs (seen ≤ 1e-5 on "
        "logits of size ~10); top-1 may flip on near-ties",
    ),
    ("ort_mobile", "fp16"): Tolerance(
        None, 0.999, 0.98, 0.01,
        "fp16 weights and activations: ~3 decimal digits per op, errors grow with depth; logits stay aligned",
    ),
    ("ort_mobile", "int8"): Tolerance(
        None, 0.98, 0.98, 0.01,
        "static QDQ int8 (per-channel weights, calibrated activations): mission goal is ≥98 % top-1 agreement and "
        "≤1 point accuracy loss on real data",
    ),
    ("openvino", "fp32"): Tolerance(
        1e-3, 0.99999, 0.99, None,
        "fp32 IR on the OpenVINO CPU plugin, parity compile forced to INFERENCE_PRECISION_HINT=f32 (no silent "
        "bf16): only fusion and oneDNN/brgemm summation order differ (seen ≤ 1e-5 on digits logits)",
    ),
    ("openvino", "fp16"): Tolerance(
        None, 0.999, 0.98, 0.01,
        "float16-stored weights, decompressed and computed in f32 by the CPU plugin: a weight-rounding effect "
        "only (2^-11 relative); on GPU/NPU fp16 arithmetic adds more, hence the fp16 rows' usual limits",
    ),
    ("openvino", "int8"): Tolerance(
        None, 0.98, 0.98, 0.01,
        "NNCF post-training int8 (per-channel int8 weights, per-tensor calibrated activations; accuracy control may "
        "keep layers float): mission goal is ≥98 % top-1 agreement and ≤1 point accuracy loss on real data",
    ),
    ("tflite", "fp32"): Tolerance(
        1e-3, 0.99999, 0.99, None,
        "fp32 LiteRT kernels (XNNPACK) vs the framework's own: only op fusion/reassociation rounding differs "
        "(≤ 1e-5 on logits of size ~10); top-1 may flip on near-ties",
    ),
    ("tflite", "fp16"): Tolerance(
        None, 0.999, 0.98, 0.01,
        "float16 weights (dequantized to fp32, or run as fp16 by XNNPACK): ~3 decimal digits per weight",
    ),
    ("tflite", "int8"): Tolerance(
        None, 0.95, 0.98, 0.01,
        "full-integer int8 (per-channel weights, activations calibrated on the recipe, int I/O dequantized before "
        "comparison): mission goal is ≥98 % top-1 agreement and ≤1 point accuracy loss on real data. Cosine is "
        "judged per sample (1st percentile): the PyTorch route's int8 output tensor stores logits in steps of its "
        "scale, which puts per-sample logit cosine near 0.97 with decisions unchanged (digits CNN: p1 0.976, min "
        "0.969, 100 % agreement); 0.95 still catches a scrambled or broken output",
    ),
    ("tflite", "int8-dynamic"): Tolerance(
        None, 0.99, 0.98, 0.01,
        "dynamic-range int8: int8 weights, activations quantized per batch at run time; closer to fp32 than "
        "static int8 since no calibrated activation range can clip",
    ),
    ("executorch", "fp32"): Tolerance(
        1e-3, 0.99999, 0.99, None,
        "fp32 program on XNNPACK (and ExecuTorch's portable kernels for what it does not take) vs torch's own "
        "kernels: only fusion/summation order differs (seen 3.7e-8 on the depthwise/SiLU net); top-1 may flip on "
        "near-ties",
    ),
    ("executorch", "int8"): Tolerance(
        None, 0.98, 0.98, 0.01,
        "PT2E static int8 on XNNPACK (per-channel symmetric int8 weights, int8 activations calibrated on the "
        "recipe, float I/O through quantize/dequantize inside the program): mission goal is ≥98 % top-1 agreement "
        "and ≤1 point accuracy loss on real data",
    ),
    ("executorch", "int8-dynamic"): Tolerance(
        None, 0.99, 0.98, 0.01,
        "dynamic int8 of the linear layers (int8 weights, activations quantized per call at run time): no calibrated "
        "activation range can clip, so closer to fp32 than static int8",
    ),
    ("coreml", "fp32"): Tolerance(
        1e-4, 0.99999, 0.99, None,
        "fp32 ML program checked by edgepack's numpy evaluator on the host: same arithmetic as the reference up to "
        "summation order (seen ≤ 1e-7 on the example CNN and transformer block); 1e-4 still catches a swapped "
        "activation variant such as exact vs tanh GELU on a unit-scale layer",
    ),
    ("coreml", "fp16"): Tolerance(
        None, 0.999, 0.98, 0.01,
        "fp16 weights and activations, every op's output rounded to fp16 (2^-11 relative per op), growing with "
        "depth; seen cosine > 0.99999 on the example CNN",
    ),
    ("coreml", "w8"): Tolerance(
        None, 0.995, 0.98, 0.01,
        "int8 symmetric per-channel weights (step = max|w|/127) on an fp16 program; activations stay fp16, so "
        "errors are a weight-rounding effect only; digits CNN keeps top-1 ≥ 99 %",
    ),
    ("coreml", "palette6"): Tolerance(
        None, 0.99, 0.98, 0.01,
        "64-entry k-means table per weight tensor: error close to 8-bit linear on smooth weight distributions",
    ),
    ("coreml", "palette4"): Tolerance(
        None, 0.95, 0.95, 0.02,
        "16-entry table per weight tensor: coarse, noticeably lossy without fine-tuning; cosine and top-1 only "
        "guard against broken tables, accuracy must be judged on labelled data",
    ),
    ("tensorrt", "fp32"): Tolerance(
        1e-3, 0.99999, 0.99, None,
        "host-proxy: the TensorRT-ready ONNX (constants folded by onnxslim, opset converted) in ONNX Runtime CPU "
        "fp32, so only folding/reassociation rounding differs from the reference; the engine's TF32/tactic "
        "choices are judged on the device",
    ),
    ("tensorrt", "fp16"): Tolerance(
        None, 0.999, 0.98, 0.01,
        "host-proxy: the ONNX with weights and activations cast to float16 in ONNX Runtime CPU (≈ TensorRT "
        "--fp16, which may keep some layers fp32): ~3 decimal digits per op; logits stay aligned",
    ),
    ("tensorrt", "int8"): Tolerance(
        None, 0.98, 0.98, 0.01,
        "host-proxy: the explicit Q/DQ network (symmetric int8, per-channel weights, calibrated per-tensor "
        "activations) in ONNX Runtime CPU, the scales TensorRT will use: mission goal ≥98 % top-1 agreement and "
        "≤1 point accuracy loss on real data",
    ),
}


def default(backend: str, precision: str) -> Tolerance:
    try:
        return TOLERANCES[(backend, precision)]
    except KeyError:
        raise KeyError(f"no tolerance row for {backend}/{precision}: add one to edgepack/parity/tolerances.py") from None


# Rows per output kind, by precision class. The backend × precision rows above carry the class-score limits
# (top-1, accuracy, cosine) and the absolute error of exact-arithmetic rows; these carry the other kinds'.
PRECISION_CLASS = {"fp32": "exact", "fp16": "half", "w8": "half"}  # everything else (int8*, palette*) quantized


@dataclass(frozen=True)
class KindRow:
    limits: dict[str, float]
    reason: str


KIND_ROWS: dict[tuple[str, str], KindRow] = {
    ("exact", "regression"): KindRow({"max_rel_error": 1e-3}, "same fp32 arithmetic as the reference: |Δ| stays "
                                     "at rounding level, far below 0.1 % of any real head's range"),
    ("half", "regression"): KindRow({"max_rel_error": 0.01}, "fp16 keeps ~3 significant digits per op; 1 % of the "
                                    "output's range at p99 leaves room for depth while catching a wrong head"),
    ("quantized", "regression"): KindRow({"max_rel_error": 0.05}, "int8 steps are ~1/255 of each tensor's range and "
                                         "add up over layers; 5 % of the range at p99 is a box/landmark off by a "
                                         "few pixels on a 64-px crop, where a broken head is off by its whole range"),
    ("exact", "probabilities"): KindRow({"min_decision_agreement": 0.99}, "fp32: a decision flips only on "
                                        "near-0.5 ties"),
    ("half", "probabilities"): KindRow({"min_decision_agreement": 0.98}, "fp16 rounding flips near-0.5 decisions only"),
    ("quantized", "probabilities"): KindRow({"min_decision_agreement": 0.98}, "the mission's 98 % agreement goal, "
                                            "applied per multi-label decision"),
    ("exact", "embedding"): KindRow({"min_retrieval_agreement": 0.99}, "fp32: nearest neighbours change only on ties"),
    ("half", "embedding"): KindRow({"min_retrieval_agreement": 0.97}, "fp16 noise can swap near-duplicate neighbours"),
    ("quantized", "embedding"): KindRow({"min_retrieval_agreement": 0.95}, "int8 noise swaps near-duplicate "
                                        "neighbours; a broken embedding keeps almost none"),
    ("exact", "dense"): KindRow({"min_pixel_agreement": 0.99, "min_psnr_db": 60.0}, "fp32: class maps identical up to "
                                "ties; value maps at rounding level (> 60 dB)"),
    ("half", "dense"): KindRow({"min_pixel_agreement": 0.98, "min_psnr_db": 40.0}, "fp16: 40 dB is ~1 % RMS of the "
                               "value range"),
    ("quantized", "dense"): KindRow({"min_pixel_agreement": 0.97, "min_psnr_db": 30.0}, "int8: boundary pixels flip; "
                                    "30 dB is ~3 % RMS of the value range"),
    ("exact", "sequence"): KindRow({"min_token_agreement": 0.99}, "fp32: tokens change only on ties"),
    ("half", "sequence"): KindRow({"min_token_agreement": 0.98}, "fp16: near-tie tokens may flip"),
    ("quantized", "sequence"): KindRow({"min_token_agreement": 0.98}, "the mission's 98 % agreement goal per token"),
    # task kinds (edgepack/core/tasks.py): judged on what the app consumes after its own post-processor, against
    # the reference's decode of the same holdout (the base kind's rows apply as well)
    ("exact", "detections:yolo"): KindRow(
        {"min_detection_recall": 0.99, "min_detection_precision": 0.99, "min_class_detection_recall": 0.97},
        "fp32: a detection appears or vanishes only when its score sits on the confidence threshold or two boxes "
        "tie in NMS"),
    ("half", "detections:yolo"): KindRow(
        {"min_detection_recall": 0.97, "min_detection_precision": 0.97, "min_class_detection_recall": 0.93},
        "fp16 moves scores by ~1e-3: only detections within that of the threshold (or NMS ties) change"),
    ("quantized", "detections:yolo"): KindRow(
        {"min_detection_recall": 0.9, "min_detection_precision": 0.9, "min_class_detection_recall": 0.8},
        "int8 score steps (~1/255 of the score range) flip detections near the confidence threshold and shift "
        "boxes by a few pixels; ≥ 90 % of the reference's detections kept (IoU ≥ 0.5, same class) and ≥ 90 % of "
        "the bundle's confirmed is a detector the app still trusts, where crushed score channels keep far fewer "
        "or invent many; the worst class (≥ 20 reference detections) may lose more, but not most"),
    ("exact", "ctc"): KindRow({"min_string_agreement": 0.99, "max_char_error_rate": 0.002},
                              "fp32: a decoded character changes only on an argmax tie"),
    ("half", "ctc"): KindRow({"min_string_agreement": 0.97, "max_char_error_rate": 0.01},
                             "fp16: near-tie steps may flip one character of a few strings"),
    ("quantized", "ctc"): KindRow({"min_string_agreement": 0.95, "max_char_error_rate": 0.02},
                                  "int8: a string is as wrong as its worst step, so per-string agreement is looser "
                                  "than per-token (0.98); ≥ 95 % strings equal and ≤ 2 % of characters edited is "
                                  "an OCR/ASR head that reads the same text, where a broken time axis or collapsed "
                                  "logits change most strings"),
    ("exact", "topk"): KindRow({"min_topk_overlap": 0.99}, "fp32: the top-k list changes only on exact score ties"),
    ("half", "topk"): KindRow({"min_topk_overlap": 0.97}, "fp16: near-tie entries at the list's tail may swap"),
    ("quantized", "topk"): KindRow({"min_topk_overlap": 0.95}, "int8: the tail of a top-k list holds small, close "
                                   "scores that swap with the (k+1)-th; 95 % of the list kept"),
    ("exact", "retrieval"): KindRow({"min_retrieval_recall": 0.99}, "fp32: neighbours change only on exact "
                                    "similarity ties"),
    ("half", "retrieval"): KindRow({"min_retrieval_recall": 0.95}, "fp16 noise swaps near-duplicate neighbours at "
                                   "the k-th place"),
    ("quantized", "retrieval"): KindRow({"min_retrieval_recall": 0.9}, "int8 noise reorders close neighbours "
                                        "around the k-th place; a broken embedding keeps about k/N of them"),
}
for _cls, _agree in (("exact", 0.99), ("half", 0.97), ("quantized", 0.95)):
    KIND_ROWS[(_cls, "task:*")] = KindRow({"min_task_agreement": _agree}, "a third-party post-processor's own "
                                          "agreement rate (task:NAME), held to the same bar as a top-k list of "
                                          "this precision class; its profile may set min_task_agreement")
for _cls, _miou in (("exact", 0.99), ("half", 0.97), ("quantized", 0.9)):
    KIND_ROWS[(_cls, "dense")] = KindRow({**KIND_ROWS[(_cls, "dense")].limits, "min_mean_iou": _miou},
                                         KIND_ROWS[(_cls, "dense")].reason + f"; class maps: mean IoU ≥ {_miou} over "
                                         "the reference's classes (boundary pixels of small classes flip first)")
for _cls in ("exact", "half", "quantized"):
    KIND_ROWS[(_cls, "state")] = KindRow(KIND_ROWS[(_cls, "regression")].limits, "recurrent state is a real-valued "
                                         "tensor fed back in: judged like a regression head")
    KIND_ROWS[(_cls, "other")] = KindRow(KIND_ROWS[(_cls, "regression")].limits, "an output of unknown meaning is "
                                         "judged by its error relative to its range, never by argmax")


def precision_class(precision: str) -> str:
    return PRECISION_CLASS.get(precision, "quantized")


def limits(backend: str, precision: str, budget: "ParityBudget | None" = None) -> Limits:
    """The limits a bundle is judged against: the backend × precision row and the per-kind rows of its precision
    class, overridden field by field by the profile's ``[budgets.parity]``. The one place where they merge."""
    row = default(backend, precision)
    merged: dict[str, object] = {"max_abs_error": row.max_abs_error, "min_cosine": row.min_cosine,
                                 "min_top1_agreement": row.min_top1_agreement,
                                 "max_accuracy_drop": row.max_accuracy_drop}
    cls = precision_class(precision)
    for kind in ("regression", "probabilities", "embedding", "dense", "sequence", *TASK_KINDS, "task:*"):
        merged.update(KIND_ROWS[(cls, kind)].limits)
    if budget is not None:
        for key, value in budget.model_dump().items():
            if value is not None:
                merged[key] = value
    return Limits(**merged)

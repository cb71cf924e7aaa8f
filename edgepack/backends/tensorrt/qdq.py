"""Explicit INT8 for TensorRT: Q/DQ generation (ONNX Runtime's ``quantize_static``, QDQ format) and the Q/DQ lint.

TensorRT's rules (developer guide, "Explicit quantization"): signed INT8; symmetric scales, so every zero-point is 0;
activations per-tensor; weights per-tensor or per-channel on the output-channel axis (axis 0 for Conv and
Gemm with transB=1, axis 1 for ConvTranspose, MatMul and Gemm with transB=0); bias stays float (TensorRT fuses
it). ``quantize_static`` is asked for exactly that (QInt8 both ways, symmetric, per-channel, ``QuantizeBias`` off);
the lint then checks the file that ships, whoever made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class _Reader:
    """CalibrationDataReader over the calibration split, one model batch at a time."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int | None) -> None:
        n = len(next(iter(feeds.values())))
        step = batch or 1
        self._items = [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, n - step + 1, step)]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def quantize(model_in: Path, model_out: Path, calibration: dict[str, np.ndarray], batch: int | None, *,
             method: str = "minmax", percentile: float = 99.999, exclude_nodes: tuple[str, ...] = (),
             exclude_op_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``model_out`` with TensorRT-style Q/DQ; returns what was asked of the quantizer."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                             "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1, "MatMul": 1}}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    excluded = list(exclude_nodes)
    if exclude_op_types:
        excluded += [n.name for n in onnx.load(str(model_in)).graph.node if n.op_type in exclude_op_types]
    quantize_static(str(model_in), str(model_out), _Reader(calibration, batch), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=methods[method], nodes_to_exclude=excluded,
                    extra_options=extra)
    return {"quantizer": "onnxruntime quantize_static (QDQ)", "activations": "int8 symmetric per-tensor",
            "weights": "int8 symmetric per-channel", "bias": "float (not quantized)", "calibration_method": method,
            "excluded_nodes": excluded}


# ------------------------------------------------------------------------------------------------ lint


@dataclass(frozen=True)
class QDQLint:
    problems: list[str] = field(default_factory=list)
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    quantized_weighted_ops: int = 0
    weighted_ops: int = 0
    activation_scales: dict[str, float] = field(default_factory=dict)  # Q input tensor → scale (for the cache)
    residual_adds: dict[str, int] = field(default_factory=dict)  # Add node → how many inputs come through DQ

    @property
    def passed(self) -> bool:
        return not self.problems and self.quantize_nodes > 0


def _consts(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute:
            a = n.attribute[0]
            if a.name == "value":
                out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _weight_axis(consumer, input_index: int) -> int | None:
    """Output-channel axis of a weight input, or None when the input is not a weight."""
    if input_index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "MatMul":
        return 1
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def lint(model) -> QDQLint:
    """Check an ONNX ModelProto's Q/DQ against TensorRT's explicit-quantization rules."""
    from onnx import TensorProto

    g = model.graph
    consts = _consts(model)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    problems: list[str] = []
    scales: dict[str, float] = {}
    nq = ndq = 0
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        nq += n.op_type == "QuantizeLinear"
        ndq += n.op_type == "DequantizeLinear"
        where = f"{n.op_type} '{n.name or n.output[0]}'"
        scale = consts.get(n.input[1]) if len(n.input) > 1 else None
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if n.op_type == "DequantizeLinear" and n.input[0] in consts:
            x = consts[n.input[0]]
            if x.dtype == np.int32:
                used = [(c, i) for c, i in consumers.get(n.output[0], [])]
                if any(c.op_type in WEIGHTED and i == 2 for c, i in used):
                    problems.append(f"{where}: quantized bias (int32) — TensorRT wants float bias")
                    continue
            if x.dtype == np.uint8:
                problems.append(f"{where}: UINT8 weights — TensorRT wants signed INT8")
        if zp is None:
            problems.append(f"{where}: no zero-point (defaults to UINT8) — TensorRT wants INT8 with zero-point 0")
        else:
            if zp.dtype == np.uint8:
                problems.append(f"{where}: UINT8 zero-point — TensorRT wants signed INT8")
            elif zp.dtype != np.int8:
                problems.append(f"{where}: zero-point type {zp.dtype} — TensorRT wants INT8")
            if np.any(zp != 0):
                problems.append(f"{where}: non-zero zero-point {zp.ravel()[:4].tolist()} — TensorRT wants "
                                "symmetric scales (zero-point 0)")
        if scale is None:
            problems.append(f"{where}: scale is not a constant")
            continue
        weight = n.op_type == "DequantizeLinear" and n.input[0] in consts
        if weight:
            used = consumers.get(n.output[0], [])
            for c, i in used:
                if c.op_type in WEIGHTED and i == 2:
                    problems.append(f"{where}: quantized bias of {c.op_type} '{c.name}' — TensorRT wants float bias")
                axis_want = _weight_axis(c, i)
                if axis_want is not None and scale.size > 1:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                    rank = consts[n.input[0]].ndim
                    if axis % rank != axis_want:
                        problems.append(f"{where}: per-channel weights of {c.op_type} '{c.name}' on axis {axis}, "
                                        f"not the output-channel axis {axis_want}")
        else:
            if scale.size > 1:
                problems.append(f"{where}: per-channel activation scale ({scale.size} values) — TensorRT "
                                "quantizes activations per-tensor")
            elif n.op_type == "QuantizeLinear":
                scales[n.input[0]] = float(scale.ravel()[0])
    weighted = quantized = 0
    for n in g.node:
        if n.op_type in WEIGHTED and len(n.input) > 1:
            weighted += 1
            p = producers.get(n.input[1])
            quantized += bool(p is not None and p.op_type == "DequantizeLinear")
    adds = {}
    for n in g.node:
        if n.op_type == "Add" and all(i not in consts for i in n.input):
            adds[n.name or n.output[0]] = sum(
                1 for i in n.input if (p := producers.get(i)) is not None and p.op_type == "DequantizeLinear")
    for t in g.input:
        if t.type.tensor_type.elem_type == TensorProto.UINT8 and any(
                c.op_type == "DequantizeLinear" for c, _ in consumers.get(t.name, [])):
            problems.append(f"input '{t.name}': UINT8 quantized input — TensorRT wants signed INT8")
    return QDQLint(problems, nq, ndq, quantized, weighted, scales, adds)


def float_names(qmodel, fmodel, scales: dict[str, float]) -> dict[str, float]:
    """Q/DQ-network tensor names → the float network's (the quantizer renames a graph output it quantizes, e.g.
    ``logits`` → ``logits_QuantizeLinear_Input``); the producing node (same name in both) decides."""
    tensors = {t for n in fmodel.graph.node for t in n.output} | {i.name for i in fmodel.graph.input}
    f_out = {n.name: list(n.output) for n in fmodel.graph.node if n.name}
    q_prod = {o: (n.name, i) for n in qmodel.graph.node for i, o in enumerate(n.output)}
    out: dict[str, float] = {}
    for name, s in scales.items():
        if name in tensors:
            out[name] = s
            continue
        node, index = q_prod.get(name, ("", 0))
        if node in f_out and index < len(f_out[node]):
            out[f_out[node][index]] = s
    return out


# ------------------------------------------------------------------------------------------------ accuracy search


def _run(model_path: Path, feeds: dict[str, np.ndarray], batch: int | None, extra_outputs: list[str] = ()):
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model_path))
    have = {o.name for o in m.graph.output}
    for name in extra_outputs:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(feeds.values())))
    step = batch or min(n, 64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n - step + 1, step):
        for k, v in zip(names, sess.run(names, {k: v[start:start + step] for k, v in feeds.items()})):
            parts[k].append(v)
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)))


def search(model_in: Path, model_out: Path, calibration: dict[str, np.ndarray], tuning: dict[str, np.ndarray],
           batch: int | None, *, max_drop: float, max_iterations: int, **quant: Any) -> dict[str, Any]:
    """Accuracy-aware Q/DQ: quantize everything, then while top-1 agreement with the float network on the tuning
    split drops by more than ``max_drop``, keep the quantized Conv/Gemm/MatMul whose output drifts most (relative
    RMS error against the float network) in float and quantize again. Returns the figures and the kept nodes."""
    import onnx

    fmodel = onnx.load(str(model_in))
    weighted = {n.name: n.output[0] for n in fmodel.graph.node if n.op_type in WEIGHTED and n.name}
    ref = _run(model_in, tuning, batch, list(weighted.values()))
    out_name = fmodel.graph.output[0].name
    excluded = list(quant.pop("exclude_nodes", ()))
    history = []
    for _ in range(max_iterations + 1):
        info = quantize(model_in, model_out, calibration, batch, exclude_nodes=tuple(excluded), **quant)
        got = _run(model_out, tuning, batch, [t for n, t in weighted.items() if n not in excluded])
        agree = _agreement(ref[out_name], got[out_name])
        history.append({"excluded": list(excluded), "top1_agreement": agree})
        if 1.0 - agree <= max_drop:
            break
        drift = {n: float(np.sqrt(np.mean((got[t] - ref[t]) ** 2)) / (np.ptp(ref[t]) + 1e-12))
                 for n, t in weighted.items() if n not in excluded and t in got}
        if not drift or len(history) > max_iterations:
            break
        excluded.append(max(drift, key=drift.get))
    info["accuracy_control"] = {"metric": "top1_agreement with the float network on the tuning split",
                                "max_drop": max_drop, "steps": history, "kept_float": excluded,
                                "met": 1.0 - history[-1]["top1_agreement"] <= max_drop}
    return info

"""FP16 that does not answer NaN (worker side): find the nodes whose weights, constants or activations (on the
calibration split, the float model in onnxruntime with every intermediate tensor as an output) leave float16's
range (|x| > 65504), keep them in FP32 (``convert_float_to_float16``'s ``node_block_list``), and make subgraph
initializer names unique first (onnxruntime's converter asserts one name per initializer across the whole model,
which graphs with If branches — e.g. after onnxslim — break: ``assert n.name not in fp32_initializers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack.onnxgraph import unique_initializer_names

FP16_MAX = 65504.0
SCAN_SAMPLES = 128  # calibration samples the activation scan runs (ranges, not statistics)


def _consumers(graph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n.name)
    return out


def out_of_range(model_path: Path, feeds: dict[str, np.ndarray] | None, source: Any) -> dict[str, str]:
    """Nodes (main graph) that must stay FP32, each with the reason: a weight/constant they read, or an
    activation they produce or read, beyond ±65504 (or non-finite) — on up to ``SCAN_SAMPLES`` calibration
    samples."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    g = model.graph
    consumers = _consumers(g)
    producer = {o: n.name for n in g.node for o in n.output}
    block: dict[str, str] = {}

    def mark(tensor: str, why: str) -> None:
        for name in ([producer[tensor]] if tensor in producer else []) + consumers.get(tensor, []):
            if name:
                block.setdefault(name, why)

    for init in g.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            a = numpy_helper.to_array(init)
            if a.size and not np.all(np.abs(a) <= FP16_MAX):
                mark(init.name, f"weight {init.name} max |x| = {float(np.nanmax(np.abs(a))):.4g}")
    for n in g.node:
        if n.op_type == "Constant":
            for attr in n.attribute:
                if attr.name == "value" and attr.t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
                    a = numpy_helper.to_array(attr.t)
                    if a.size and not np.all(np.abs(a) <= FP16_MAX):
                        for o in n.output:
                            mark(o, f"constant {o} max |x| = {float(np.nanmax(np.abs(a))):.4g}")
    if feeds:
        try:
            peaks = _activation_peaks(model, feeds, source)
        except Exception as e:  # noqa: BLE001 - the scan is a safeguard: say it could not run, convert anyway
            from edgepack.errors import explain

            block[""] = f"activation scan failed: {explain(str(e)) or type(e).__name__}"
            peaks = {}
        for tensor, peak in peaks.items():
            if not peak <= FP16_MAX:
                mark(tensor, f"activation {tensor} max |x| = {peak:.4g} on the calibration split")
    return block


def _activation_peaks(model, feeds: dict[str, np.ndarray], source: Any) -> dict[str, float]:
    """max |x| of every float intermediate tensor of the main graph over up to SCAN_SAMPLES samples."""
    import onnx
    import onnxruntime as ort

    from edgepack.core.batching import axes_of, model_batches, num_samples

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without shapes, only tensors already typed are scanned
        inferred = model
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    have = {o.name for o in model.graph.output}
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    names = []
    for n in model.graph.node:
        for o in n.output:
            if o and types.get(o) == onnx.TensorProto.FLOAT:
                names.append(o)
                if o not in have:
                    aug.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
    if not names:
        return {}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(aug.SerializeToString(), so, providers=["CPUExecutionProvider"])
    n = min(num_samples(feeds), SCAN_SAMPLES)
    first = source.inputs[0].shape
    batch = None if (not first or first[0] is None) else first[0]
    peaks: dict[str, float] = {}
    for part in model_batches({k: v[:n] for k, v in feeds.items()}, batch or 1, axes_of(source.inputs)):
        outs = sess.run(names, part)
        for name, v in zip(names, outs):
            v = np.asarray(v)
            if v.size:
                m = float(np.max(np.abs(v))) if np.all(np.isfinite(v)) else float("inf")
                peaks[name] = max(peaks.get(name, 0.0), m)
    return peaks


def bypass_round_trips(model) -> int:
    """Remove the float32 → float16 → float32 Cast pairs ``convert_float_to_float16`` puts between two FP32 (blocked)
    nodes: the value would pass through float16 and overflow exactly where it had to stay FP32. Consumers of the
    second Cast read the first Cast's float32 input instead. Returns how many pairs were bypassed."""
    from onnx import TensorProto

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}

    def cast_to(n) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    drop = []
    rename: dict[str, str] = {}
    for n in g.node:
        if cast_to(n) != TensorProto.FLOAT:
            continue
        p = producer.get(n.input[0])
        if p is None or cast_to(p) != TensorProto.FLOAT16:
            continue
        src = producer.get(p.input[0])
        if src is None or src.op_type == "Cast":
            continue
        rename[n.output[0]] = p.input[0]
        drop.append(n)
    if not drop:
        return 0
    outputs = {o.name for o in g.output}
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    for n in drop:
        if n.output[0] in outputs:  # a graph output keeps its name: keep that Cast
            continue
        g.node.remove(n)
    used = {i for n in g.node for i in n.input} | outputs
    for n in [p for p in g.node if cast_to(p) == TensorProto.FLOAT16 and p.output[0] not in used]:
        g.node.remove(n)
    return len(drop)


def convert(model_in: Path, staged: Path, feeds: dict[str, np.ndarray] | None, source: Any) -> dict[str, Any]:
    """FP16 with FP32 kept where values leave float16's range; returns the artifact details."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    block = out_of_range(model_in, feeds, source)
    scan_error = block.pop("", None)
    m = onnx.load(str(model_in))
    renamed = unique_initializer_names(m)
    m16 = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False,
                                   node_block_list=sorted(block) or None)
    bypassed = bypass_round_trips(m16) if block else 0
    onnx.save(m16, str(staged))
    details: dict[str, Any] = {
        "fp16": "weights and activations float16; inputs/outputs float32" + (
            f"; {len(block)} node(s) kept in FP32 (values beyond ±65504)" if block else ""),
        "fp16_range_scan": f"weights, constants and activations on {min(_n(feeds), SCAN_SAMPLES)} calibration "
                           "samples" if feeds else "weights and constants (no calibration samples given)",
        "fp32_nodes": [{"node": k, "why": v} for k, v in sorted(block.items())],
    }
    if scan_error:
        details["fp16_range_scan"] = f"weights and constants only ({scan_error})"
    if bypassed:
        details["fp16_fp32_paths"] = f"{bypassed} float32→float16→float32 cast pair(s) between FP32 nodes removed"
    if renamed:
        details["fp16_renamed_subgraph_initializers"] = renamed
    return details


def _n(feeds) -> int:
    return len(next(iter(feeds.values()))) if feeds else 0

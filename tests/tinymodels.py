"""Tiny models built at test time (no binaries in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_tiny_onnx(path: Path, *, channels: int = 1, size: int = 32, classes: int = 10, seed: int = 0,
                   dynamic_batch: bool = False, width: int = 8) -> Path:
    """Conv → Relu → MaxPool → Conv → Relu → GlobalAveragePool → Flatten → Gemm: a small image classifier."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return rng.standard_normal(shape).astype(np.float32) * scale

    inits = [
        numpy_helper.from_array(w(width, channels, 3, 3), "c1_w"), numpy_helper.from_array(w(width, scale=0.1), "c1_b"),
        numpy_helper.from_array(w(2 * width, width, 3, 3, scale=0.15), "c2_w"),
        numpy_helper.from_array(w(2 * width, scale=0.1), "c2_b"),
        numpy_helper.from_array(w(classes, 2 * width), "fc_w"), numpy_helper.from_array(w(classes, scale=0.1), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "c2_w", "c2_b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_layernorm_onnx(path: Path, *, channels: int = 1, size: int = 32, classes: int = 10, hidden: int = 32,
                        seed: int = 0) -> Path:
    """Flatten → Gemm → LayerNormalization → Relu → Gemm at opset 17: LayerNormalization is an op onnx-tensorrt
    8.5 marks unsupported and 8.6/10.x parse."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    feat = channels * size * size
    inits = [
        numpy_helper.from_array((rng.standard_normal((hidden, feat)) * 0.05).astype(np.float32), "fc1_w"),
        numpy_helper.from_array((rng.standard_normal(hidden) * 0.1).astype(np.float32), "fc1_b"),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32), "ln_scale"),
        numpy_helper.from_array((0.1 * rng.standard_normal(hidden)).astype(np.float32), "ln_bias"),
        numpy_helper.from_array((rng.standard_normal((classes, hidden)) * 0.3).astype(np.float32), "fc2_w"),
        numpy_helper.from_array((rng.standard_normal(classes) * 0.1).astype(np.float32), "fc2_b"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h"], transB=1, name="fc1"),
        helper.make_node("LayerNormalization", ["h", "ln_scale", "ln_bias"], ["hn"], axis=-1, epsilon=1e-5,
                         name="block/norm"),
        helper.make_node("Relu", ["hn"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "fc2_w", "fc2_b"], ["logits"], transB=1, name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "layernorm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

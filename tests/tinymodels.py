"""Tiny models built at test time (no binaries in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_tiny_onnx(path: Path, *, channels: int = 1, size: int = 32, classes: int = 10, seed: int = 0,
                   dynamic_batch: bool = False, width: int = 8, opset: int = 17) -> Path:
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgepack-tests")
    model.ir_version = 8 if opset >= 15 else 6
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_stateful_onnx(path: Path, *, features: int = 16, hidden: int = 8, seed: int = 0,
                       control_flow: bool = False) -> Path:
    """A two-layer recurrent cell shaped like a voice-activity model: x (B, F), a state (2, B, H) whose batch axis
    is 1, and a scalar int64 sample rate; outputs a probability (B, 1) and the next state stateN (2, B, H).
    ``control_flow``: the output head sits in an ``If`` on the sample rate (as in Silero VAD: one head per rate)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.4):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32))

    inits = []
    for name, shape in (("W0", (features, hidden)), ("U0", (hidden, hidden)), ("b0", (hidden,)),
                        ("W1", (hidden, hidden)), ("U1", (hidden, hidden)), ("b1", (hidden,)), ("V", (hidden, 1))):
        t = w(*shape)
        t.name = name
        inits.append(t)
    inits += [numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
              numpy_helper.from_array(np.array([0], np.int64), "ax0"),
              numpy_helper.from_array(np.array(1 / 16000, np.float32), "per_hz")]
    n = helper.make_node
    nodes = [
        n("Gather", ["state", "i0"], ["h0"], axis=0), n("Gather", ["state", "i1"], ["h1"], axis=0),
        n("MatMul", ["x", "W0"], ["a0"]), n("MatMul", ["h0", "U0"], ["c0"]), n("Add", ["a0", "c0"], ["s0"]),
        n("Add", ["s0", "b0"], ["t0"]), n("Tanh", ["t0"], ["n0"]),
        n("MatMul", ["n0", "W1"], ["a1"]), n("MatMul", ["h1", "U1"], ["c1"]), n("Add", ["a1", "c1"], ["s1"]),
        n("Add", ["s1", "b1"], ["t1"]), n("Tanh", ["t1"], ["n1"]),
        n("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT), n("Mul", ["srf", "per_hz"], ["gain"]),
        *(head(n, helper, TensorProto, numpy_helper, rng, hidden) if control_flow else
          [n("MatMul", ["n1", "V"], ["logit"])]),
        n("Mul", ["logit", "gain"], ["scaled"]), n("Sigmoid", ["scaled"], ["output"]),
        n("Unsqueeze", ["n0", "ax0"], ["u0"]), n("Unsqueeze", ["n1", "ax0"], ["u1"]),
        n("Concat", ["u0", "u1"], ["stateN"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", hidden]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepack-tests")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def head(n, helper, TensorProto, numpy_helper, rng, hidden: int) -> list:
    """``logit = If(sr == 16000, n1 @ V, n1 @ V8k)``: the branches read outer tensors, as exported control flow does."""
    v8 = numpy_helper.from_array((rng.standard_normal((hidden, 1)) * 0.4).astype(np.float32), "V8k")
    then_g = helper.make_graph([n("MatMul", ["n1", "V"], ["then_out"])], "rate16k", [],
                               [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([n("Constant", [], ["v8k"], value=v8), n("MatMul", ["n1", "v8k"], ["else_out"])],
                               "rate8k", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)])
    rate = numpy_helper.from_array(np.array(16000, np.int64), "rate16k_value")
    return [n("Constant", [], ["r16"], value=rate), n("Equal", ["sr", "r16"], ["is16k"]),
            n("If", ["is16k"], ["logit"], then_branch=then_g, else_branch=else_g)]


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

"""Tiny ONNX models and seeded data for the task-level defects (issue 19): a CTC head, a YOLOv8-style detector head
and a 7-class classifier, each correct and with the defect the issue found in real models.

* ``ctc`` (samples-first ``(N, T, C)``) and ``ctc_tbc`` (the usual PyTorch CTC layout ``(T, B=1, C)``, fixed batch
  1): logits = feats @ W. Defect: wrong on every time step but the first (W's columns rolled for t ≥ 1).
* ``det``: a YOLOv8 head ``(N, 4+3, 300)`` (pixel boxes, sigmoid scores) passed through. Defect: the score channels
  crushed to two values {0, 1.26} (rounded to the nearer, as one INT8 step of the box channels' scale does) while
  the boxes stay exact.
* ``cls``: ``(N, 7)`` logits passed through. Defect: +0.5 on class 1 — 2.5 % of the logits' range (the INT8 row's
  relative-error budget is 5 %) — which flips the 5 % of samples whose class 1 trails the winner by 0.3.

Data: seeded generators that give each sample a meaning the post-processor reads (a CTC path of a random string,
a few confident anchors, a clear or a near winner); seed 0 is the build's calibration, seeds 1..20 the unseen
holdouts of the false-alarm bundles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T, C = 16, 10  # CTC steps and classes (0 = blank)
DET_CLASSES, ANCHORS = 3, 300
CLS = 7
FLIP_SHARE = 0.05


def _save(path: Path, nodes, inputs, outputs, inits) -> Path:
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, path.stem, inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits if k in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ps_tasks")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _w() -> np.ndarray:
    rng = np.random.default_rng(123)
    return (np.eye(C) * 3.0 + rng.normal(0, 0.05, (C, C))).astype(np.float32)


def ctc_model(path: Path, defect: bool, time_first: bool = False) -> Path:
    batch = 1 if time_first else "N"
    x = helper.make_tensor_value_info("feats", TensorProto.FLOAT, [batch, T, C])
    out_shape = [T, batch, C] if time_first else [batch, T, C]
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)
    w = _w()
    inits = [("W", w), ("Wr", np.roll(w, 1, axis=1)), ("s0", np.array([0], np.int64)),
             ("s1", np.array([1], np.int64)), ("sT", np.array([T], np.int64)), ("ax", np.array([1], np.int64))]
    last = "logits" if not time_first else "ntc"
    if defect:
        nodes = [helper.make_node("Slice", ["feats", "s0", "s1", "ax"], ["first"]),
                 helper.make_node("Slice", ["feats", "s1", "sT", "ax"], ["rest"]),
                 helper.make_node("MatMul", ["first", "W"], ["l0"]),
                 helper.make_node("MatMul", ["rest", "Wr"], ["l1"]),
                 helper.make_node("Concat", ["l0", "l1"], [last], axis=1)]
    else:
        nodes = [helper.make_node("MatMul", ["feats", "W"], [last])]
    if time_first:
        nodes.append(helper.make_node("Transpose", ["ntc"], ["logits"], perm=[1, 0, 2]))
    return _save(path, nodes, [x], [y], inits)


def det_model(path: Path, defect: bool) -> Path:
    x = helper.make_tensor_value_info("head", TensorProto.FLOAT, ["N", 4 + DET_CLASSES, ANCHORS])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + DET_CLASSES, ANCHORS])
    inits = [("one", np.ones((1, 4 + DET_CLASSES, 1), np.float32)), ("s0", np.array([0], np.int64)),
             ("s4", np.array([4], np.int64)), ("s9", np.array([4 + DET_CLASSES], np.int64)),
             ("ax", np.array([1], np.int64)), ("thr", np.array(0.63, np.float32)), ("hi", np.array(1.26, np.float32))]
    if defect:
        nodes = [helper.make_node("Slice", ["head", "s0", "s4", "ax"], ["box"]),
                 helper.make_node("Slice", ["head", "s4", "s9", "ax"], ["cls"]),
                 helper.make_node("Greater", ["cls", "thr"], ["on"]),
                 helper.make_node("Cast", ["on"], ["onf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["onf", "hi"], ["crushed"]),
                 helper.make_node("Concat", ["box", "crushed"], ["output0"], axis=1)]
    else:
        nodes = [helper.make_node("Mul", ["head", "one"], ["output0"])]
    return _save(path, nodes, [x], [y], inits)


def cls_model(path: Path, defect: bool) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CLS])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLS])
    bias = np.zeros(CLS, np.float32)
    if defect:
        bias[1] = 0.5
    w = np.eye(CLS, dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])]
    return _save(path, nodes, [x], [y], [("W", w), ("b", bias)])


# ------------------------------------------------------------------------------------------------ data


def ctc_feats(n: int, seed: int) -> np.ndarray:
    """(n, T, C): each sample a CTC path of a random string of 2-6 characters (blank between repeats), + noise."""
    rng = np.random.default_rng(seed)
    out = rng.normal(0, 0.25, (n, T, C))
    for i in range(n):
        s = list(rng.integers(1, C, rng.integers(2, 7)))
        path: list[int] = []
        for j, c in enumerate(s):
            if j and s[j - 1] == c:
                path.append(0)
            path += [c] * int(rng.integers(1, 3))
        path = (path + [0] * T)[:T]
        out[i, np.arange(T), path] += 2.0
    return out.astype(np.float32)


def det_heads(n: int, seed: int) -> np.ndarray:
    """(n, 4+3, 300): pixel boxes on a 320 image, low sigmoid scores; objects seen by clusters of 3 overlapping
    anchors of one class with graded scores (NMS keeps the best), ~3 % of the anchors."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 4 + DET_CLASSES, ANCHORS), np.float32)
    out[:, 0:2] = rng.uniform(0, 320, (n, 2, ANCHORS))
    out[:, 2:4] = rng.uniform(8, 60, (n, 2, ANCHORS))
    out[:, 4:] = rng.beta(0.3, 10, (n, DET_CLASSES, ANCHORS)) * 0.15
    for i in range(n):
        for a in rng.choice(ANCHORS // 3, 3, replace=False) * 3:  # 3 objects, anchors a, a+1, a+2
            c = rng.integers(0, DET_CLASSES)
            out[i, :4, a + 1] = out[i, :4, a] + rng.normal(0, 2, 4)
            out[i, :4, a + 2] = out[i, :4, a] + rng.normal(0, 2, 4)
            best = rng.uniform(0.3, 0.95)
            out[i, 4 + c, a:a + 3] = [best, best * 0.8, best * 0.6]
    return out


def cls_inputs(n: int, seed: int) -> np.ndarray:
    """(n, 7) logits: a clear winner (≥ 1 ahead of the runner-up, ≥ 1.5 ahead of class 1) except in 5 % of
    samples, where class 1 trails the winner (class 0) by 0.3."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (n, CLS))
    others = np.delete(x, 1, axis=1).max(1)
    x[:, 1] = np.minimum(x[:, 1], others - 1.5 - rng.uniform(0, 1, n))
    top = x.argmax(1)
    runner_up = np.sort(x, axis=1)[:, -2]
    x[np.arange(n), top] = runner_up + 1.0 + rng.uniform(0, 2, n)  # a clear winner: INT8 steps never flip it
    near = rng.permutation(n)[: int(round(FLIP_SHARE * n))]
    x[near, 0] = x[near].max(1) + 1.0
    x[near, 1] = x[near, 0] - 0.3
    return x.astype(np.float32)


MODELS = {  # name → (builder, input name, data, output name, kind)
    "ctc": (lambda p, d: ctc_model(p, d), "feats", ctc_feats, "logits", "ctc"),
    "ctc_tbc": (lambda p, d: ctc_model(p, d, time_first=True), "feats", ctc_feats, "logits", "ctc,batch_axis=1"),
    "det": (det_model, "head", det_heads, "output0", "detections:yolo"),
    "cls": (cls_model, "x", cls_inputs, "logits", "topk"),
}

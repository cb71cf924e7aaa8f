"""Task-level parity: judge what the app consumes (decoded detections, decoded strings, top-k lists, neighbours),
not only the raw tensor. numpy + stdlib only: the bundle runner runs the same post-processors on the device.

A task kind is declared like any output kind (``--output output0=detections:yolo,conf=0.25``); its parameters are
strings (``params``). :func:`measure` decodes the reference and the bundle's output with the same post-processor
and compares the two decodes; the reference's decode is the truth. Rates are recorded like
``core.metrics._rate`` (``key``, ``key_n``, ``key_ci_low``, ``key_ci_high``: 95 % Wilson interval); :data:`ROWS`
says which :class:`~edgepack.core.limits.Limits` field judges which metric.

Built-in kinds (arrays are samples-first: axis 0 is the holdout sample; axes named in ``params`` count in the
output's own layout, with ``batch_axis`` (default 0) being the axis that was moved first):

``detections:yolo``  YOLOv8 head ``(N, 4+C, A)``: cx, cy, w, h then C class scores per anchor. Decode: best class
                     per anchor, score ≥ ``conf`` (0.25), class-wise NMS at ``iou`` (0.45), at most ``max_det``
                     (300) per sample. The bundle's detections are matched to the reference's (same class, IoU ≥
                     ``match_iou`` 0.5, greedy by score): ``detection_recall`` (share of reference detections the
                     bundle keeps), ``detection_precision`` (share of bundle detections the reference has), and both
                     per class (``detection_recall_cls{c}``); ``detection_recall_worst_class`` is the lowest recall
                     of the classes with ≥ ``min_class_count`` (20) reference detections. ``channels_axis`` (1),
                     ``classes_from`` (4) and ``classes_to`` (all channels) locate the channels (a -seg
                     head's mask coefficients follow its classes: ``classes_to=4+C``).
``ctc``              greedy CTC decode: argmax over ``class_axis`` (last), collapse repeats, drop ``blank`` (0),
                     along ``time_axis`` (the first non-batch axis that is not the class axis).
                     ``string_agreement`` (decoded strings equal, a rate) and ``char_error_rate`` (edit distance /
                     reference length, pooled over the holdout).
``topk``             class scores ``(N, C)``: ``topk_overlap`` = share of the reference's top-``k`` (5) classes
                     found in the bundle's top-k (pooled over N·k) — what a "top-5 suggestions" UI shows.
``retrieval``        embeddings ``(N, D)``: recall@``k`` (5) = share of each sample's k nearest holdout neighbours
                     (cosine) under the reference that are also among its k nearest under the bundle.

Each task kind also has a *base* tensor kind whose rows still apply (``detections:yolo`` → regression,
``ctc`` → sequence, ``topk`` → scores, ``retrieval`` → embedding), so declaring a task never loosens a verdict.

Third-party post-processors: a kind ``task:NAME`` runs the installed ``edgepack.metrics`` entry point ``NAME``
(only when enabled, like a quantization metric, with ``--allow-metric NAME``, i.e. ``EDGEPACK_ALLOW_METRICS``).
The entry point loads an object with a ``measure(ref, got, params) -> dict[str, float]`` attribute (a module or a
class); its ``task_agreement`` rate (with ``_n``/``_ci_low``/``_ci_high``, see :func:`rate`) is judged by
``Limits.min_task_agreement``, every other key is shown. See docs/parity.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import wilson

METRIC_GROUP = "edgepack.metrics"  # the entry point group third-party post-processors register in
ALLOW_ENV = "EDGEPACK_ALLOW_METRICS"  # comma-separated names enabled with --allow-metric
EXTERNAL_PREFIX = "task:"


def rate(m: dict[str, float], key: str, hits: np.ndarray | int, n: int | None = None) -> None:
    """Record a rate with its 95 % Wilson interval (``key``, ``key_n``, ``key_ci_low``, ``key_ci_high``).
    ``hits`` is a boolean array, or a count with ``n``. With nothing to count (n = 0) the rate is 1.0 and its
    interval (0, 1): vacuous, and a rate budget's sample-count warning says so."""
    if n is None:
        arr = np.asarray(hits)
        n, k = int(arr.size), float(np.count_nonzero(arr))
    else:
        k = float(hits)
    m[key] = k / n if n else 1.0
    m[f"{key}_ci_low"], m[f"{key}_ci_high"] = wilson(k, n)
    m[f"{key}_n"] = float(n)


def _int(params: dict[str, str], key: str, default: int) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"parameter {key}={value!r} is not an integer") from None


def _float(params: dict[str, str], key: str, default: float) -> float:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"parameter {key}={value!r} is not a number") from None


def _axis(params: dict[str, str], key: str, ndim: int, default: int | None) -> int | None:
    """A declared axis (counted in the output's own layout) as an axis of the samples-first array."""
    if params.get(key) in (None, ""):
        return default
    axis = _int(params, key, 0)
    raw = params.get("batch_axis", "0")
    batch = None if raw in ("none", "None", "auto") else int(raw)
    if batch is None:
        batch = 0
    if not -ndim <= axis < ndim:
        raise ValueError(f"{key}={axis} is outside an output of {ndim} axes")
    axis %= ndim
    if axis == batch:
        raise ValueError(f"{key}={axis} is the batch axis")
    order = [batch] + [i for i in range(ndim) if i != batch]
    return order.index(axis)


# ------------------------------------------------------------------------------------------------ detections


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    gone = np.zeros(len(boxes), bool)
    keep: list[int] = []
    for i in order:
        if gone[i]:
            continue
        keep.append(int(i))
        gone |= _iou_one(boxes[i], boxes) > iou
    return keep


def yolo_decode(pred: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                classes_from: int = 4, classes_to: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample's YOLOv8 head ``(4+C, A)`` → (xyxy boxes (K, 4), scores (K,), classes (K,)) after the
    confidence threshold and class-wise NMS, best first. Non-finite values never make a detection."""
    p = np.asarray(pred, np.float64)
    p = np.where(np.isfinite(p), p, -np.inf)
    box, cls = p[:4], p[classes_from:classes_to]
    if cls.shape[0] == 0 or p.shape[1] == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    best = cls.argmax(0)
    score = cls[best, np.arange(cls.shape[1])]
    ok = (score >= conf) & np.all(np.isfinite(box), axis=0)
    cx, cy, w, h = box[:, ok]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    score, best = score[ok], best[ok]
    keep: list[int] = []
    for c in np.unique(best):
        idx = np.flatnonzero(best == c)
        keep += [int(idx[k]) for k in _nms(xyxy[idx], score[idx], iou)]
    keep = sorted(keep, key=lambda k: -score[k])[:max_det]
    return xyxy[keep], score[keep], best[keep]


def _match(ref: tuple[np.ndarray, np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray, np.ndarray],
           match_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(reference detection matched?, bundle detection matched?): same class, IoU ≥ match_iou, greedy by the
    bundle's score, each reference detection used once."""
    rb, _, rc = ref
    gb, gs, gc = got
    ref_hit = np.zeros(len(rb), bool)
    got_hit = np.zeros(len(gb), bool)
    for j in np.argsort(-gs, kind="stable"):
        cand = np.flatnonzero((rc == gc[j]) & ~ref_hit)
        if not cand.size:
            continue
        ious = _iou_one(gb[j], rb[cand])
        k = int(np.argmax(ious))
        if ious[k] >= match_iou:
            ref_hit[cand[k]] = True
            got_hit[j] = True
    return ref_hit, got_hit


def detections_yolo(ref: np.ndarray, got: np.ndarray, params: dict[str, str]) -> dict[str, float]:
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim != 3:
        raise ValueError(f"detections:yolo needs (N, 4+C, A) outputs, got {ref.shape}")
    ch = _axis(params, "channels_axis", 3, 1)
    if ch != 1:
        ref, got = np.moveaxis(ref, ch, 1), np.moveaxis(got, ch, 1)
    frm, to = _int(params, "classes_from", 4), _int(params, "classes_to", ref.shape[1])
    if not 4 <= frm < to <= ref.shape[1]:
        raise ValueError(f"classes_from={frm}, classes_to={to}: the output has {ref.shape[1]} channels (4 box "
                         "channels, then ≥ 1 class)")
    conf, iou = _float(params, "conf", 0.25), _float(params, "iou", 0.45)
    max_det, match_iou = _int(params, "max_det", 300), _float(params, "match_iou", 0.5)
    min_count = _int(params, "min_class_count", 20)
    ncls = to - frm
    ref_hits: list[np.ndarray] = []
    got_hits: list[np.ndarray] = []
    ref_cls: list[np.ndarray] = []
    got_cls: list[np.ndarray] = []
    for r, g in zip(ref, got):
        rd = yolo_decode(r, conf, iou, max_det, frm, to)
        gd = yolo_decode(g, conf, iou, max_det, frm, to)
        rh, gh = _match(rd, gd, match_iou)
        ref_hits.append(rh)
        got_hits.append(gh)
        ref_cls.append(rd[2])
        got_cls.append(gd[2])
    rh, gh = np.concatenate(ref_hits), np.concatenate(got_hits)
    rc, gc = np.concatenate(ref_cls), np.concatenate(got_cls)
    m: dict[str, float] = {"reference_detections": float(rh.size), "bundle_detections": float(gh.size)}
    rate(m, "detection_recall", rh)
    rate(m, "detection_precision", gh)
    worst: tuple[float, int, int] | None = None  # (recall, hits, n) of the worst class with enough detections
    for c in range(ncls):
        if np.any(rc == c) or np.any(gc == c):
            rate(m, f"detection_recall_cls{c}", rh[rc == c])
            rate(m, f"detection_precision_cls{c}", gh[gc == c])
            n = int(np.sum(rc == c))
            hits = int(np.count_nonzero(rh[rc == c]))
            if n >= min_count and (worst is None or hits / n < worst[0]):
                worst = (hits / n, hits, n)
    rate(m, "detection_recall_worst_class", *((worst[1], worst[2]) if worst else (0, 0)))
    if worst:
        m["detection_recall_worst_class_id"] = float(next(c for c in range(ncls) if f"detection_recall_cls{c}" in m
                                                          and m[f"detection_recall_cls{c}_n"] == worst[2]
                                                          and m[f"detection_recall_cls{c}"] == worst[0]))
    return m


# ------------------------------------------------------------------------------------------------ CTC


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decode of ``(N, T, C)``: argmax per step, collapse repeats, drop blanks. Non-finite values never
    win an argmax."""
    a = np.asarray(logits, np.float64)
    best = np.where(np.isfinite(a), a, -np.inf).argmax(-1)
    out: list[tuple[int, ...]] = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append(tuple(int(t) for t in row[keep] if t != blank))
    return out


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    if not a:
        return len(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def ctc(ref: np.ndarray, got: np.ndarray, params: dict[str, str]) -> dict[str, float]:
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim < 3:
        raise ValueError(f"ctc needs (N, T, C) outputs (time and class axes besides the samples), got {ref.shape}")
    cls = _axis(params, "class_axis", ref.ndim, ref.ndim - 1)
    rest = [i for i in range(1, ref.ndim) if i != cls]
    time = _axis(params, "time_axis", ref.ndim, rest[0])
    if time == cls:
        raise ValueError("time_axis and class_axis are the same axis")
    other = [i for i in range(1, ref.ndim) if i not in (time, cls)]
    if other and int(np.prod([ref.shape[i] for i in other])) != 1:
        raise ValueError(f"ctc: output {ref.shape} has axes besides samples, time ({time}) and classes ({cls})")
    order = [0, time, cls] + other
    r = np.transpose(ref, order).reshape(ref.shape[0], ref.shape[time], ref.shape[cls])
    g = np.transpose(got, order).reshape(got.shape[0], got.shape[time], got.shape[cls])
    blank = _int(params, "blank", 0)
    rs, gs = ctc_greedy(r, blank), ctc_greedy(g, blank)
    m: dict[str, float] = {}
    rate(m, "string_agreement", np.array([a == b for a, b in zip(rs, gs)], bool))
    dist = sum(edit_distance(a, b) for a, b in zip(rs, gs))
    length = sum(len(a) for a in rs)
    m["char_error_rate"] = dist / length if length else float(dist > 0)
    m["char_errors"], m["reference_chars"] = float(dist), float(length)
    m["reference_empty_strings"] = float(sum(not a for a in rs))
    return m


# ------------------------------------------------------------------------------------------------ top-k, retrieval


def topk(ref: np.ndarray, got: np.ndarray, params: dict[str, str]) -> dict[str, float]:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.ndim != 2 or ref.shape[1] < 2:
        raise ValueError(f"topk needs (N, C) class scores, got {ref.shape}")
    k = min(max(_int(params, "k", 5), 1), ref.shape[1])
    g = np.where(np.isfinite(got), got, -np.inf)
    rk = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    gk = np.argsort(-g, axis=1, kind="stable")[:, :k]
    hits = np.array([[c in set(b) for c in a] for a, b in zip(rk, gk)], bool)
    m: dict[str, float] = {"topk_k": float(k)}
    rate(m, "topk_overlap", hits)
    return m


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    x = x.reshape(len(x), -1)
    x = np.where(np.isfinite(x), x, 0.0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def retrieval(ref: np.ndarray, got: np.ndarray, params: dict[str, str]) -> dict[str, float]:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.ndim < 2 or len(ref) < 3:
        raise ValueError(f"retrieval needs ≥ 3 samples of (N, D) embeddings, got {ref.shape}")
    k = min(max(_int(params, "k", 5), 1), len(ref) - 1)
    rk, gk = _knn(ref, k), _knn(got, k)
    hits = np.array([[c in set(b) for c in a] for a, b in zip(rk, gk)], bool)
    m: dict[str, float] = {"retrieval_k": float(k)}
    rate(m, "retrieval_recall", hits)
    return m


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Task:
    measure: Callable[[np.ndarray, np.ndarray, dict[str, str]], dict[str, float]]
    base: str  # the tensor kind whose rows still apply
    params: tuple[str, ...]  # the parameters it reads


TASKS: dict[str, Task] = {
    "detections:yolo": Task(detections_yolo, "regression",
                            ("conf", "iou", "max_det", "match_iou", "classes_from", "classes_to", "channels_axis",
                             "min_class_count")),
    "ctc": Task(ctc, "sequence", ("blank", "time_axis", "class_axis")),
    "topk": Task(topk, "scores", ("k",)),
    "retrieval": Task(retrieval, "embedding", ("k",)),
}

# metric → (Limits field, op, is a rate): the rows core.metrics.parity judges for a task output
ROWS: dict[str, tuple[str, str, bool]] = {
    "detection_recall": ("min_detection_recall", ">=", True),
    "detection_precision": ("min_detection_precision", ">=", True),
    "detection_recall_worst_class": ("min_class_detection_recall", ">=", True),
    "string_agreement": ("min_string_agreement", ">=", True),
    "char_error_rate": ("max_char_error_rate", "<=", False),
    "topk_overlap": ("min_topk_overlap", ">=", True),
    "retrieval_recall": ("min_retrieval_recall", ">=", True),
    "task_agreement": ("min_task_agreement", ">=", True),
}
# which metrics each kind's checks read (an external task's is task_agreement)
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "detections:yolo": ("detection_recall", "detection_precision", "detection_recall_worst_class"),
    "ctc": ("string_agreement", "char_error_rate"),
    "topk": ("topk_overlap",),
    "retrieval": ("retrieval_recall",),
}


def is_task(kind: str) -> bool:
    return kind in TASKS or kind.startswith(EXTERNAL_PREFIX)


def base_kind(kind: str) -> str:
    """The tensor kind whose rows apply to an output of this kind (itself for a tensor kind)."""
    if kind in TASKS:
        return TASKS[kind].base
    return "other" if kind.startswith(EXTERNAL_PREFIX) else kind


def metrics_of(kind: str) -> tuple[str, ...]:
    return KIND_METRICS.get(kind, ("task_agreement",) if kind.startswith(EXTERNAL_PREFIX) else ())


def _external(name: str) -> Callable[[np.ndarray, np.ndarray, dict[str, str]], dict[str, float]]:
    from importlib import metadata

    allowed = [n for n in os.environ.get(ALLOW_ENV, "").split(",") if n]
    found = {ep.name: ep for ep in metadata.entry_points(group=METRIC_GROUP)}
    if name not in found:
        raise LookupError(f"post-processor '{name}' is not an installed '{METRIC_GROUP}' entry point here "
                          f"(installed: {', '.join(found) or 'none'})")
    if name not in allowed:
        raise LookupError(f"post-processor '{name}' runs code from an installed package and is not enabled "
                          f"(--allow-metric {name})")
    obj: Any = found[name].load()
    fn = getattr(obj, "measure", None)
    if not callable(fn):
        raise LookupError(f"entry point '{name}' has no measure(ref, got, params) function")
    return fn


def measure(kind: str, ref: np.ndarray, got: np.ndarray, params: dict[str, str] | None = None) -> dict[str, float]:
    """The task metrics of one output (``ref``/``got`` samples-first). Raises ValueError when the output does not
    fit the kind or a parameter is wrong, LookupError when an external post-processor is unavailable here."""
    params = dict(params or {})
    if kind in TASKS:
        return TASKS[kind].measure(ref, got, params)
    if kind.startswith(EXTERNAL_PREFIX):
        out = _external(kind[len(EXTERNAL_PREFIX):])(ref, got, params)
        return {str(k): float(v) for k, v in dict(out).items()}
    raise ValueError(f"'{kind}' is not a task kind ({', '.join(TASKS)}, or {EXTERNAL_PREFIX}NAME)")

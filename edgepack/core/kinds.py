"""Output kinds: what an output means decides which parity metrics apply to it.

``scores`` (logits or probabilities over classes), ``probabilities`` (independent sigmoid/multi-label),
``regression`` (boxes, landmarks, depth, any real-valued head), ``embedding``, ``dense`` (segmentation/heat
maps), ``sequence`` (tokens/time steps), ``state`` (recurrent state passed back in), ``other``; and the task kinds of
``core.tasks`` (``detections:yolo``, ``ctc``, ``topk``, ``retrieval``, ``task:NAME``), judged by their base kind's
rows and by their decoded results.

Declared kinds win. Otherwise inference is conservative and says what evidence it used:

1. a name that reads as a regression head (``bbox``, ``box``, ``landmark``, ``reg``, ``offset``, ``keypoint``, …)
   → ``regression``: such a head is never judged by argmax, whatever else points at classes;
2. the single 2-D output whose width matches the labels' classes → ``scores``;
3. rows that are non-negative and sum to 1 → ``scores``;
4. a 2-D ``(N, C ≥ 2)`` output fed by a final Softmax/LogSoftmax (a ``hint`` from the host's reading of the graph)
   → ``scores``;
5. a 2-D ``(N, C ≥ 2)`` output named like class scores (``logits``, ``scores``, ``cls``, ``class``, ``prob``, …):
   fed by a final Sigmoid with values in [0, 1] → ``probabilities`` (independent decisions); fed by a
   Gemm/MatMul, or with no graph hint → ``scores``. A Gemm alone is not enough (a box or embedding head is one too);
6. everything else is ``other`` (judged like a regression head: errors relative to the output's range; the class
   budgets show as "not applied" rows with the fix).

``hints`` come from the host (``{output: op type of the node producing it}``, looking through Identity, Reshape,
Flatten, Squeeze, Cast); this module stays numpy-only.
"""

from __future__ import annotations

import re

import numpy as np

KINDS = ("scores", "probabilities", "regression", "embedding", "dense", "sequence", "state", "other",
         # task kinds (core/tasks.py): the output is also decoded the way the app does and the decodes compared;
         # a third-party post-processor is the kind "task:NAME" (an installed edgepack.metrics entry point)
         "detections:yolo", "ctc", "topk", "retrieval")


def known(kind: str) -> bool:
    """A built-in kind, or ``task:NAME`` (a third-party post-processor, looked up when it is measured)."""
    return kind in KINDS or (kind.startswith("task:") and len(kind) > 5)

CLASS_NAMES = ("logit", "logits", "score", "scores", "cls", "class", "classes", "classifier", "prob", "probs",
               "probability", "probabilities", "softmax")
REGRESSION_NAMES = ("bbox", "bboxes", "box", "boxes", "landmark", "landmarks", "lmk", "reg", "regression", "offset",
                    "offsets", "delta", "deltas", "coord", "coords", "loc", "keypoint", "keypoints", "kpt", "kpts",
                    "pose", "depth")
LINEAR_OPS = ("Gemm", "MatMul", "Linear", "Dense", "FullyConnected", "MatMulInteger", "QLinearMatMul")


def name_tokens(name: str) -> list[str]:
    """``'output_bbox'`` → ``['output', 'bbox']``, ``'clsScore:0'`` → ``['cls', 'score', '0']``."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t]


def _named(name: str, words: tuple[str, ...]) -> str | None:
    return next((t for t in name_tokens(name) if t in words or t.rstrip("0123456789") in words), None)


def _rows_are_distributions(arr: np.ndarray) -> bool:
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.all(np.isfinite(arr)):
        return False
    return bool(np.all(arr >= -1e-6) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3))


def decide(reference: dict[str, np.ndarray], labels: np.ndarray | None = None,
           declared: dict[str, str] | None = None,
           hints: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{output: (kind, how it was decided)}`` for every reference output."""
    declared = dict(declared or {})
    hints = dict(hints or {})
    out: dict[str, tuple[str, str]] = {}
    matched: list[str] = []
    if labels is not None and len(labels):
        top = int(np.max(labels))
        matched = [n for n, a in reference.items() if n not in declared and a.ndim == 2 and a.shape[1] > top
                   and a.shape[1] > 1 and len(a) == len(labels) and not _named(n, REGRESSION_NAMES)]
    for name, arr in reference.items():
        arr = np.asarray(arr)
        op = hints.get(name)
        fed = f", fed by a final {op}" if op else ""
        two_d = arr.ndim == 2 and arr.shape[1] > 1
        reg = _named(name, REGRESSION_NAMES)
        cls = _named(name, CLASS_NAMES)
        if name in declared:
            out[name] = (declared[name], "declared")
        elif reg:
            out[name] = ("regression", f"its name ('{reg}') reads as a regression head{fed}: never judged by argmax")
        elif len(matched) == 1 and matched[0] == name:
            out[name] = ("scores", f"the only output whose width ({arr.shape[1]}) covers the labels' classes "
                                   f"(0–{int(np.max(labels))}){fed}")
        elif _rows_are_distributions(arr):
            out[name] = ("scores", f"rows are non-negative and sum to 1 over a class axis{fed}")
        elif two_d and op in ("Softmax", "LogSoftmax"):
            out[name] = ("scores", f"a ({arr.shape[1]}-wide) output fed by a final {op}")
        elif two_d and cls and op == "Sigmoid" and np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= 1:
            out[name] = ("probabilities", f"its name ('{cls}') reads as class scores, fed by a final Sigmoid (values "
                                          "in [0, 1]): independent decisions")
        elif two_d and cls and (op is None or op in LINEAR_OPS):
            out[name] = ("scores", f"its name ('{cls}') reads as class scores over {arr.shape[1]} columns"
                                   + (fed or " (no graph hint)"))
        else:
            out[name] = ("other", "not declared and not recognisably class scores" + fed
                         + ": judged like a regression head")
    return out

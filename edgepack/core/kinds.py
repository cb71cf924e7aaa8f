"""Output kinds: what an output means decides which parity metrics apply to it.

``scores`` (logits or probabilities over classes), ``probabilities`` (independent sigmoid/multi-label),
``regression`` (boxes, landmarks, depth, any real-valued head), ``embedding``, ``dense`` (segmentation/heat
maps), ``sequence`` (tokens/time steps), ``state`` (recurrent state passed back in), ``other``; and the task kinds of
``core.tasks`` (``detections:yolo``, ``ctc``, ``topk``, ``retrieval``, ``task:NAME``), judged by their base kind's
rows and by their decoded results.

Declared kinds win. Otherwise inference is conservative: class-score metrics only for the single output the
labels match, or for outputs whose rows are non-negative and sum to 1 over a class axis; everything else is
``other`` (judged like a regression head: errors relative to the output's range).
"""

from __future__ import annotations

import numpy as np

KINDS = ("scores", "probabilities", "regression", "embedding", "dense", "sequence", "state", "other",
         # task kinds (core/tasks.py): the output is also decoded the way the app does and the decodes compared;
         # a third-party post-processor is the kind "task:NAME" (an installed edgepack.metrics entry point)
         "detections:yolo", "ctc", "topk", "retrieval")


def known(kind: str) -> bool:
    """A built-in kind, or ``task:NAME`` (a third-party post-processor, looked up when it is measured)."""
    return kind in KINDS or (kind.startswith("task:") and len(kind) > 5)


def _rows_are_distributions(arr: np.ndarray) -> bool:
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.all(np.isfinite(arr)):
        return False
    return bool(np.all(arr >= -1e-6) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3))


def decide(reference: dict[str, np.ndarray], labels: np.ndarray | None = None,
           declared: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{output: (kind, how it was decided)}`` for every reference output."""
    declared = dict(declared or {})
    out: dict[str, tuple[str, str]] = {}
    matched: list[str] = []
    if labels is not None and len(labels):
        top = int(np.max(labels))
        matched = [n for n, a in reference.items() if n not in declared and a.ndim == 2 and a.shape[1] > top
                   and a.shape[1] > 1 and len(a) == len(labels)]
    for name, arr in reference.items():
        if name in declared:
            out[name] = (declared[name], "declared")
        elif len(matched) == 1 and matched[0] == name:
            out[name] = ("scores", "the only output that matches the labels' classes")
        elif _rows_are_distributions(np.asarray(arr)):
            out[name] = ("scores", "rows are non-negative and sum to 1 over a class axis")
        else:
            out[name] = ("other", "not declared and not recognisably class scores: judged like a regression head")
    return out

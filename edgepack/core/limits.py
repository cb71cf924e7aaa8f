"""Parity limits: the merged tolerance rows (backend × precision, and per output kind) and the profile's budget
that a bundle is judged against (``None`` = not checked). ``judge`` says how a rate budget (agreement, accuracy drop)
is judged:

* ``evidence`` (the default): on the point estimate, and INCONCLUSIVE when the samples cannot support the budget
  (even a flawless result's 95 % Wilson bound would miss it; the row says how many samples would do);
* ``bound``: on the 95 % Wilson bound (the lower one for a minimum rate, the upper one for a maximum drop), and
  INCONCLUSIVE on too few samples like ``evidence``;
* ``point``: on the point estimate alone (the explicit opt-out; too few samples are only a warning).

Manifests written before ``evidence`` existed carry ``judge = "point"`` and are judged as they were."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

JUDGES = ("evidence", "bound", "point")


@dataclass(frozen=True)
class Limits:
    max_abs_error: float | None = None  # every kind: largest |Δ| (exact-arithmetic rows only)
    min_cosine: float | None = None  # per-sample cosine: 1st percentile (scores), worst sample (embedding)
    min_top1_agreement: float | None = None  # scores
    max_accuracy_drop: float | None = None  # scores with labels
    min_top5_agreement: float | None = None  # scores with ≥ 6 classes
    max_rel_error: float | None = None  # regression, state, other: p99 of |Δ| / range of the output
    min_decision_agreement: float | None = None  # probabilities: the same side of 0.5
    min_retrieval_agreement: float | None = None  # embedding: nearest neighbour in the holdout unchanged
    min_pixel_agreement: float | None = None  # dense class maps
    min_psnr_db: float | None = None  # dense value maps
    min_token_agreement: float | None = None  # sequence
    min_mean_iou: float | None = None  # dense class maps: mean IoU over the reference's classes
    # task kinds (core/tasks.py): what the app consumes after its post-processor
    min_detection_recall: float | None = None  # detections:yolo: reference detections the bundle keeps
    min_detection_precision: float | None = None  # detections:yolo: bundle detections the reference has
    min_class_detection_recall: float | None = None  # detections:yolo: worst class with enough detections
    min_string_agreement: float | None = None  # ctc: decoded strings equal
    max_char_error_rate: float | None = None  # ctc: edit distance / reference length
    min_topk_overlap: float | None = None  # topk: the reference's top-k found in the bundle's
    min_retrieval_recall: float | None = None  # retrieval: recall@k of the holdout neighbours
    min_task_agreement: float | None = None  # task:NAME (an installed post-processor's own agreement rate)
    judge: str = "evidence"  # "evidence", "bound" or "point" (see the module's docstring)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Limits":
        d = d or {}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

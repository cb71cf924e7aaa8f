"""Per-output parity metrics and the parity verdict: numpy arrays in, plain values out.

Host (``edgepack check``/``build``) and device (the bundle's runner) both call :func:`parity`, so they never disagree.
Rules that matter: shapes must match exactly (never broadcast); an all-zero side has cosine 0 unless both sides
are identical; NaN/Inf in the candidate fail every row of that output and are named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checks import Check, finite_or_none, judge
from .limits import Limits


def is_class_scores(arr: np.ndarray) -> bool:
    """(N, C) with C > 1: treated as class scores (top-1 agreement applies)."""
    return arr.ndim == 2 and arr.shape[1] > 1


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays; 1.0 only for identical arrays when a side is all zeros."""
    r = np.asarray(ref, np.float64).ravel()
    g = np.asarray(got, np.float64).ravel()
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
        return float("nan")
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    if denom > 0:
        return float(np.clip(r @ g / denom, -1.0, 1.0))
    return 1.0 if np.array_equal(r, g) else 0.0


def output_metrics(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one output over the whole holdout. Raises ValueError on a shape mismatch."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs bundle {got.shape}")
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    nonfinite = ~np.isfinite(got)
    diff = np.abs(ref - got).ravel()
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    eps = max(scale * 1e-3, 1e-12)
    m: dict[str, float] = {
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "p99_abs_error": float(np.percentile(diff, 99)) if diff.size else 0.0,
        "max_rel_error": float((diff / (np.abs(ref.ravel()) + eps)).max()) if diff.size else 0.0,
        "cosine": cosine(ref, got),
        "reference_spread": float(np.std(ref, axis=0).mean()) if ref.ndim >= 1 and len(ref) > 1 else 0.0,
        "nonfinite_samples": float(nonfinite.reshape(len(got), -1).any(axis=1).sum()) if got.ndim and len(got) else
        float(nonfinite.any()),
    }
    if is_class_scores(ref):
        ra, ga = ref.argmax(1), np.where(np.isfinite(got), got, -np.inf).argmax(1)
        m["top1_agreement"] = float((ra == ga).mean())
        if labels is not None and len(labels) == len(ref) and len(labels) and int(np.max(labels)) < ref.shape[1]:
            m["reference_accuracy"] = float((ra == labels).mean())
            m["bundle_accuracy"] = float((ga == labels).mean())
            m["accuracy_drop"] = m["reference_accuracy"] - m["bundle_accuracy"]
    return m


@dataclass
class ParityOutcome:
    """Metrics per output, the checks the limits ask for, and warnings. ``bool()`` is the verdict."""

    metrics: dict[str, dict[str, float]]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    samples: int = 0

    def __bool__(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": bool(self), "samples": self.samples,
                "metrics": {k: {mk: finite_or_none(mv) for mk, mv in m.items()} for k, m in self.metrics.items()},
                "checks": [c.to_dict() for c in self.checks], "warnings": list(self.warnings)}


def parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], limits: Limits,
           labels: np.ndarray | None = None) -> ParityOutcome:
    """Metrics for every reference output and the checks ``limits`` ask for."""
    metrics: dict[str, dict[str, float]] = {}
    checks: list[Check] = []
    warnings: list[str] = []
    for name, ref in reference.items():
        if name not in candidate:
            checks.append(Check(f"output {name} present", 1, 0, False, "==", "bundle produced no such output"))
            continue
        try:
            m = output_metrics(ref, candidate[name], labels)
        except ValueError as e:
            checks.append(Check(f"output {name} shape", 1, 0, False, "==", str(e)))
            continue
        metrics[name] = m
        if m["nonfinite_samples"]:
            checks.append(Check(f"output {name} finite", 0, m["nonfinite_samples"], False, "==",
                                f"bundle produced NaN/Inf in output {name} for {int(m['nonfinite_samples'])} samples"))
        if m["reference_spread"] == 0.0 and len(ref) > 1:
            warnings.append(f"reference output '{name}' is identical for every holdout sample: parity cannot tell a "
                            "working bundle from a broken one on this data")
        if limits.max_abs_error is not None:
            checks.append(judge(f"parity.max_abs_error[{name}]", m["max_abs_error"], limits.max_abs_error, "<="))
        if limits.min_cosine is not None:
            checks.append(judge(f"parity.min_cosine[{name}]", m["cosine"], limits.min_cosine, ">="))
        if limits.min_top1_agreement is not None and "top1_agreement" in m:
            checks.append(judge(f"parity.min_top1_agreement[{name}]", m["top1_agreement"],
                                limits.min_top1_agreement, ">="))
        if limits.max_accuracy_drop is not None and "accuracy_drop" in m:
            checks.append(judge(f"parity.max_accuracy_drop[{name}]", m["accuracy_drop"],
                                limits.max_accuracy_drop + 1e-12, "<="))
    n = len(next(iter(reference.values()))) if reference else 0
    return ParityOutcome(metrics=metrics, checks=checks, warnings=warnings, samples=n)

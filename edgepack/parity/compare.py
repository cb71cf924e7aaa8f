"""Per-output metrics and the parity verdict. Knows nothing of frameworks: numpy arrays in, a result value out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.config import ParityBudget
from edgepack.parity.tolerances import Tolerance


@dataclass
class Check:
    """One budget row: what was limited, the limit, what was measured, and the verdict."""

    name: str
    limit: float
    measured: float | None
    passed: bool
    op: str = "<="  # how measured relates to limit when passing
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "limit": self.limit, "measured": self.measured,
                "passed": self.passed, "note": self.note}


@dataclass
class ParityResult:
    metrics: dict[str, dict[str, float]]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    samples: int = 0

    def __bool__(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": bool(self), "samples": self.samples, "metrics": self.metrics,
                "checks": [c.to_dict() for c in self.checks], "warnings": self.warnings}


def is_class_scores(arr: np.ndarray) -> bool:
    """(N, C) with C > 1: treat as class scores (top-1 agreement applies)."""
    return arr.ndim == 2 and arr.shape[1] > 1


def output_metrics(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs bundle {got.shape}")
    diff = np.abs(ref - got).ravel()
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    eps = max(scale * 1e-3, 1e-12)
    r, g = ref.ravel(), got.ravel()
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    cosine = float(r @ g / denom) if denom > 0 else (1.0 if np.array_equal(r, g) else 0.0)
    m: dict[str, float] = {
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "p99_abs_error": float(np.percentile(diff, 99)) if diff.size else 0.0,
        "max_rel_error": float((diff / (np.abs(r) + eps)).max()) if diff.size else 0.0,
        "cosine": cosine,
        "reference_spread": float(np.std(ref, axis=0).mean()) if ref.ndim >= 1 and len(ref) > 1 else 0.0,
    }
    if is_class_scores(ref):
        ra, ga = ref.argmax(1), got.argmax(1)
        m["top1_agreement"] = float((ra == ga).mean())
        if labels is not None and len(labels) == len(ref) and int(labels.max()) < ref.shape[1]:
            m["reference_accuracy"] = float((ra == labels).mean())
            m["bundle_accuracy"] = float((ga == labels).mean())
            m["accuracy_drop"] = m["reference_accuracy"] - m["bundle_accuracy"]
    return m


def _limit(override: float | None, default: float | None) -> float | None:
    return override if override is not None else default


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance: Tolerance,
    budget: ParityBudget | None = None,
    labels: np.ndarray | None = None,
) -> ParityResult:
    """Metrics for every reference output and the checks the tolerance row (overridden by the budget) asks for."""
    budget = budget or ParityBudget()
    max_abs = _limit(budget.max_abs_error, tolerance.max_abs_error)
    min_cos = _limit(budget.min_cosine, tolerance.min_cosine)
    min_top1 = _limit(budget.min_top1_agreement, tolerance.min_top1_agreement)
    max_drop = _limit(budget.max_accuracy_drop, tolerance.max_accuracy_drop)
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
        if m["reference_spread"] == 0.0 and len(ref) > 1:
            warnings.append(f"reference output '{name}' is identical for every holdout sample: parity cannot tell a "
                            "working bundle from a broken one on this data")
        if max_abs is not None:
            checks.append(Check(f"parity.max_abs_error[{name}]", max_abs, m["max_abs_error"],
                                m["max_abs_error"] <= max_abs, "<="))
        if min_cos is not None:
            checks.append(Check(f"parity.min_cosine[{name}]", min_cos, m["cosine"], m["cosine"] >= min_cos, ">="))
        if min_top1 is not None and "top1_agreement" in m:
            checks.append(Check(f"parity.min_top1_agreement[{name}]", min_top1, m["top1_agreement"],
                                m["top1_agreement"] >= min_top1, ">="))
        if max_drop is not None and "accuracy_drop" in m:
            checks.append(Check(f"parity.max_accuracy_drop[{name}]", max_drop, m["accuracy_drop"],
                                m["accuracy_drop"] <= max_drop + 1e-12, "<="))
    n = len(next(iter(reference.values()))) if reference else 0
    return ParityResult(metrics=metrics, checks=checks, warnings=warnings, samples=n)

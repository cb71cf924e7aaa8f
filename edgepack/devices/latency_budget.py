"""Device-class latency budgets (``[budgets.device.<class>]`` in a target profile), judged on real devices only.

A budget is judged on the per-call latency samples the device's runner returns: p50/p90 with a percentile
bootstrap interval (``confidence``, ``resamples``, seeded so a run is reproducible). Met when the interval's upper
bound is within the limit, exceeded when its lower bound is over it, inconclusive otherwise (more runs narrow it).
A run with fewer than ``min_runs`` calls or less than ``min_seconds`` of timed calls is ``insufficient`` (not
judged). On an emulated device the budget is recorded and never judged. A benchmark binary that prints only a
summary (a phone without Python) is judged on its point estimates, said so, without an interval.
"""

from __future__ import annotations

from typing import Any

MET, EXCEEDED, INCONCLUSIVE, INSUFFICIENT, NOT_JUDGED = "met", "exceeded", "inconclusive", "insufficient", "not judged"
QUANTILES = (("p50_ms", 50.0), ("p90_ms", 90.0))


def budget_for(manifest: dict, device_class: str):
    """The profile's budget for ``device_class`` (None when it has none or the manifest's profile is unreadable)."""
    from pydantic import ValidationError

    from edgepack.config import TargetProfile

    try:
        profile = TargetProfile.model_validate(manifest["target"])
    except (ValidationError, KeyError, TypeError):
        return None
    return profile.device_latency_budget(device_class)


def bootstrap(samples: list[float], q: float, confidence: float, resamples: int, seed: int = 0
              ) -> tuple[float, float, float]:
    """(point estimate, low, high) of the ``q``-th percentile: percentile bootstrap over ``resamples`` resamples."""
    import numpy as np

    x = np.asarray(samples, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    stats = np.percentile(x[idx], q, axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(np.percentile(x, q)), float(lo), float(hi)


def judge(budget, latency: dict[str, Any], *, device_class: str, emulated: bool) -> dict[str, Any]:
    """The budget verdict for one device result (``latency`` as the runner reported it)."""
    limits = {k: getattr(budget, k) for k, _ in QUANTILES if getattr(budget, k) is not None}
    out: dict[str, Any] = {"class": device_class, "limits": limits, "confidence": budget.confidence,
                           "min_runs": budget.min_runs, "min_seconds": budget.min_seconds, "warmup": budget.warmup,
                           "rows": []}
    if emulated:
        return {**out, "status": NOT_JUDGED, "note": "emulated device: latency recorded, never judged"}
    if not limits:
        return {**out, "status": NOT_JUDGED, "note": "the budget sets no p50_ms/p90_ms"}
    samples = list(latency.get("samples_ms") or [])
    runs = len(samples) or int(latency.get("runs") or latency.get("repeats") or 0)
    seconds = sum(samples) / 1000.0 if samples else None
    out.update(runs=runs, seconds=seconds)
    if runs < budget.min_runs or (seconds is not None and seconds < budget.min_seconds):
        have = f"{runs} runs" + (f", {seconds:.2f} s" if seconds is not None else "")
        return {**out, "status": INSUFFICIENT, "note": f"not judged: {have} < {budget.min_runs} runs / "
                                                       f"{budget.min_seconds} s asked"}
    verdicts = []
    for key, q in QUANTILES:
        if key not in limits:
            continue
        limit = limits[key]
        if samples:
            point, lo, hi = bootstrap(samples, q, budget.confidence, budget.resamples)
            v = MET if hi <= limit else EXCEEDED if lo > limit else INCONCLUSIVE
            out["rows"].append({"name": key, "limit": limit, "measured": point, "ci_low": lo, "ci_high": hi,
                                "verdict": v})
        elif latency.get(key) is not None:
            point = float(latency[key])
            v = MET if point <= limit else EXCEEDED
            out["rows"].append({"name": key, "limit": limit, "measured": point, "ci_low": None, "ci_high": None,
                                "verdict": v, "note": "point estimate: the tool prints no per-run samples"})
        else:
            v = INSUFFICIENT
            out["rows"].append({"name": key, "limit": limit, "measured": None, "verdict": v,
                                "note": f"the device reported no {key}"})
        verdicts.append(v)
    status = (EXCEEDED if EXCEEDED in verdicts else INSUFFICIENT if INSUFFICIENT in verdicts
              else INCONCLUSIVE if INCONCLUSIVE in verdicts else MET)
    return {**out, "status": status, "note": summary(out["rows"], device_class)}


def summary(rows: list[dict], device_class: str) -> str:
    parts = []
    for r in rows:
        if r.get("measured") is None:
            parts.append(f"{r['name']}: not reported")
            continue
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else " (point)"
        parts.append(f"{r['name']} {r['measured']:.3f}{ci} vs {r['limit']:g} ms: {r['verdict']}")
    return f"{device_class} latency budget: " + "; ".join(parts)

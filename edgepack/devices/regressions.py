"""Regression tests against a baseline window of earlier runs (not a single noisy run).

* latency: one-sided Mann-Whitney U (normal approximation with tie correction) of the latest run's samples against
  the pooled samples of the last ``window`` runs; a regression needs p < ``alpha`` AND a median slow-down of at least
  ``min_ratio`` (a significant 1 % change is not worth a page). Emulated latency is tested too but only reported.
* parity: the latest top-1 agreement's 95% interval lies entirely below the baseline's mean agreement, or the
  latest per-sample cosine (p1) drops below the baseline's minimum by more than 3 baseline standard deviations
  (floor 1e-4); a PASS → FAIL (or → INCONCLUSIVE) change of status is always flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def mann_whitney_greater(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(U, one-sided p) for "x tends to be larger than y"; normal approximation with tie correction."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        return float("nan"), 1.0
    allv = np.concatenate([x, y])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    i = 0
    ties = 0.0
    while i < allv.size:  # average ranks over ties
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return float(u), 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)  # continuity correction
    return float(u), float(0.5 * math.erfc(z / math.sqrt(2.0)))


@dataclass
class Flag:
    device: str
    bundle: str
    config: str
    what: str  # latency | parity | status
    detail: str


def _min_metric(parity: dict, key: str) -> float | None:
    vals = [m[key] for m in parity.values() if isinstance(m, dict) and m.get(key) is not None]
    return min(vals) if vals else None


def check_series(key: tuple[str, str, str], rows: list[dict[str, Any]], *, window: int = 5, alpha: float = 0.01,
                 min_ratio: float = 1.05) -> list[Flag]:
    """Flags for the latest row of one (device, bundle, config) series against the ``window`` rows before it."""
    if len(rows) < 2:
        return []
    latest, base = rows[-1], rows[-1 - window:-1]
    flags: list[Flag] = []
    if latest["status"] in ("FAIL", "INCONCLUSIVE") and any(r["status"] in ("PASS", "FLAKY") for r in base):
        flags.append(Flag(*key, "status", f"{base[-1]['status']} → {latest['status']}: {latest['reason']}"))
    pooled = np.concatenate([np.asarray(r["samples_ms"], float) for r in base if r["samples_ms"]] or [np.empty(0)])
    now = np.asarray(latest["samples_ms"], float)
    if now.size >= 5 and pooled.size >= 5:
        _, p = mann_whitney_greater(now, pooled)
        ratio = float(np.median(now) / np.median(pooled)) if np.median(pooled) > 0 else float("inf")
        if p < alpha and ratio >= min_ratio:
            where = " (emulated: reported, not judged)" if latest["latency_where"] == "emulated" else ""
            flags.append(Flag(*key, "latency", f"median {np.median(now):.3f} ms vs {np.median(pooled):.3f} ms "
                                               f"(×{ratio:.2f}, Mann-Whitney p={p:.2g}, baseline {len(base)} runs)"
                                               f"{where}"))
    agree_hi = _min_metric(latest["parity"], "top1_agreement_ci_high")
    base_agree = [a for a in (_min_metric(r["parity"], "top1_agreement") for r in base) if a is not None]
    if agree_hi is not None and base_agree and agree_hi < float(np.mean(base_agree)):
        flags.append(Flag(*key, "parity", f"top-1 agreement 95% interval ends at {agree_hi:.4f}, below the "
                                          f"baseline mean {np.mean(base_agree):.4f}"))
    cos_now = _min_metric(latest["parity"], "sample_cosine_p1")
    base_cos = [c for c in (_min_metric(r["parity"], "sample_cosine_p1") for r in base) if c is not None]
    if cos_now is not None and base_cos:
        floor = min(base_cos) - 3 * max(float(np.std(base_cos)), 1e-4)
        if cos_now < floor:
            flags.append(Flag(*key, "parity", f"per-sample cosine p1 {cos_now:.4f} < {floor:.4f} (baseline min "
                                              f"{min(base_cos):.4f} − 3σ)"))
    return flags


def check_all(history: dict[tuple[str, str, str], list[dict[str, Any]]], **kw) -> list[Flag]:
    return [f for key, rows in sorted(history.items()) for f in check_series(key, rows, **kw)]

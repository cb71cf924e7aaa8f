"""Budgets: size and host latency checks, and the latency measurement itself (warm-up, repeats, p50/p90)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from edgepack.config import Budgets
from edgepack.parity.compare import Check

MB = 1024 * 1024


def measure_latency(infer: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    """Wall-clock latency of ``infer()`` in ms after ``warmup`` calls: p50, p90, mean, min over ``repeats``."""
    for _ in range(warmup):
        infer()
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        infer()
        times[i] = (time.perf_counter() - t0) * 1000.0
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "repeats": repeats,
        "warmup": warmup,
    }


def check(budgets: Budgets, size_bytes: int, latency: dict[str, float] | None) -> list[Check]:
    """Size and latency rows. A latency budget with no host measurement fails: an unmeasured budget is not met."""
    rows: list[Check] = []
    if budgets.max_size_mb is not None:
        mb = size_bytes / MB
        rows.append(Check("size_mb", budgets.max_size_mb, mb, mb <= budgets.max_size_mb))
    for key, limit in (("p50_ms", budgets.max_latency_p50_ms), ("p90_ms", budgets.max_latency_p90_ms)):
        if limit is None:
            continue
        measured = None if latency is None else latency[key]
        rows.append(Check(f"host_latency_{key}", limit, measured, measured is not None and measured <= limit,
                          note="" if measured is not None else "no host runtime: latency not measured"))
    return rows

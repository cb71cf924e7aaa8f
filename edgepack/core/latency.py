"""Latency measurement and statistics (warm-up, repeats, percentiles)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def summarize(times_ms: list[float] | np.ndarray, warmup: int = 0) -> dict[str, float]:
    t = np.asarray(times_ms, np.float64)
    return {
        "p50_ms": float(np.percentile(t, 50)),
        "p90_ms": float(np.percentile(t, 90)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "repeats": int(t.size),
        "warmup": int(warmup),
    }


def measure(infer: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    """Wall-clock latency of ``infer()`` in ms after ``warmup`` calls: p50, p90, mean, min over ``repeats``."""
    for _ in range(warmup):
        infer()
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        infer()
        times[i] = (time.perf_counter() - t0) * 1000.0
    return summarize(times, warmup)

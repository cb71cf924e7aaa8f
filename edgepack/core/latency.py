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


def measure(infer: Callable[[], Any], warmup: int, repeats: int, keep_samples: bool = False,
            min_seconds: float = 0.0, max_repeats: int = 1_000_000) -> dict[str, Any]:
    """Wall-clock latency of ``infer()`` in ms after ``warmup`` calls: p50, p90, mean, min over ``repeats`` timed
    calls — or more, until the timed calls add up to ``min_seconds`` (at most ``max_repeats``) — and every timed call
    as ``samples_ms`` with ``keep_samples``, for bootstrap intervals and regression tests across runs."""
    for _ in range(warmup):
        infer()
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or (total < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter()
        infer()
        dt = time.perf_counter() - t0
        times.append(dt * 1000.0)
        total += dt
    out: dict[str, Any] = dict(summarize(times, warmup))
    if keep_samples:
        out["samples_ms"] = [round(float(t), 6) for t in times]
    return out

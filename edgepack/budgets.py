"""Budgets: size and host latency checks (the latency measurement itself is ``edgepack.core.latency``)."""

from __future__ import annotations

from edgepack.config import Budgets
from edgepack.core.checks import Check, judge
from edgepack.core.latency import measure as measure_latency

__all__ = ["MB", "check", "measure_latency"]

MB = 1024 * 1024


def check(budgets: Budgets, size_bytes: int, latency: dict[str, float] | None) -> list[Check]:
    """Size and latency rows. A latency budget with no host measurement fails: an unmeasured budget is not met."""
    rows: list[Check] = []
    if budgets.max_size_mb is not None:
        rows.append(judge("size_mb", size_bytes / MB, budgets.max_size_mb, "<="))
    for key, limit in (("p50_ms", budgets.max_latency_p50_ms), ("p90_ms", budgets.max_latency_p90_ms)):
        if limit is None:
            continue
        measured = None if latency is None else latency[key]
        rows.append(judge(f"host_latency_{key}", measured, limit, "<=",
                          note="" if measured is not None else "no host runtime: latency not measured"))
    return rows

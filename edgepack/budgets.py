"""Budgets: size and host latency checks (the latency measurement itself is ``edgepack.core.latency``).

Host latency is judged only for profiles whose device class the x86 build host can stand in for
(:func:`edgepack.config.host_judges_latency`); an ``android-*``/``jetson-*``/``iphone`` profile's latency budget is
judged by ``edgepack device run`` on real devices of that class, and the host's numbers stay in the report as
``host`` latency only."""

from __future__ import annotations

from edgepack.config import Budgets, host_judges_latency
from edgepack.core.checks import Check, judge
from edgepack.core.latency import measure as measure_latency

__all__ = ["MB", "check", "measure_latency"]

MB = 1024 * 1024


def check(budgets: Budgets, size_bytes: int, latency: dict[str, float] | None,
          device_class: str = "generic") -> list[Check]:
    """Size and latency rows. A latency budget with no host measurement fails: an unmeasured budget is not met.
    No host latency row for a device class the host cannot stand in for (see :func:`device_notes`)."""
    rows: list[Check] = []
    if budgets.max_size_mb is not None:
        rows.append(judge("size_mb", size_bytes / MB, budgets.max_size_mb, "<="))
    if not host_judges_latency(device_class):
        return rows
    for key, limit in (("p50_ms", budgets.max_latency_p50_ms), ("p90_ms", budgets.max_latency_p90_ms)):
        if limit is None:
            continue
        measured = None if latency is None else latency[key]
        rows.append(judge(f"host_latency_{key}", measured, limit, "<=",
                          note="" if measured is not None else "no host runtime: latency not measured"))
    return rows


def device_notes(budgets: Budgets, device_class: str) -> list[str]:
    """Notes saying where the latency budgets of a profile are judged (never on this host for a device class)."""
    notes = []
    own = [f"{k} <= {v} ms" for k, v in (("p50", budgets.max_latency_p50_ms), ("p90", budgets.max_latency_p90_ms))
           if v is not None]
    if own and not host_judges_latency(device_class):
        notes.append(f"latency budget ({', '.join(own)}) is for {device_class} devices: judged by `edgepack device "
                     "run` on real devices of that class, not on this host (host latency is recorded as host)")
    for klass, b in sorted(budgets.device.items()):
        lim = ", ".join(f"{k} <= {v} ms" for k, v in (("p50", b.p50_ms), ("p90", b.p90_ms)) if v is not None)
        notes.append(f"device latency budget {klass}: {lim or 'no limit'} (>= {b.min_runs} runs, >= {b.min_seconds} s, "
                     f"{b.warmup} warm-up, {b.confidence:.0%} bootstrap interval): judged on real {klass} devices only")
    return notes

"""Budgets: size and host latency checks (the latency measurement itself is ``edgepack.core.latency``).

Host latency is judged only for profiles whose device class the x86 build host can stand in for
(:func:`edgepack.config.host_judges_latency`); an ``android-*``/``jetson-*``/``iphone`` profile's latency budget is
judged by ``edgepack device run`` on real devices of that class, and the host's numbers stay in the report as
``host`` latency only."""

from __future__ import annotations

from typing import Any

from edgepack.config import Budgets, host_judges_latency
from edgepack.core.checks import Check, judge
from edgepack.core.latency import measure as measure_latency

__all__ = ["MB", "check", "int8_payoff", "measure_latency"]

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


def int8_payoff(budgets: Budgets, device_class: str, details: dict[str, Any],
                size_bytes: int) -> tuple[list[Check], list[str]]:
    """INT8 that does not pay: the bundle both larger than the float model and slower than it in the same runtime on
    this host (1 thread, interleaved: ``accuracy_search.cost.latency_vs_float``). A failing row ``int8_pays`` when
    the profile's ``int8_must_pay`` is on (default: profiles whose latency this host judges), else a note; both say
    why (Q/DQ overhead, ops not running in INT8, layers kept in float). Nothing when a figure is missing."""
    ref = details.get("float_reference") or {}
    cost = (details.get("accuracy_search") or {}).get("cost") or {}
    float_bytes, lat = ref.get("size_bytes"), cost.get("latency_vs_float")
    if not float_bytes or lat is None:
        return [], []
    size_ratio = size_bytes / float_bytes
    pays = size_ratio <= 1.0 or lat <= SLOWER
    note = (f"INT8 bundle {size_ratio:.2f}× the size of {ref.get('what', 'the float model')}, host latency "
            f"{lat:.2f}× float (same runtime, 1 thread, interleaved; slower = over {SLOWER}×)")
    enforce = budgets.int8_must_pay if budgets.int8_must_pay is not None else host_judges_latency(device_class)
    if pays:
        return ([Check("int8_pays", 1, 1, True, "==", note)] if enforce else []), []
    why = why_int8_costs(details)
    if not enforce:
        return [], [f"INT8 does not pay here: larger and slower than float ({note}); {why}"]
    return [Check("int8_pays", 1, 0, False, "==", f"larger AND slower than float: {note}; {why}")], []


SLOWER = 1.1  # host timing noise on a busy machine: an INT8 build within 10 % of float is not called slower


def why_int8_costs(details: dict[str, Any]) -> str:
    """What the artifact's details say about an INT8 build's overhead."""
    parts = []
    qdq, ops = details.get("qdq_nodes"), details.get("graph_nodes")
    if qdq:
        parts.append(f"{qdq} Q/DQ nodes" + (f" in a graph of {ops} nodes" if ops else "")
                     + " (each quantized tensor carries its quantize/dequantize pair and scale/zero-point constants)")
    fq = details.get("fake_quantize_ops")
    if fq:
        parts.append(f"{fq} FakeQuantize ops")
    compute, quantized = details.get("compute_ops"), details.get("quantized_compute_ops")
    if isinstance(compute, int) and isinstance(quantized, int):
        parts.append(f"{quantized}/{compute} compute ops quantized")
    if details.get("int8_runtime_ops") is not None and isinstance(compute, int):
        parts.append(f"{details['int8_runtime_ops']}/{compute} run in INT8 on the CPU plugin (the rest unfused, "
                     "in float between FakeQuantize ops)")
    floats = details.get("float_compute_ops") or []
    if floats:
        parts.append(f"kept in float: {', '.join(map(str, floats[:6]))}{' …' if len(floats) > 6 else ''}")
    share = ((details.get("accuracy_search") or {}).get("cost") or {}).get("int8_compute_share")
    if share is not None:
        parts.append(f"INT8 share of compute {share:.0%}")
    return "why: " + ("; ".join(parts) if parts else "no census of the quantized graph") + \
        ("; small models pay the per-tensor overhead without enough arithmetic to win it back")

"""Judge what came back from a device: PASS, FAIL, INCONCLUSIVE, INFRA, FLAKY, SKIPPED or NOT_RUN — never PASS for a
run that did not happen.

* PASS     the runner printed a verdict that passed, exited 0 (marker), and actually compared samples.
* FAIL     the runner printed a verdict that failed and exited 1 (parity, integrity: e.g. a tampered bundle).
* INCONCLUSIVE  the runner exited 1 with verdict "inconclusive": no row failed, but a rate budget had too few golden
           samples to be proven (the reason names the rows and the samples they need). Counts as not passed.
* INFRA    no marker (lost connection, killed transport), a time-out, a runner killed by a signal, no verdict
           or a verdict that contradicts the exit code, a push/pull that failed.
* FLAKY    not PASS at first, PASS on a retry.
* SKIPPED  the runtime is not installed on that device (exit 2, "runtime unavailable").
* NOT_RUN  parity not run on this device (a phone without a Python: only latency from the benchmark binary).
"""

from __future__ import annotations

import json
from typing import Any

from edgepack.devices.transports import RawRun

PASS, FAIL, INFRA, FLAKY, SKIPPED, NOT_RUN = "PASS", "FAIL", "INFRA", "FLAKY", "SKIPPED", "NOT_RUN"
INCONCLUSIVE = "INCONCLUSIVE"
OK = (PASS, FLAKY)


def _verdict_json(stdout: str) -> dict | None:
    text = stdout.strip()
    if not text:
        return None
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")  # tolerate a banner before the JSON (login shells print motd lines)
        try:
            v = json.loads(text[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            return None
    return v if isinstance(v, dict) and _well_formed(v) else None


def _well_formed(v: dict) -> bool:
    """The verdict's parts the harness reads have the runner's shapes (a device's output is data, not trusted)."""
    parity, integrity = v.get("parity") or {}, v.get("integrity") or {}
    return (isinstance(parity, dict) and isinstance(integrity, dict)
            and isinstance(parity.get("checks") or [], list)
            and all(isinstance(c, dict) for c in parity.get("checks") or [])
            and isinstance(parity.get("metrics") or {}, dict)
            and all(isinstance(m, dict) for m in (parity.get("metrics") or {}).values())
            and isinstance(integrity.get("problems") or [], list)
            and all(isinstance(v.get(k) or {}, dict) for k in ("latency", "runtime")))


def judge(raw: RawRun) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, verdict dict as printed by the runner or {})."""
    if raw.infra:
        return INFRA, raw.infra, {}
    if raw.timed_out:
        return INFRA, f"timed out after {raw.seconds:.0f} s (runner hung or device unresponsive)", {}
    tail = (raw.stderr or raw.stdout).strip()[-300:]
    if raw.exit_code is None:
        why = "connection lost" if raw.transport_code == 255 else f"transport exited {raw.transport_code}"
        return INFRA, f"no exit marker from the device ({why}): {tail}", {}
    verdict = _verdict_json(raw.stdout)
    if raw.exit_code == 124 and verdict is None:
        return INFRA, f"timed out on the device (its timeout killed the runner): {tail}", {}
    if raw.exit_code >= 128:
        return INFRA, f"runner killed by signal {raw.exit_code - 128}: {tail}", verdict or {}
    if verdict is None:
        return INFRA, f"runner printed no verdict (exit {raw.exit_code}): {tail}", {}
    if raw.exit_code == 2 and str(verdict.get("error", "")).startswith("runtime unavailable"):
        return SKIPPED, verdict["error"], verdict
    if raw.exit_code == 0 and verdict.get("passed") is True:
        parity = verdict.get("parity") or {}
        if not parity.get("checks") or not parity.get("samples"):
            return INFRA, "the runner said passed but compared nothing", verdict
        return PASS, "", verdict
    if raw.exit_code == 1 and verdict.get("passed") is False and verdict.get("verdict") == "inconclusive":
        rows = [c for c in (verdict.get("parity") or {}).get("checks", []) if c.get("inconclusive")]
        if not rows:
            return INFRA, "the runner said inconclusive but no row was", verdict
        return INCONCLUSIVE, "too few golden samples: " + ", ".join(
            f"{c.get('name', '?')} needs ≥ {c.get('samples_needed', '?')}" for c in rows[:4]), verdict
    if raw.exit_code == 1 and verdict.get("passed") is False:
        bad = [str(c.get("name", "?")) for c in (verdict.get("parity") or {}).get("checks", []) if not c.get("passed")]
        integrity = verdict.get("integrity") or {}
        reason = str(verdict.get("error") or "") or "; ".join(
            ([f"integrity: {', '.join(map(str, integrity.get('problems', [])[:3]))}"] if not integrity.get("passed", True) else [])
            + ([f"parity: {', '.join(bad[:4])}"] if bad else [])) or "failed"
        return FAIL, reason, verdict
    return INFRA, f"exit code {raw.exit_code} contradicts the verdict (passed={verdict.get('passed')})", verdict


def combine(attempts: list[str]) -> str:
    """The status of a run from its attempts' statuses (the last attempt decides; PASS after a failure is FLAKY)."""
    last = attempts[-1]
    if last == PASS and len(attempts) > 1:
        return FLAKY
    return last


def retryable(status: str) -> bool:
    """Only INFRA is retried: parity on one device is deterministic, so a FAIL (or INCONCLUSIVE) is the answer, not
    bad luck."""
    return status == INFRA

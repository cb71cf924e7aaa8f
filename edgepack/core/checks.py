"""A check is one budget row: what was limited, the limit, what was measured, and the verdict.

A row is in one of four states (:attr:`Check.state`): ``passed``; ``failed``; ``inconclusive`` — a rate budget the
evidence cannot support (too few samples for even a flawless result to prove it; ``samples_needed`` says how many
would); ``not applied`` — a budget shown for information that judges nothing (e.g. a class-score budget and an output
whose kind is ``other``). A build's verdict (:func:`verdict`): failed > inconclusive > passed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    measured: float | None
    passed: bool
    op: str = "<="  # how ``measured`` relates to ``limit`` when passing: <=, >=, ==
    note: str = ""
    inconclusive: bool = False  # too few samples to support the budget: neither passed nor failed (passed is False)
    applied: bool = True  # False: shown for information only, judges nothing (passed is True)
    samples_needed: int | None = None  # a rate budget's row: samples a flawless result needs to prove the budget

    @property
    def state(self) -> str:
        """``passed``, ``failed``, ``inconclusive`` or ``not applied``."""
        if not self.applied:
            return NOT_APPLIED
        if self.inconclusive:
            return INCONCLUSIVE
        return PASSED if self.passed else FAILED

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured"] = finite_or_none(self.measured)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Check":
        return cls(name=d["name"], limit=d["limit"], measured=d.get("measured"), passed=bool(d["passed"]),
                   op=d.get("op", "<="), note=d.get("note", ""), inconclusive=bool(d.get("inconclusive", False)),
                   applied=bool(d.get("applied", True)), samples_needed=d.get("samples_needed"))


PASSED, FAILED, INCONCLUSIVE, NOT_APPLIED = "passed", "failed", "inconclusive", "not applied"
VERDICTS = (PASSED, INCONCLUSIVE, FAILED)  # in order of precedence, weakest first


def verdict(checks: Iterable[Check]) -> str:
    """``failed`` when a row failed, else ``inconclusive`` when a row could not be decided, else ``passed``."""
    states = {c.state for c in checks}
    return FAILED if FAILED in states else INCONCLUSIVE if INCONCLUSIVE in states else PASSED


def worst(verdicts: Iterable[str]) -> str:
    """The combined verdict of several (failed > inconclusive > passed)."""
    return max(verdicts, key=VERDICTS.index, default=PASSED)


def finite_or_none(value: Any) -> Any:
    """``None`` for NaN/Inf floats (strict JSON has no NaN), the value otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def judge(name: str, measured: float | None, limit: float, op: str, note: str = "") -> Check:
    """A check row; a missing or non-finite measurement never passes."""
    ok = measured is not None and math.isfinite(measured)
    if ok:
        ok = measured <= limit if op == "<=" else measured >= limit if op == ">=" else measured == limit
    if measured is not None and not math.isfinite(measured) and not note:
        note = f"measured {measured}"
    return Check(name, limit, measured, bool(ok), op, note)


def finite_json(obj: Any) -> Any:
    """JSON-able data with NaN/Inf floats replaced by None (strict JSON), recursively."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj

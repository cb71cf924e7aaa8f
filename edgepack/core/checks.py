"""A check is one budget row: what was limited, the limit, what was measured, and the verdict."""

from __future__ import annotations

import math
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measured"] = finite_or_none(self.measured)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Check":
        return cls(name=d["name"], limit=d["limit"], measured=d.get("measured"), passed=bool(d["passed"]),
                   op=d.get("op", "<="), note=d.get("note", ""))


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

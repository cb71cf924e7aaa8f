"""Parity limits: the merged tolerance row and profile budget a bundle is judged against (``None`` = not checked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_abs_error: float | None = None
    min_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Limits":
        d = d or {}
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

"""Plan before work: every target resolved against the source — runtime installed, source format and route, the
backend's own preflight (ops, opset, shapes), the model's custom ops — before any conversion starts.

``edgepack plan`` prints it; ``edgepack build`` makes the same plan first and refuses (or, with
``--skip-unavailable``, skips) the targets that cannot be built, each with its reason.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from edgepack.backends.base import TORCH_BRIDGE_ROUTE as TORCH_ROUTE
from edgepack.backends.registry import Target
from edgepack.errors import ConfigError, EdgepackError, NotApplicable
from edgepack.sources import Source

Action = Literal["build", "skip", "refuse"]


@dataclass(frozen=True)
class PlanRow:
    target: str
    backend: str
    precision: str
    action: Action
    route: str  # how the source reaches the backend ("direct (onnx)", "torch → onnx bridge", …)
    reason: str | None = None  # why a target is skipped or refused (short)
    hint: str | None = None  # what to do about it
    calibration: bool = False  # whether the target reads calibration data
    bundle: str | None = None  # where build would write it (OUT/<model>/<target>; when the plan was given --out)


@dataclass(frozen=True)
class Plan:
    model: str
    source: dict
    rows: tuple[PlanRow, ...]

    @property
    def buildable(self) -> list[str]:
        return [r.target for r in self.rows if r.action == "build"]

    @property
    def refused(self) -> list[PlanRow]:
        return [r for r in self.rows if r.action == "refuse"]

    def to_dict(self) -> dict:
        return {"model": self.model, "source": self.source, "targets": [asdict(r) for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _custom_ops(source: Source) -> list[str]:
    """Ops outside the standard ONNX domains (only ORT can run com.microsoft ops; nobody runs unknown ones)."""
    if source.kind != "onnx":
        return []
    from edgepack.sources.onnx import op_census, read_model

    ops = op_census(read_model(Path(source.path), load_weights=False))
    return sorted(op for op in ops if "::" in op)


def _bridge_gaps(targets: list[Target], source: Source) -> list[str]:
    """The ONNX ops the onnx → torch bridge has no converter for (checked only when a target goes that way)."""
    if source.kind != "onnx" or not any(not t.backend.missing() and t.backend.route(source.kind) == (True, TORCH_ROUTE)
                                        for t in targets):
        return []
    from edgepack.sources.onnx_torch import census

    return census(source)


def why_not(target: Target, source: Source, custom_ops: list[str],
            bridge_gaps: list[str] | None = None) -> tuple[str, str | None, str | None]:
    """(route, reason it cannot be built or None, hint). A preflight's :class:`NotApplicable` comes back as a reason
    too; :func:`make` skips those targets (see :func:`not_applicable`)."""
    backend = target.backend
    missing = backend.missing()
    if missing:
        return "—", f"not installed: {', '.join(missing)}", f"pip install -c constraints.txt -e '.[{backend.extra}]'"
    ok, route = backend.route(source.kind)
    if not ok:
        return "—", route, backend.refusals.get(source.kind)
    foreign = [op for op in custom_ops if not (backend.name == "ort_mobile" and op.startswith("com.microsoft::"))]
    if foreign:
        return route, f"ops outside the ONNX standard: {', '.join(foreign)}", "only ort_mobile runs com.microsoft ops"
    if route == TORCH_ROUTE:
        loose = [f"{t.name} {t.shape_str()}" for t in source.inputs
                 if any(d is None and i != t.batch_axis and i not in {a for a, *_ in t.dims}
                        for i, d in enumerate(t.shape))]
        if loose:
            return route, (f"the {TORCH_ROUTE} exports one static shape, and input {', '.join(loose)} has dynamic "
                           "dimensions"), ("declare them: --input NAME=1x3x256x256 (or dims=AXIS:MIN/OPT/MAX; the "
                                           "bridge exports at OPT)")
    if route == TORCH_ROUTE and bridge_gaps:
        return route, f"the {TORCH_ROUTE} has no converter for: {', '.join(bridge_gaps)}", \
            "build the ort_mobile/openvino targets, which take the ONNX model directly (docs/bridge.md)"
    if backend.has_preflight() and source.kind in backend.accepts:  # bridged sources: checked after the bridge
        try:
            backend.preflight(source, target.profile, target.options)
        except NotApplicable as e:
            return route, NOT_APPLICABLE + e.message, e.hint or None
        except EdgepackError as e:
            return route, e.message, e.hint or None
    return route, None, None


NOT_APPLICABLE = "not applicable: "


def not_applicable(reason: str | None) -> bool:
    """Whether a plan reason says the target means nothing for this model (always skipped, never refused)."""
    return bool(reason) and reason.startswith(NOT_APPLICABLE)


def make(model: str, targets: list[Target], source: Source, skip_unavailable: bool) -> Plan:
    custom = _custom_ops(source)
    gaps = _bridge_gaps(targets, source)
    rows = []
    for t in targets:
        route, reason, hint = why_not(t, source, custom, gaps)
        action: Action = ("build" if reason is None else
                          "skip" if skip_unavailable or not_applicable(reason) else "refuse")
        rows.append(PlanRow(target=t.name, backend=t.backend.name, precision=t.profile.precision, action=action,
                            route=route, reason=reason, hint=hint,
                            calibration=bool(reason is None and t.backend.needs_calibration(t.profile, t.options))))
    return Plan(model=model, source=source.describe(), rows=tuple(rows))


def refuse(plan: Plan) -> None:
    """Raise the one-line refusal for a plan with targets that cannot be built (no --skip-unavailable)."""
    bad = plan.refused
    if not bad:
        return
    by_reason: dict[str, list[str]] = {}
    for r in bad:
        by_reason.setdefault(r.reason or "", []).append(r.target)
    listing = "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())
    many = len(bad) > 1
    specific = list(dict.fromkeys(r.hint for r in bad if r.hint))
    raise ConfigError(f"{len(bad)} target{'s' if many else ''} cannot build {plan.model} ({listing})",
                      hint="; ".join(specific + [f"otherwise drop {'them' if many else 'it'}, or pass "
                                                 "--skip-unavailable to build the others and report these as skipped "
                                                 "(`edgepack plan` shows the whole plan)"]))


__all__ = ["Plan", "PlanRow", "make", "not_applicable", "refuse", "why_not"]


class _CallableModule(types.ModuleType):
    """``edgepack.plan`` is both this module (``from edgepack import plan as plans``) and the Python API's
    ``edgepack.plan(model, targets, ...)``: a call is handed to ``edgepack.api.plan`` (docs/api.md). The API sits
    above this layer, so it is looked up at call time, never imported here."""

    def __call__(self, *args, **kwargs):
        return importlib.import_module("edgepack.api").plan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

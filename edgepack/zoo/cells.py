"""The zoo's cells: every model × target, planned with the ordinary plan (build / skip / refuse + reason) and keyed
by content (``keys``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepack import pipeline
from edgepack.backends.base import BRIDGE_NEEDS
from edgepack.errors import EdgepackError
from edgepack.zoo import keys
from edgepack.zoo.spec import ModelEntry, Zoo, declarations

SOURCE_NEEDS = {"onnx": ("onnx",), "torch": ("torch",), "tf": ("tensorflow", "keras")}


@dataclass(frozen=True)
class Cell:
    """One model × target: what the plan says, its content key and what it needs from the machine that builds it."""

    id: str  # "<model>/<target>"
    model: str
    target: str
    profile: str | None  # the profile file the target was read from
    backend: str
    precision: str
    action: str  # build | skip | refuse
    reason: str | None = None
    hint: str | None = None
    route: str = ""
    key: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ZooPlan:
    zoo: str
    cells: tuple[Cell, ...]

    def to_json(self) -> str:
        return json.dumps({"zoo": self.zoo, "cells": [c.to_dict() for c in self.cells]}, indent=2, sort_keys=True,
                          allow_nan=False) + "\n"

    def cell(self, cell_id: str) -> Cell:
        from edgepack.errors import ConfigError

        for c in self.cells:
            if c.id == cell_id:
                return c
        raise ConfigError(f"no cell '{cell_id}' in {self.zoo}", hint="cells are MODEL/TARGET; `edgepack zoo plan` "
                          "lists them")


def target_names(zoo: Zoo, m: ModelEntry) -> list[str]:
    return ["all"] if m.targets == "all" else [zoo.resolve(t) or t for t in m.targets]


def targets_dir(zoo: Zoo) -> Path | None:
    return Path(zoo.resolve(zoo.targets_dir)) if zoo.targets_dir else None


def model_args(zoo: Zoo, m: ModelEntry) -> dict[str, Any]:
    """The keyword arguments of ``pipeline.build`` for this model (paths resolved against the zoo file's folder)."""
    inputs, outputs = declarations(zoo, m)
    return {"calibration": zoo.resolve(m.calibration), "holdout": zoo.resolve(m.holdout), "inputs": inputs,
            "weights": zoo.resolve(m.weights), "trust_code": m.trust_model_code, "signature": m.signature,
            "synthetic": m.synthetic_calibration, "skip_unavailable": m.skip_unavailable,
            "targets_dir": targets_dir(zoo), "outputs": outputs, "name": m.name}


def _model_parts(zoo: Zoo, m: ModelEntry) -> dict[str, Any]:
    from edgepack import __version__

    source = zoo.resolve(m.source) or m.source
    return {"edgepack": __version__, "source": keys.source_digest(source),
            "weights": keys.tree_digest(Path(zoo.resolve(m.weights))) if m.weights else None,
            "calibration": keys.data_digest(zoo.resolve(m.calibration)),
            "holdout": keys.data_digest(zoo.resolve(m.holdout)),
            "synthetic": m.synthetic_calibration, "signature": m.signature, "trust_code": m.trust_model_code,
            "inputs": m.inputs, "outputs": m.outputs, "budgets": m.budgets}


def plan_model(zoo: Zoo, m: ModelEntry) -> list[Cell]:
    """The cells of one model. A model whose source cannot even be loaded is one refusal per target, with why."""
    names = target_names(zoo, m)
    try:
        resolved = pipeline.resolve_targets(names, targets_dir(zoo))
    except EdgepackError as e:  # an unknown or invalid profile: the zoo is refused, naming the model
        raise type(e)(f"{zoo.path}: model '{m.name}': targets: {e.message}", hint=e.hint) from None
    args = model_args(zoo, m)
    try:
        the_plan = pipeline.plan(zoo.resolve(m.source) or m.source, names, inputs=args["inputs"],
                                 weights=args["weights"], trust_code=m.trust_model_code, signature=m.signature,
                                 skip_unavailable=m.skip_unavailable, targets_dir=args["targets_dir"])
        rows = {r.target: r for r in the_plan.rows}
        kind = the_plan.source.get("kind", "")
        parts = _model_parts(zoo, m)
    except EdgepackError as e:
        rows, kind, parts = {}, "", None
        failure = e
    cells = []
    for t in resolved:
        p = t.profile
        row = rows.get(t.name)
        needs = list(t.backend.requires) + list(SOURCE_NEEDS.get(kind, ())) + ["numpy"]
        if row is not None and "bridge" in row.route:
            needs += list(BRIDGE_NEEDS.get(kind, ()))
        versions = keys.toolchain(needs)
        key = ""
        if parts is not None:
            profile = p.model_dump(mode="json", exclude={"path", "resources"})
            key = keys.content_key({**parts, "profile": profile, "versions": versions})
        res = p.resources.model_dump(mode="json")
        if row is None:
            cells.append(Cell(id=f"{m.name}/{t.name}", model=m.name, target=t.name, profile=p.path,
                              backend=p.backend, precision=p.precision, action="refuse", reason=failure.message,
                              hint=failure.hint or None, resources=res, versions=versions))
            continue
        cells.append(Cell(id=f"{m.name}/{t.name}", model=m.name, target=t.name, profile=p.path, backend=p.backend,
                          precision=p.precision, action=row.action, reason=row.reason, hint=row.hint,
                          route=row.route, key=key, resources=res, versions=versions))
    return cells


def plan(zoo: Zoo, only: str | None = None) -> ZooPlan:
    """Every cell of the zoo (or of one model when ``only`` names it)."""
    models = [zoo.entry(only)] if only else zoo.model
    cells = [c for m in models for c in plan_model(zoo, m)]
    return ZooPlan(zoo=str(zoo.path), cells=tuple(cells))


__all__ = ["Cell", "ZooPlan", "model_args", "plan", "plan_model"]

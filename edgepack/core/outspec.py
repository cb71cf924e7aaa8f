"""Output declarations as typed facts: kind, batch axis, channel groups and a task kind's parameters.

Syntax (``--output NAME=SPEC`` on the command line, ``NAME = "SPEC"`` in a model config's ``[outputs]`` table)::

    KIND[,batch_axis=N|none][,key=value...]            e.g. logits=sequence,batch_axis=1
    KIND[a:b]+KIND[c:d][,axis=N][,batch_axis=...]      e.g. output0=regression[0:4]+scores[4:22],axis=1

``batch_axis`` is the axis of the model's output that holds the samples (``none``: the output has no batch axis,
it is one whole tensor per sample). Every output is stored and judged samples-first: the batch axis is moved to
axis 0 and every other axis is kept whole, in order. A group's ``axis`` counts in that samples-first layout (the
model's own layout when the batch is on axis 0). Each group ``KIND[a:b]`` is judged as its own *virtual output*
``NAME[a:b]`` (its own metrics and tolerance rows); the whole tensor is not judged. Other ``key=value`` pairs are
a task kind's parameters (kept in order, e.g. ``detections:yolo,classes_from=4,conf=0.25``).

Standard library + numpy only: the bundle runner uses the same code as the build host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .kinds import KINDS, known

AUTO = "auto"
BatchAxis = Union[int, None, str]  # an axis, None (no batch axis) or "auto" (found by tracing the model)

_GROUP = re.compile(r"^([A-Za-z_][\w:.-]*)\[(\d+):(\d+)\]$")
_ALIASES = {"axis": "group_axis"}

# auto-detected channel groups: channels whose range is below RANGE_RATIO × smaller than the typical large channel
RANGE_RATIO = 100.0
MAX_GROUPS = 4


@dataclass(frozen=True)
class Group:
    """Channels ``start:stop`` along the spec's group axis, judged as ``kind``."""

    kind: str
    start: int
    stop: int

    def label(self) -> str:
        return f"[{self.start}:{self.stop}]"


@dataclass(frozen=True)
class OutputSpec:
    kind: str
    batch_axis: BatchAxis = AUTO
    groups: tuple[Group, ...] = ()
    group_axis: int = 1
    params: tuple[tuple[str, str], ...] = ()
    note: str = ""  # how the spec (its groups, its batch axis) was found, when not declared

    def text(self) -> str:
        """The spec in its declaration syntax (what a user would type after ``NAME=``)."""
        head = "+".join(f"{g.kind}{g.label()}" for g in self.groups) if self.groups else self.kind
        parts = [head]
        if self.groups:
            parts.append(f"axis={self.group_axis}")
        if self.batch_axis != AUTO:
            parts.append(f"batch_axis={'none' if self.batch_axis is None else self.batch_axis}")
        parts += [f"{k}={v}" for k, v in self.params]
        return ",".join(parts)

    def with_batch_axis(self, axis: BatchAxis, note: str = "") -> "OutputSpec":
        return OutputSpec(self.kind, axis, self.groups, self.group_axis, self.params, note or self.note)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "batch_axis": self.batch_axis, "spec": self.text()}
        if self.groups:
            d["groups"] = [{"kind": g.kind, "start": g.start, "stop": g.stop} for g in self.groups]
            d["group_axis"] = self.group_axis
        if self.params:
            d["params"] = {k: v for k, v in self.params}
        if self.note:
            d["note"] = self.note
        return d


def from_dict(d: dict[str, Any] | str) -> OutputSpec:
    """An OutputSpec from the manifest; an old manifest's plain kind string is a spec of that kind."""
    if isinstance(d, str):
        return OutputSpec(kind=d)
    axis = d.get("batch_axis", AUTO)
    return OutputSpec(kind=str(d.get("kind", "other")), batch_axis=axis if axis in (None, AUTO) else int(axis),
                      groups=tuple(Group(str(g["kind"]), int(g["start"]), int(g["stop"]))
                                   for g in d.get("groups") or ()),
                      group_axis=int(d.get("group_axis", 1)),
                      params=tuple((str(k), str(v)) for k, v in (d.get("params") or {}).items()),
                      note=str(d.get("note", "")))


def _kind(kind: str, text: str) -> str:
    if not known(kind):
        raise ValueError(f"unknown output kind '{kind}' in '{text}' (kinds: {', '.join(KINDS)}, or task:NAME)")
    return kind


def _int(value: str, key: str, text: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value} in '{text}' is not an integer") from None


def parse(text: str) -> OutputSpec:
    """The spec after ``NAME=``. Raises ValueError with a readable message (the caller adds the hint)."""
    text = text.strip()
    head, *rest = [p.strip() for p in text.split(",")] if text else [""]
    if not head:
        raise ValueError(f"no kind in '{text}'")
    batch_axis: BatchAxis = AUTO
    group_axis: int | None = None
    params: list[tuple[str, str]] = []
    for part in rest:
        key, sep, value = part.partition("=")
        key, value = _ALIASES.get(key.strip(), key.strip()), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"'{part}' in '{text}' is not key=value")
        if key == "batch_axis":
            batch_axis = None if value.lower() == "none" else _int(value, key, text)
            if batch_axis is not None and batch_axis < 0:
                raise ValueError(f"batch_axis={value} in '{text}' must be ≥ 0 or none")
        elif key == "group_axis":
            group_axis = _int(value, "axis", text)
            if group_axis < 1:
                raise ValueError(f"axis={value} in '{text}' must be ≥ 1 (axis 0 holds the samples)")
        elif any(k == key for k, _ in params):
            raise ValueError(f"'{key}' is given twice in '{text}'")
        else:
            params.append((key, value))
    groups: list[Group] = []
    if "[" in head:
        for piece in head.split("+"):
            m = _GROUP.match(piece.strip())
            if not m:
                raise ValueError(f"'{piece}' in '{text}' is not KIND[START:STOP]")
            g = Group(_kind(m.group(1), text), int(m.group(2)), int(m.group(3)))
            if g.stop <= g.start:
                raise ValueError(f"group {g.kind}{g.label()} in '{text}' is empty")
            groups.append(g)
        groups.sort(key=lambda g: g.start)
        for a, b in zip(groups, groups[1:]):
            if b.start < a.stop:
                raise ValueError(f"groups {a.kind}{a.label()} and {b.kind}{b.label()} in '{text}' overlap")
        kind = "other"  # a grouped output is judged by its groups, never as one tensor
    else:
        kind = _kind(head, text)
        if group_axis is not None:
            raise ValueError(f"axis= in '{text}' names the channel groups' axis, but no groups are given "
                             "(KIND[START:STOP]+KIND[START:STOP])")
    return OutputSpec(kind=kind, batch_axis=batch_axis, groups=tuple(groups),
                      group_axis=1 if group_axis is None else group_axis, params=tuple(params))


def parse_declaration(text: str) -> tuple[str, OutputSpec]:
    """``NAME=SPEC`` → (name, spec)."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"'{text}' is not NAME=KIND")
    return name.strip(), parse(spec)


# ---------------------------------------------------------------------------------------------- virtual outputs


def virtual_name(name: str, g: Group) -> str:
    return f"{name}{g.label()}"


def expand(arrays: dict[str, np.ndarray], specs: dict[str, OutputSpec] | None
           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Samples-first arrays → the arrays judged: a grouped output is replaced by one virtual output per group
    (``NAME[a:b]``, sliced along the group axis). Returns (arrays, kinds of the virtual outputs). An array too small
    for its groups is passed whole under each virtual name, so the shape check names the mismatch."""
    out: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for name, arr in arrays.items():
        spec = (specs or {}).get(name)
        if spec is None or not spec.groups:
            out[name] = arr
            continue
        a = np.asarray(arr)
        for g in spec.groups:
            vname = virtual_name(name, g)
            kinds[vname] = g.kind
            if a.ndim > spec.group_axis and a.shape[spec.group_axis] >= g.stop:
                out[vname] = np.take(a, np.arange(g.start, g.stop), axis=spec.group_axis)
            else:
                out[vname] = a
    return out, kinds


def group_note(name: str, spec: OutputSpec, g: Group) -> str:
    how = spec.note or "declared"
    return f"channels {g.start}:{g.stop} of '{name}' along axis {spec.group_axis}, judged on their own ({how})"


def check_groups(name: str, spec: OutputSpec, shape: tuple[int, ...]) -> list[str]:
    """Problems of a spec's groups against the output's samples-first shape (empty = fits)."""
    if not spec.groups:
        return []
    if len(shape) <= spec.group_axis:
        return [f"output '{name}' has shape {shape} (samples first): it has no axis {spec.group_axis} for its groups"]
    size = shape[spec.group_axis]
    return [f"output '{name}': group {g.kind}{g.label()} runs past axis {spec.group_axis}'s {size} channels"
            for g in spec.groups if g.stop > size]


def uncovered(spec: OutputSpec, size: int) -> list[tuple[int, int]]:
    """Channel ranges along the group axis that no group covers (not judged)."""
    gaps, at = [], 0
    for g in spec.groups:
        if g.start > at:
            gaps.append((at, g.start))
        at = max(at, g.stop)
    if at < size:
        gaps.append((at, size))
    return gaps


def channel_ranges(arr: np.ndarray, axis: int = 1) -> np.ndarray:
    """Each channel's range (max − min over samples and every other axis), finite values only."""
    a = np.moveaxis(np.asarray(arr, np.float64), axis, 0).reshape(np.shape(arr)[axis], -1)
    fin = np.isfinite(a)
    hi = np.where(fin, a, -np.inf).max(axis=1)
    lo = np.where(fin, a, np.inf).min(axis=1)
    return np.where(np.isfinite(hi - lo), hi - lo, 0.0)


def detect_groups(arr: np.ndarray, kind: str, axis: int = 1) -> tuple[tuple[Group, ...], str]:
    """Channel groups of a samples-first output whose channels along ``axis`` span ranges that differ by orders of
    magnitude (e.g. box pixels 0..320 next to sigmoid scores 0..1): ``(groups, note)``. Empty groups with a note =
    the ranges differ but the small channels do not form few contiguous runs (the caller warns); ``((), "")`` = one
    scale, nothing to split. Only outputs of rank ≥ 3 (samples, channels, positions…) are looked at."""
    a = np.asarray(arr)
    if a.ndim < 3 or a.shape[axis] < 2 or not np.issubdtype(a.dtype, np.floating):
        return (), ""
    r = channel_ranges(a, axis)
    top = float(r.max())
    if top <= 0:
        return (), ""
    big = r >= top / 10
    small_max = float(r[~big].max()) if np.any(~big) else 0.0
    typical = float(np.median(r[big]))
    if not np.any(~big) or small_max <= 0 or typical / small_max < RANGE_RATIO:
        return (), ""
    runs: list[tuple[bool, int, int]] = []
    for c, b in enumerate(big.tolist()):
        if runs and runs[-1][0] == b:
            runs[-1] = (b, runs[-1][1], c + 1)
        else:
            runs.append((b, c, c + 1))
    why = (f"per-channel ranges over the holdout along axis {axis}: channels with range ≥ {top / 10:.3g} "
           f"(typical {typical:.3g}) next to channels of range ≤ {small_max:.3g}, "
           f"{typical / small_max:.0f}× smaller")
    if len(runs) > MAX_GROUPS:
        return (), why
    return tuple(Group(kind, s, e) for _, s, e in runs), "detected: " + why


# ---------------------------------------------------------------------------------------------- batch axes


def batch_candidates(shapes: list[tuple[tuple[int, ...], int]]) -> list[int]:
    """Axes that hold the batch, from the model's raw output shapes at one or more call batch sizes
    (``[(shape, batch), ...]``): axes whose size equals the call's batch in every call."""
    rank = {len(s) for s, _ in shapes}
    if len(rank) != 1:
        return []
    n = rank.pop()
    return [i for i in range(n) if all(s[i] == b for s, b in shapes)]


def resolve_axis(name: str, spec: OutputSpec | None, shapes: list[tuple[tuple[int, ...], int]],
                 declared_shape: tuple[int | None, ...] | None = None
                 ) -> tuple[BatchAxis, list[str], tuple[str, str] | None]:
    """The batch axis of output ``name`` from its spec and the traced shapes: ``(axis, warnings, problem)``.

    ``problem`` (message, hint) is set when the leading axis is not the batch and no batch axis is declared: the target
    must stop rather than slice blindly. Declared axes win; a declaration the traced shapes contradict is a warning
    naming both. ``declared_shape`` (the model file's own output shape) is compared with the real one."""
    warnings: list[str] = []
    shape, batch = shapes[0]
    cands = batch_candidates(shapes)
    seen = f"{'x'.join(map(str, shape))} for a call of {batch} sample{'s' if batch != 1 else ''}"
    if len(shapes) > 1:
        seen += " (and " + ", ".join(f"{'x'.join(map(str, s))} for {b}" for s, b in shapes[1:]) + ")"
    fix_kind = "KIND" if spec is None else spec.text().split(",")[0] if not spec.groups else spec.text()
    spec = spec or OutputSpec(kind="other")
    axis: BatchAxis
    problem = None
    if spec.batch_axis == AUTO:
        if 0 in cands:
            axis = 0
        elif cands:
            axis, problem = None, (f"output '{name}' is {seen}: its leading axis (size {shape[0]}) is not the batch, "
                                   f"axis {cands[0]} is; edgepack will not slice it blindly",
                                   f"declare it: --output {name}={fix_kind},batch_axis={cands[0]}"
                                   + (" (KIND: what it means, e.g. sequence)" if fix_kind == "KIND" else "")
                                   + " — or the same in the model config's [outputs]")
        else:
            axis, problem = None, (f"output '{name}' is {seen}: no axis has the batch's size, so its samples cannot be "
                                   "told apart", "if it is one whole tensor per sample, declare --output "
                                   f"{name}={fix_kind},batch_axis=none; else give the batch axis (batch_axis=N)")
    else:
        axis = spec.batch_axis
        if axis is not None and axis >= len(shape):
            problem = (f"output '{name}' is declared with batch_axis={axis}, but it is {seen} (rank {len(shape)})",
                       f"use batch_axis=0…{len(shape) - 1} or none")
        elif axis is not None and axis not in cands:
            warnings.append(f"output '{name}': declared batch_axis={axis}, but the model returns {seen} "
                            f"(axis {axis} has size {shape[axis]}; "
                            + (f"the batch looks like axis {cands[0]})" if cands else "no axis has the batch's size)"))
        elif axis is None and cands and batch > 1:
            warnings.append(f"output '{name}': declared batch_axis=none, but the model returns {seen} "
                            f"(axis {cands[0]} has the batch's size)")
    if declared_shape is not None and problem is None:
        skip = axis if isinstance(axis, int) else -1
        mismatch = len(declared_shape) != len(shape) or any(
            d is not None and d != s for i, (d, s) in enumerate(zip(declared_shape, shape)) if i != skip)
        if mismatch:
            shown = "x".join("?" if d is None else str(d) for d in declared_shape)
            warnings.append(f"output '{name}': the model file declares shape {shown}, but the model returns {seen}")
    return axis, warnings, problem

"""The one place where stages are sequenced; every stage returns a value and nothing edits it afterwards.

target profiles → registry.resolve (Options validated once) → source → calibration/holdout data → golden outputs
→ per target: backend.convert (warm worker per framework family; independent families convert concurrently)
→ host parity + latency (one target at a time, so timings do not share the CPU) → budgets → TargetReport
→ bundle.write (golden I/O, runner, report, manifest last) → atomic rename into ``<out>/<model>/<target>/``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import bundle as bundles
from edgepack import calibration as calibration_mod
from edgepack import plan as plans
from edgepack import safety
from edgepack.artifact import Artifact, ConvertData
from edgepack.backends import registry
from edgepack.backends.registry import Target
from edgepack.budgets import check as budget_checks
from edgepack.budgets import device_notes, int8_payoff
from edgepack.calibration import CalibrationData
from edgepack.config import (
    EffectiveBudget,
    available_targets,
    budget_key,
    effective_budgets,
    load_profile,
    with_budgets,
)
from edgepack.core import outspec
from edgepack.core.batching import CALL_BATCH, CALLS, axes_of, first_batch, per_sample, run_batched
from edgepack.core.checks import Check, verdict
from edgepack.core.kinds import KINDS, decide, known
from edgepack.core.latency import measure as measure_latency
from edgepack.core.limits import JUDGES, Limits
from edgepack.errors import (
    BundleError,
    ConfigError,
    EdgepackError,
    InputError,
    NotApplicable,
    RuntimeUnavailable,
    explain,
)
from edgepack.events import Event, Progress
from edgepack.feeds import Feeds, take
from edgepack.isolation import Workers, _setting_or_default, current, run_isolated
from edgepack.parity.compare import compare
from edgepack.parity.tolerances import limits as parity_limits
from edgepack.report import LatencyReport, OutputKindInfo, ParityReport, TargetReport
from edgepack.signature import TensorSpec, declare
from edgepack.sources import Source, load_source, module_for
from edgepack.sources.bridge import Bridges

JOBS = int(_setting_or_default("EDGEPACK_JOBS"))  # concurrent conversions of independent backends


def _quiet(_: str) -> None:
    return None


@contextlib.contextmanager
def _workers():
    """The caller's warm workers when a ``Workers`` block is active (several builds in one session), else new ones."""
    active = current()
    if active is not None:
        yield active
        return
    with Workers() as w:
        yield w


# ---------------------------------------------------------------------------------------------- workers


def _convert_worker(source: Source, target: Target, data: ConvertData, out_dir: str,
                    trial_log: str | None = None) -> Artifact:
    from edgepack import quantsearch

    quantsearch.TRIAL_LOG["path"] = trial_log  # the INT8 search appends its trials here as they finish
    try:
        return target.backend.convert(source, target.profile, target.options, data, Path(out_dir))
    finally:
        quantsearch.TRIAL_LOG["path"] = None


class _TrialWatcher:
    """Reads the trial log a conversion worker appends to and reports each INT8 search trial as it finishes."""

    def __init__(self, target: str, progress: Progress) -> None:
        import tempfile
        import threading

        fd, self.path = tempfile.mkstemp(prefix="edgepack-trials-", suffix=".jsonl")
        os.close(fd)
        self.target, self.progress, self.offset = target, progress, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name=f"trials-{target}")
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop.wait(0.25):
            self._read()
        self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                t = json.loads(line)
            except ValueError:
                continue
            floats = len(t.get("float_layers") or [])
            how = (f"error: {t['error']}" if t.get("error") else
                   f"{'meets' if t.get('passed') else 'misses'} the budget on tuning"
                   + (f" (score {t['score']:.3f})" if isinstance(t.get("score"), (int, float)) else ""))
            self.progress(Event(f"{self.target}: INT8 trial {t.get('number')}: {t.get('stage')} {t.get('recipe')}"
                                + (f" + {floats} float layer(s)" if floats else "") + f": {how}",
                                stage="trial", target=self.target, trial=t, quiet=True))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _preflight_worker(source: Source, target: Target) -> None:
    target.backend.preflight(source, target.profile, target.options)


def _host_worker(target: Target, artifact: Artifact, bundle_dir: str, feeds: Feeds, warmup: int, repeats: int,
                 threads: int, out_axes: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Run the artifact on the holdout feeds (outputs samples first) and time one model call (in the backend's
    worker)."""
    runner = target.backend.runner(artifact, Path(bundle_dir), threads=threads)
    with runner:
        axes = axes_of(artifact.inputs)
        outputs = run_batched(runner.infer, feeds, runner.max_batch, axes, out_axes=out_axes or None)
        one = first_batch(feeds, runner.max_batch, axes)
        latency = measure_latency(lambda: runner.infer_for_latency(one), warmup, repeats)
        return {"outputs": outputs, "latency": latency, "facts": dict(runner.facts)}


# ---------------------------------------------------------------------------------------------- stages


def resolve_targets(names: list[str], targets_dir: Path | None = None) -> list[Target]:
    """Validated targets for the given names or paths; ``all`` expands to every profile in the targets folders."""
    if not names:
        raise ConfigError("no target given", hint="add --target NAME (see `edgepack targets`)")
    expanded: list[str] = []
    for n in names:
        expanded += [str(p) for p in available_targets(targets_dir).values()] if n == "all" else [n]
    return [registry.resolve(load_profile(n, targets_dir)) for n in dict.fromkeys(expanded)]


def plan(model: str, targets: list[str], *, inputs: tuple[TensorSpec, ...] = (), weights: str | None = None,
         weights_strict: bool = True, trust_code: bool = False, signature: str | None = None,
         skip_unavailable: bool = False, targets_dir: Path | None = None,
         outputs: dict[str, "str | outspec.OutputSpec"] | None = None, calibration: str | None = None,
         holdout: str | None = None, synthetic: bool = False, out: Path | None = None, name: str | None = None,
         judge: str | None = None, budgets: Mapping[str, Any] | None = None,
         budget_sources: Mapping[str, str] | None = None, in_memory: dict[str, str] | None = None) -> plans.Plan:
    """What ``build`` would do with each target, decided from the source's signature and the profiles only. Takes
    every argument of :func:`build` that changes the plan: declarations (inputs, outputs: names checked against the
    model), budgets and judge (validated), the data (``calibration``/``holdout``: loaded and checked against the
    inputs, not run) and the destination (``out``/``name``: each bundle's folder, checked as build checks it).
    ``in_memory``: see :func:`build`."""
    overrides = budget_overrides(budgets, budget_sources)
    resolved = [with_overrides(t, overrides) for t in resolve_targets(targets, targets_dir)]
    if judge:
        resolved = [with_judge(t, judge) for t in resolved]
    with _workers():
        source = declared(load_source(model, weights=weights, inputs=inputs, trust_code=trust_code,
                                      signature=signature, name=name, weights_strict=weights_strict,
                                      in_memory=in_memory), inputs)
        check_declared_outputs(source, outputs)
        the_plan = plans.make(model, resolved, source, skip_unavailable)
        runnable = [t for t in resolved if t.name in the_plan.buildable]
        if runnable and (calibration is not None or holdout is not None or synthetic):
            load_data(calibration, runnable, source, synthetic, holdout)
    if out is None:
        return the_plan
    out = Path(out)
    for t in runnable:  # refused now as build would refuse it: an unsafe name, or a non-bundle in the way
        bundles.check_destination(out / source.name / t.name)
    return replace(the_plan, rows=tuple(replace(r, bundle=str(out / source.name / r.target)) if r.action == "build"
                                        else r for r in the_plan.rows))


def check_declared_outputs(source: Source, outputs: dict[str, "str | outspec.OutputSpec"] | None) -> None:
    """Declared outputs (``--output``, the model config) must be outputs of the model, when the source knows them."""
    names = [t.name for t in source.outputs]
    for n, spec in (outputs or {}).items():
        if isinstance(spec, str):
            try:
                outspec.parse(spec)
            except ValueError as e:
                raise ConfigError(f"--output {n}: {e}", hint="NAME=KIND[,batch_axis=N|none]") from None
        if names and n not in names:
            raise ConfigError(f"output '{n}' is declared, but the model's outputs are {', '.join(names)}",
                              hint=f"use one of: {', '.join(names)}")


def with_judge(target: Target, judge: str) -> Target:
    """The target with its profile's rate budgets judged by ``judge`` (the build's --judge)."""
    if judge not in JUDGES:
        raise ConfigError(f"--judge {judge!r} is not one of {', '.join(JUDGES)}",
                          hint="evidence (default: INCONCLUSIVE on too few samples), bound (the 95% bound) or point")
    b = target.profile.budgets
    profile = target.profile.model_copy(update={"budgets": b.model_copy(update={
        "parity": b.parity.model_copy(update={"judge": judge})})})
    return replace(target, profile=profile)


def budget_overrides(budgets: Mapping[str, Any] | None, sources: Mapping[str, str] | None = None
                     ) -> dict[str, tuple[Any, str]]:
    """The build's budgets (key → value, keys as ``--budget`` takes them) with where each came from (``sources``:
    key → ``command line``, ``model config PATH``…; default ``budgets= argument``); every key is checked here."""
    out: dict[str, tuple[Any, str]] = {}
    for k, v in (budgets or {}).items():
        same = [o for o in out if budget_key(o) == budget_key(k)]
        if same:
            raise ConfigError(f"budget '{k}' is given twice (also as '{same[0]}')", hint="give each budget once")
        out[k] = (v, (sources or {}).get(k, "budgets= argument"))
    return out


def with_overrides(target: Target, overrides: dict[str, tuple[Any, str]]) -> Target:
    """The target with the build's budgets set over its profile's (validated against the budget schema)."""
    if not overrides:
        return target
    b = with_budgets(target.profile.budgets, overrides)
    return replace(target, profile=target.profile.model_copy(update={"budgets": b}))


def output_ops(source: Source) -> dict[str, str]:
    """The op producing each output of an ONNX source (evidence for ``core.kinds.decide``); {} for other sources
    or an unreadable graph (kind inference then goes by names, values and labels)."""
    if source.kind != "onnx":
        return {}
    from edgepack.sources.onnx import output_ops as ops

    try:
        return ops(Path(source.path))
    except (EdgepackError, OSError, ValueError):
        return {}


def declared(source: Source, given: tuple[TensorSpec, ...]) -> Source:
    """The source with the user's input declarations (batch axis, layout, constants, dims, state) applied and
    checked against the model."""
    if not any(g.declared for g in given):
        return source
    return source.with_inputs(declare(source.inputs, given, source.name, source.outputs))


def with_state_trajectories(source: Source, data: CalibrationData) -> CalibrationData:
    """Recurrent state inputs take the values the model itself produces when run over the data in order (each
    split's samples in their original order; the first sample keeps its given state, zeros by default). The
    bundle and the reference then see the same, realistic states."""
    links = {t.name: t.state_from for t in source.inputs if t.state_from}
    if not links:
        return data
    axes = axes_of(source.inputs)
    specs = {t.name: t for t in source.inputs}

    def trajectory(feeds: Feeds) -> Feeds:
        out = module_for(source.kind).reference(source, feeds, links=links)
        new = dict(feeds)
        for inp, o in links.items():
            y = np.asarray(out[o])
            a = specs[inp].batch_axis
            if per_sample(axes) and a is not None:
                y = np.take(y, 0, axis=a + 1)  # (N, *model shape) → (N, *sample shape)
            if y.shape[1:] != feeds[inp].shape[1:]:
                raise ConfigError(f"--input {inp}: state={o} gives samples of shape {y.shape[1:]}, the input takes "
                                  f"{feeds[inp].shape[1:]}", hint="name the output that feeds this input back")
            new[inp] = np.concatenate([feeds[inp][:1], y[:-1]]).astype(feeds[inp].dtype)
        return new

    return replace(data, calibration=trajectory(data.calibration), holdout=trajectory(data.holdout),
                   tuning=trajectory(data.tuning) if data.tuning else data.tuning)


def load_data(spec: str | None, targets: list[Target], source: Source, synthetic: bool,
              holdout: str | None = None) -> CalibrationData:
    """The build's data. Without ``--calibration`` the profiles' recipe is used only when they all name the same one.
    ``holdout``: a separate holdout set (recipe or .npz), then the calibration source gives calibration + tuning."""
    if holdout is not None and spec is None:
        raise ConfigError("--holdout needs --calibration", hint="pass --calibration RECIPE|file.npz as well")
    relative = None
    if spec is None:
        named = {t.profile.calibration: t for t in targets if t.profile.calibration}
        if len(named) > 1:
            listing = ", ".join(f"{t.name} → {r}" for r, t in named.items())
            raise ConfigError(f"no --calibration given and the targets name different recipes ({listing})",
                              hint=f"pass --calibration RECIPE (e.g. --calibration {next(iter(named))}) or build "
                                   "these targets separately")
        if named and not synthetic:
            spec, first = next(iter(named.items()))
            return _default_recipe(spec, first, source)
    return calibration_mod.load(spec, source.inputs, allow_synthetic=synthetic, relative_to=relative, holdout=holdout)


def _default_recipe(spec: str, target: Target, source: Source) -> CalibrationData:
    """The profiles' default recipe, used only when it fits the model: it loads for these inputs and every input
    dimension it has to match is fixed (a dynamic one would accept any data, fitting or not)."""
    ins = ", ".join(f"{t.name} {t.shape_str()} {t.dtype}" for t in source.inputs)
    fix = (f"pass --calibration with this model's data: an .npz keyed by input name ({ins}), or a recipe .toml "
           "(see calibration/digits.toml)")
    loose = [t.name for t in source.inputs if any(d is None for d in t.shape[1:])]
    if loose:
        raise ConfigError(f"no --calibration given, and the profiles' default recipe '{spec}' cannot be shown to "
                          f"fit this model (input {', '.join(loose)} has dynamic dimensions)", hint=fix)
    try:
        data = calibration_mod.load(spec, source.inputs, relative_to=target.profile.directory)
    except EdgepackError as e:
        raise ConfigError(f"no --calibration given, and the profiles' default recipe '{spec}' does not fit this "
                          f"model ({e.message})", hint=fix) from None
    return replace(data, defaulted=True)


def golden_outputs(source: Source, feeds: Feeds, out_axes: dict[str, int | None] | None = None) -> Feeds:
    """The reference model's outputs, samples first (each output's batch axis moved to axis 0)."""
    if out_axes and any(a != 0 for a in out_axes.values()):
        return module_for(source.kind).reference(source, feeds, out_axes=out_axes)
    return module_for(source.kind).reference(source, feeds)


def _traceable(source: Source) -> bool:
    """Whether the source's reference can return raw per-call outputs (every built-in source can)."""
    import inspect

    try:
        return "out_axes" in inspect.signature(module_for(source.kind).reference).parameters
    except (TypeError, ValueError):
        return False


def trace_outputs(source: Source, feeds: Feeds) -> dict[str, list[tuple[tuple[int, ...], int]]]:
    """The model's raw output shapes on the first calibration batch: ``{output: [(shape, call batch), ...]}``, at
    two batch sizes (2 and 3 samples) when the model takes a dynamic batch. Empty when the source cannot be traced
    or its inputs are fed one sample per call (outputs are then kept whole per sample)."""
    if not _traceable(source) or per_sample(axes_of(source.inputs)) or any(t.state_from for t in source.inputs):
        return {}
    n = len(next(iter(feeds.values())))
    sizes = [k for k in (2, 3) if k <= n] or [n]
    shapes: dict[str, list[tuple[tuple[int, ...], int]]] = {}
    seen: set[int] = set()
    for k in sizes:
        raw = module_for(source.kind).reference(source, take(feeds, slice(0, k)), out_axes=CALLS)
        b = int(np.asarray(raw.pop(CALL_BATCH))[0])
        if b in seen:
            break  # a fixed (or padded) batch: one size is all there is
        seen.add(b)
        for name, arr in raw.items():
            shapes.setdefault(name, []).append((tuple(int(d) for d in np.shape(arr)[1:]), b))
    return shapes


def output_axes(source: Source, feeds: Feeds, specs: dict[str, outspec.OutputSpec]
                ) -> tuple[dict[str, int | None], list[str]]:
    """Every output's batch axis (declared, or traced on the first calibration batch) and the warnings about
    declared/actual mismatches. An output whose leading axis is not the batch and that is not declared stops the
    build with one line naming the output, the axis and the fix: it is never sliced blindly."""
    traced = trace_outputs(source, feeds)
    declared_shapes = {t.name: tuple(t.shape) for t in source.outputs}
    axes: dict[str, int | None] = {}
    warnings: list[str] = []
    for name in specs:
        if traced and name not in traced:
            raise ConfigError(f"output '{name}' is declared, but the model's outputs are {', '.join(traced)}",
                              hint=f"use one of: {', '.join(traced)}")
    for name, shapes in traced.items():
        axis, warns, problem = outspec.resolve_axis(name, specs.get(name), shapes, declared_shapes.get(name))
        if problem is not None:
            raise ConfigError(problem[0], hint=problem[1])
        axes[name] = axis  # type: ignore[assignment]
        warnings += warns
    for name, spec in specs.items():  # an untraceable source still honours declarations
        if name not in axes and spec.batch_axis != outspec.AUTO:
            axes[name] = spec.batch_axis  # type: ignore[assignment]
    return axes, warnings


def output_specs(golden: Feeds, declared: dict[str, outspec.OutputSpec], axes: dict[str, int | None],
                 kinds: dict[str, "OutputKindInfo"]) -> tuple[dict[str, outspec.OutputSpec], list[str]]:
    """Each output's full spec for the manifest (batch axis as resolved; channel groups declared, or detected from
    the per-channel ranges over the holdout for outputs judged like regression heads) and warnings."""
    out: dict[str, outspec.OutputSpec] = {}
    warnings: list[str] = []
    for name, arr in golden.items():
        spec = declared.get(name, outspec.OutputSpec(kind=kinds[name].kind if name in kinds else "other"))
        if name in axes:
            spec = spec.with_batch_axis(axes[name])
        shape = tuple(np.shape(arr))
        if spec.groups:
            bad = outspec.check_groups(name, spec, shape)
            if bad:
                raise ConfigError(bad[0], hint=f"the output is {'x'.join(map(str, shape))} samples first; "
                                               "groups are KIND[START:STOP] along axis=N of that layout")
            gaps = outspec.uncovered(spec, shape[spec.group_axis])
            if gaps:
                warnings.append(f"output '{name}': channels {', '.join(f'{a}:{b}' for a, b in gaps)} along axis "
                                f"{spec.group_axis} are in no declared group and are not judged")
        elif kinds.get(name) is not None and kinds[name].kind in ("other", "regression") and name not in declared:
            groups, note = outspec.detect_groups(np.asarray(arr), kinds[name].kind)
            if groups:
                spec = outspec.OutputSpec(spec.kind, spec.batch_axis, groups, 1, spec.params, note)
            elif note:
                warnings.append(f"output '{name}': the whole-tensor metric hides its small-range channels ({note}); "
                                "declare its channel groups, e.g. "
                                f"--output '{name}=regression[0:4]+scores[4:N],axis=1'")
        out[name] = spec
    return out, warnings


@dataclass(frozen=True)
class Evaluation:
    """Host parity, latency and budget rows for one (staged or finished) bundle."""

    size_bytes: int
    latency: LatencyReport | None
    parity: ParityReport
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        """``passed``, ``inconclusive`` or ``failed`` (failed > inconclusive > passed)."""
        return verdict(self.checks)


def model_files(bundle_dir: Path, artifact: Artifact) -> list[str]:
    """The shipped model files, folders (.mlpackage, ir/) expanded to the files under them."""
    out: list[str] = []
    for rel in artifact.shipped():
        p = bundle_dir / rel
        out += [q.relative_to(bundle_dir).as_posix() for q in p.rglob("*") if q.is_file()] if p.is_dir() else [rel]
    return out


def output_kinds(target: Target, golden: Feeds, labels: np.ndarray | None,
                 declared: dict[str, str], hints: dict[str, str] | None = None) -> dict[str, OutputKindInfo]:
    """Each output's kind: declared on the command line, else in the profile, else inferred conservatively (with
    ``hints``: the op producing each output, read from the source's graph; see ``core.kinds.decide``)."""
    merged = {**target.profile.outputs, **declared}
    names = list(golden)
    for name, kind in merged.items():
        if name not in golden:
            raise ConfigError(f"{target.name}: output '{name}' is declared as {kind}, but the model's outputs are "
                              f"{', '.join(names)}", hint=f"use one of: {', '.join(names)}")
        if not known(kind):
            raise ConfigError(f"unknown output kind '{kind}' for '{name}'",
                              hint=f"kinds: {', '.join(KINDS)}, or task:NAME (an installed post-processor)")
    decided = decide(golden, labels, merged, hints)
    how = {n: ("declared on the command line" if n in declared else "declared in the profile") for n in merged}
    return {n: OutputKindInfo(kind=k, how=how.get(n, h)) for n, (k, h) in decided.items()}


def evaluate(target: Target, artifact: Artifact, bundle_dir: Path, inputs: Feeds, golden: Feeds,
             labels: np.ndarray | None, limits: Limits, kinds: dict[str, OutputKindInfo],
             progress: Progress, specs: dict[str, outspec.OutputSpec] | None = None) -> Evaluation:
    """Run the bundle on this host (its backend's worker) against the golden outputs; judge parity and budgets.
    ``specs``: each output's batch axis and channel groups (the manifest's ``output_specs``)."""
    profile = target.profile
    size = sum((bundle_dir / f).stat().st_size for f in model_files(bundle_dir, artifact))
    progress(Event(f"{profile.name}: running on host for parity and latency", stage="host", target=profile.name))
    try:
        host = run_isolated(_host_worker, target, artifact, str(bundle_dir), inputs,
                            profile.latency.warmup, profile.latency.repeats, profile.latency.threads,
                            out_axes_of(specs), what=f"{profile.name} host run", family=f"backend:{profile.backend}")
    except RuntimeUnavailable as e:
        parity = ParityReport(passed=None, deferred_to_device=True, reason=e.message, kinds=kinds)
        checks = (target.backend.host_checks(artifact) + budget_checks(profile.budgets, size, None, profile.device)
                  + search_checks(target, artifact))
        return Evaluation(size, None, parity, checks, [f"parity deferred to device: {e.message}"])
    outcome = compare(golden, host["outputs"], limits, labels, {n: k.kind for n, k in kinds.items()}, specs)
    data = outcome.to_dict()
    decided = {**{n: OutputKindInfo(kind=k, how=h) for n, (k, h) in outcome.kinds.items()}, **kinds}
    parity = ParityReport(passed=bool(outcome), verdict=outcome.verdict, samples=outcome.samples, metrics=data["metrics"],
                          kinds=decided, worst_samples=data["worst_samples"], warnings=list(outcome.warnings),
                          where=target.backend.host_parity)
    latency = LatencyReport(where="host", **host["latency"], runtime=host["facts"])
    checks = (target.backend.host_checks(artifact) + list(outcome.checks)
              + budget_checks(profile.budgets, size, host["latency"], profile.device)
              + search_checks(target, artifact, size))
    return Evaluation(size, latency, parity, checks, list(outcome.warnings))


def out_axes_of(specs: dict[str, outspec.OutputSpec] | None) -> dict[str, int | None] | None:
    """The batch axes a bundle's outputs are run with (None when nothing is declared or traced: axis 0)."""
    axes = {n: s.batch_axis for n, s in (specs or {}).items() if s.batch_axis != outspec.AUTO}
    return axes or None  # type: ignore[return-value]


RATE_LIMITS = ("min_top1_agreement", "min_top5_agreement", "min_decision_agreement", "min_retrieval_agreement",
               "min_pixel_agreement", "min_token_agreement")


def holdout_needs(limits: Limits, n_holdout: int, data: CalibrationData) -> str:
    """What more data would buy: when the holdout is too small for a rate budget to mean anything (a flawless
    result's 95 % lower bound under the budget), the samples that budget needs and the data that gives them."""
    from edgepack.core.stats import samples_needed

    rates = {k: getattr(limits, k) for k in RATE_LIMITS if getattr(limits, k) is not None and getattr(limits, k) < 1}
    if not rates:
        return ""
    key = max(rates, key=lambda k: samples_needed(rates[k]))
    need = samples_needed(rates[key])
    if n_holdout >= need:
        return ""
    return (f"more data would make the verdict mean more: {key} ≥ {rates[key]:g} needs ≥ {need} holdout samples for "
            f"a flawless result to show it at 95 % (this holdout has {n_holdout}); that takes "
            + calibration_mod.more_data(n_holdout, need, data.split))


def search_checks(target: Target, artifact: Artifact, size_bytes: int | None = None) -> list[Check]:
    """Rows from the INT8 accuracy search (met the budget on the tuning split, fallback latency cost), the INT8
    speed budget and, with the bundle's size, whether INT8 pays at all (:func:`edgepack.budgets.int8_payoff`)."""
    from edgepack import quantsearch

    search = getattr(target.options, "accuracy_search", None)
    if not target.profile.precision.startswith("int8"):
        return []
    rows = quantsearch.checks(artifact.details, search.max_latency_ratio if search is not None else None,
                              target.profile.budgets.max_int8_latency_ratio)
    if size_bytes is not None:
        rows += int8_payoff(target.profile.budgets, target.profile.device, artifact.details, size_bytes)[0]
    return rows


def float_reference(source: Source) -> dict[str, Any]:
    """Size of the float model the backend converted (the source file, or the ONNX it was bridged to): what an INT8
    bundle's size is compared with."""
    p = Path(source.path)
    files = [p] if p.is_file() else ([q for q in p.rglob("*") if q.is_file()] if p.is_dir() else [])
    size = sum(q.stat().st_size for q in files)
    return {"size_bytes": size, "what": f"{source.kind} source {p.name} (float)"} if size else {}


@dataclass(frozen=True)
class Converted:
    target: Target
    staging: Path
    artifact: Artifact
    seconds: float
    notes: list[str]


def convert_target(target: Target, source: Source, notes: list[str], data: CalibrationData, staging: Path,
                   progress: Progress, kinds: dict[str, OutputKindInfo] | None = None,
                   specs: dict[str, outspec.OutputSpec] | None = None,
                   searches: dict[str, dict[str, Any]] | None = None) -> Converted:
    backend, profile = target.backend, target.profile
    progress(Event(f"{profile.name}: converting with {backend.name} ({profile.precision})", stage="convert",
                   target=profile.name))
    tunes = backend.tunes_on_data(profile, target.options) and bool(data.tuning)
    limits = parity_limits(profile.backend, profile.precision, profile.budgets.parity)
    convert_data = ConvertData(
        calibration=data.calibration, class_names=data.class_names, preprocess=data.preprocess,
        tuning=data.tuning if tunes else None, tuning_labels=data.tuning_labels if tunes else None,
        tuning_reference=data.tuning_reference if tunes and data.tuning_reference else None,
        limits=limits.to_dict() if tunes else None,
        kinds={n: k.kind for n, k in (kinds or {}).items()} if tunes else None,
        output_specs={n: s.to_dict() for n, s in (specs or {}).items()} if tunes and specs else None,
        holdout_ranges=ConvertData.ranges(data.holdout),
        searches=dict(searches or {}) if tunes else {},
    )
    t0 = time.perf_counter()
    watcher = _TrialWatcher(profile.name, progress) if tunes else None
    try:
        art = run_isolated(_convert_worker, source, target, convert_data, str(staging),
                           watcher.path if watcher else None,
                           what=f"{profile.name} conversion", family=f"backend:{backend.name}")
    finally:
        if watcher:
            watcher.close()
    seconds = time.perf_counter() - t0
    progress(Event(f"{profile.name}: converted in {seconds:.1f} s", stage="converted", target=profile.name,
                   seconds=seconds))
    if profile.precision.startswith("int8") and "float_reference" not in art.details:
        ref = float_reference(source)
        if ref:
            art = art.model_copy(update={"details": {**art.details, "float_reference": ref}})
    return Converted(target, staging, art, seconds, list(notes))


def finish_target(c: Converted, source: Source, data: CalibrationData, golden: Feeds, out_root: Path,
                  archive: bool, kinds: dict[str, OutputKindInfo], progress: Progress,
                  specs: dict[str, outspec.OutputSpec] | None = None, shape_warnings: list[str] | None = None,
                  budget_table: dict[str, EffectiveBudget] | None = None,
                  source_checks: list[Check] | None = None) -> TargetReport:
    """Host parity + budgets on the staged bundle, then the bundle written (manifest last) and moved into place.
    ``source_checks`` are rows about the source the backend received (the onnx → torch bridge's fidelity)."""
    target, profile, art = c.target, c.target.profile, c.artifact
    limits = parity_limits(profile.backend, profile.precision, profile.budgets.parity)
    ev = evaluate(target, art, c.staging, data.holdout, golden, data.holdout_labels, limits, kinds, progress, specs)
    if source_checks:
        ev = replace(ev, checks=[*source_checks, *ev.checks])
    warnings = list(shape_warnings or []) + list(art.warnings) + ev.warnings
    if data.synthetic:
        warnings.insert(0, "parity ran on SYNTHETIC random inputs, not real data: it cannot vouch for accuracy")
    if data.defaulted:
        warnings.insert(0, f"no --calibration given: used the profiles' default recipe '{data.name}' ({data.origin}); "
                           "make sure it is this model's kind of data")
    n_cal = len(next(iter(data.calibration.values())))
    if target.backend.needs_calibration(profile, target.options) and n_cal < profile.min_calibration_samples:
        warnings.append(f"calibration used {n_cal} samples, fewer than the profile's minimum "
                        f"{profile.min_calibration_samples}")
    n_tune = len(next(iter(data.tuning.values()))) if data.tuning else 0
    more = holdout_needs(limits, len(next(iter(data.holdout.values()))), data)
    pay_notes = int8_payoff(profile.budgets, profile.device, art.details, ev.size_bytes)[1] \
        if profile.precision.startswith("int8") else []
    if target.backend.tunes_on_data(profile, target.options):
        if n_tune == 0:
            warnings.append("no tuning split (the calibration data is too small, or split.tuning = 0): the INT8 "
                            "accuracy search could not run; the profile's plain recipe was built")
        elif n_tune < profile.min_tuning_samples:
            warnings.append(f"the INT8 accuracy search judged recipes on {n_tune} tuning samples, fewer than the "
                            f"profile's minimum {profile.min_tuning_samples}: its choices are noisy")
    report = TargetReport(
        target=profile.name, status=ev.verdict, backend=profile.backend,
        precision=profile.precision, device=profile.device, size_bytes=ev.size_bytes, primary=art.primary,
        build_time_s=round(c.seconds, 3), latency=ev.latency, parity=ev.parity, limits=limits, checks=ev.checks,
        budgets=budget_table if budget_table is not None else effective_budgets(profile.budgets, profile.name),
        warnings=warnings, notes=c.notes + list(art.notes) + device_notes(profile.budgets, profile.device)
        + ([more] if more else []) + pay_notes,
        artifact=art.details, calibration=data.describe(),
        source=source.describe(),
    )
    keep = golden_subset(data.holdout, golden, ev.parity.worst_samples, profile.golden_max_mb * 2**20)
    pick = (lambda feeds: feeds) if keep is None else (lambda feeds: take(feeds, np.asarray(keep)))
    n_hold = len(next(iter(data.holdout.values())))
    if keep is not None:
        report = report.model_copy(update={"notes": [*report.notes, f"golden/ keeps {len(keep)} of {n_hold} holdout "
                                                     f"samples (the worst ones + an even spread; cap "
                                                     f"{profile.golden_max_mb:g} MiB); the full holdout is in "
                                                     f"{source.name}/holdout/ next to the build report"]})
        need = max((c.samples_needed or 0 for c in ev.checks if c.applied), default=0)
        if len(keep) < need:
            report = report.model_copy(update={"warnings": [*report.warnings, (
                f"golden/ keeps {len(keep)} samples, fewer than the {need} a rate budget needs: `edgepack check` and "
                "the bundle runner on a device will judge it INCONCLUSIVE (raise golden_max_mb in the profile)")]})
    from edgepack import quantsearch

    bundles.write(c.staging, bundles.BundleContent(
        artifact=art.model_copy(update={"details": quantsearch.stable(art.details)}), device_loader=target.backend.device_file(), source=bundles.SourceInfo(**source.describe()),
        target=profile, limits=limits, kinds=kinds, golden_inputs=pick(data.holdout), golden_outputs=pick(golden),
        labels=None if data.holdout_labels is None else (data.holdout_labels if keep is None
                                                         else data.holdout_labels[np.asarray(keep)]),
        class_names=data.class_names, preprocessing=data.preprocess,
        calibration=data.describe(), synthetic=data.synthetic, report=report,
        holdout_samples=n_hold, golden_indices=keep,
        output_specs={n: s.to_dict() for n, s in (specs or {}).items()},
    ))
    final = out_root / source.name / profile.name
    bundles.commit(c.staging, final)
    # a failed bundle is never archived: archives are what gets shipped
    zpath = bundles.archive(final, final.with_suffix(".zip")) if archive and report.status == "passed" else None
    return report.model_copy(update={"bundle": str(final), "archive": str(zpath) if zpath else None})


def _error_report(target: Target, stage: str, e: BaseException, source: Source | None) -> TargetReport:
    """One target's ERROR verdict: the error's one line + hint; the full converter/runtime output in ``details``."""
    if isinstance(e, EdgepackError):
        message, hint, details = e.message, e.hint or None, e.details
    else:  # a bug in edgepack or an unexpected library error: never a traceback on the terminal
        message = f"internal error in {stage}: {type(e).__name__}: {explain(str(e)) or '(no message)'}"
        hint = "this is a bug: please report it with the `details` of this target in the build report"
        details = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    p = target.profile
    return TargetReport(target=p.name, status="error", backend=p.backend, precision=p.precision, device=p.device,
                        stage=stage, reason=message, hint=hint, details=details,
                        source=source.describe() if source else None)


def _convert_all(targets: list[Target], sources: dict[str, tuple[Source, list[str]]], data: CalibrationData,
                 out_parent: Path, progress: Progress, kinds: dict[str, dict[str, OutputKindInfo]] | None = None,
                 specs: dict[str, dict[str, outspec.OutputSpec]] | None = None
                 ) -> tuple[list[Converted], dict[str, TargetReport]]:
    """Convert every target: one thread per backend (its warm worker), at most JOBS backends at a time. A target
    whose conversion fails gets an ERROR report; the others go on."""
    groups: dict[str, list[Target]] = {}
    for t in targets:
        groups.setdefault(t.backend.name, []).append(t)
    errors: dict[str, TargetReport] = {}
    done: dict[str, Converted] = {}

    def run_group(group: list[Target]) -> None:
        searches: dict[str, dict[str, Any]] = {}  # INT8 searches of this backend by problem key (one thread each)
        for t in group:
            staging = bundles.staging_dir(out_parent, t.name)
            src, notes = sources[t.name]
            try:
                done[t.name] = convert_target(t, src, notes, data, staging, progress, (kinds or {}).get(t.name),
                                              (specs or {}).get(t.name), searches)
                s = done[t.name].artifact.details.get("accuracy_search")
                if isinstance(s, dict) and s.get("problem") and s["problem"] not in searches:
                    searches[s["problem"]] = {"target": t.name, "search": s}
            except Exception as e:  # noqa: BLE001 - one target's failure is its verdict, not the build's
                bundles.discard(staging)
                errors[t.name] = _error_report(t, "conversion", e, src)
                progress(Event(f"{t.name}: ERROR in conversion: {errors[t.name].reason}", stage="error",
                               target=t.name, verdict="error"))
            except BaseException:
                bundles.discard(staging)
                raise

    try:
        with ThreadPoolExecutor(max_workers=min(JOBS, len(groups)) or 1) as pool:
            futures = [pool.submit(contextvars.copy_context().run, run_group, g) for g in groups.values()]
            for f in futures:
                f.result()
    except BaseException:
        for c in done.values():
            bundles.discard(c.staging)
        raise
    return [done[t.name] for t in targets if t.name in done], errors


def check_reference(golden: Feeds) -> None:
    """The reference model's own outputs must be finite on the holdout: nothing can be compared with NaN."""
    for name, arr in golden.items():
        a = np.asarray(arr)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        bad = np.flatnonzero(~np.isfinite(a.reshape(len(a) if a.ndim else 1, -1)).all(axis=1))
        if len(bad):
            shown = ", ".join(str(int(i)) for i in bad[:8]) + (" …" if len(bad) > 8 else "")
            raise InputError(f"the reference model itself produced NaN/Inf in output '{name}' for {len(bad)} of "
                             f"{len(a)} holdout samples (samples {shown}); no bundle can be compared there",
                             hint="check the data's preprocessing (scale, mean/std, layout) and declared inputs "
                                  "(--input) for this model; the reference must answer finitely on real data")


def golden_subset(inputs: Feeds, outputs: Feeds, worst: dict[str, list[dict[str, Any]]],
                  max_bytes: float) -> list[int] | None:
    """Holdout indices kept in a bundle's golden/: all when they fit ``max_bytes``, else the worst samples plus an
    even spread of the rest (None means all)."""
    n = len(next(iter(inputs.values())))
    per_sample = sum(a[:1].nbytes for a in (*inputs.values(), *outputs.values()) if np.ndim(a))
    if n * per_sample <= max_bytes or n <= 1:
        return None
    k = max(1, int(max_bytes // max(per_sample, 1)))
    keep = {int(w["index"]) for rows in worst.values() for w in rows if 0 <= int(w["index"]) < n}
    for i in np.linspace(0, n - 1, num=k).round().astype(int):
        if len(keep) >= k:
            break
        keep.add(int(i))
    return sorted(keep)


def stage_holdout(parent: Path, data: CalibrationData, golden: Feeds) -> Path:
    """The build's full holdout (inputs, reference outputs, labels), compressed, in a staging folder of ``parent``
    that an interrupted or failed build removes (:func:`publish_holdout` moves it next to the build report)."""
    from edgepack.core.npz import save_npz

    tmp = bundles.staging_dir(parent, "holdout")
    save_npz(tmp / "inputs.npz", data.holdout, compress=True)
    save_npz(tmp / "outputs.npz", golden, compress=True)
    if data.holdout_labels is not None:
        save_npz(tmp / "labels.npz", {"labels": data.holdout_labels}, compress=True)
    return tmp


def check_holdout_folder(folder: Path) -> None:
    """The holdout is written into a real folder only (never through a symlink planted at OUT/<model>/holdout)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{safety.shown(folder)} is a symlink or a file: the build's holdout is never written "
                         "through it", hint="move it away or choose another --out")


def publish_holdout(tmp: Path, folder: Path) -> None:
    """Move the staged holdout files into ``folder`` (each by atomic rename; a stale labels.npz is removed)."""
    check_holdout_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (tmp / "labels.npz").exists():
        (folder / "labels.npz").unlink(missing_ok=True)
    for f in sorted(tmp.iterdir()):
        os.replace(f, folder / f.name)


def build(
    model: str,
    targets: list[str],
    *,
    calibration: str | None = None,
    holdout: str | None = None,
    out: Path = Path("dist"),
    inputs: tuple[TensorSpec, ...] = (),
    weights: str | None = None,
    weights_strict: bool = True,
    trust_code: bool = False,
    signature: str | None = None,
    synthetic: bool = False,
    archive: bool = False,
    skip_unavailable: bool = False,
    targets_dir: Path | None = None,
    outputs: dict[str, "str | outspec.OutputSpec"] | None = None,
    name: str | None = None,
    judge: str | None = None,
    in_memory: dict[str, str] | None = None,
    budgets: Mapping[str, Any] | None = None,
    budget_sources: Mapping[str, str] | None = None,
    progress: Progress = _quiet,
) -> list[TargetReport]:
    """Plan, then build, check and report every target. Errors that concern the whole build (source, data, plan
    refusals) raise EdgepackError before any conversion; an error in one target is that target's ERROR report.
    ``judge`` (``evidence``, ``bound``, ``point``) overrides every profile's ``budgets.parity.judge`` (recorded in
    each bundle's manifest). ``budgets``: the app's budgets over every profile's, key → value (``size_mb``,
    ``latency_p50_ms``, ``parity.min_top1_agreement``, any key of the budget schema), validated before any work;
    ``budget_sources``: key → where it came from (default ``budgets= argument``). Each target's report and
    manifest record every budget with its source. ``in_memory`` (set by ``edgepack.build``): ``model`` is the
    caller's in-memory object serialized into a staging file (keys ``object``, ``serialized_as``); it is trusted and
    recorded as such."""
    overrides = budget_overrides(budgets, budget_sources)
    resolved = [with_overrides(t, overrides) for t in resolve_targets(targets, targets_dir)]
    if judge:
        resolved = [with_judge(t, judge) for t in resolved]
    budget_table = {t.name: effective_budgets(t.profile.budgets, t.name, overrides) for t in resolved}
    with _workers():
        progress(Event(f"loading source {model}"))
        source = declared(load_source(model, weights=weights, inputs=inputs, trust_code=trust_code,
                                      signature=signature, name=name, weights_strict=weights_strict,
                                      in_memory=in_memory), inputs)
        the_plan = plans.make(model, resolved, source, skip_unavailable)
        plans.refuse(the_plan)
        results: dict[str, TargetReport] = {}
        for row in the_plan.rows:
            if row.action == "skip":
                t = next(t for t in resolved if t.name == row.target)
                results[t.name] = _skipped_report(t, row.reason, row.hint, source)
        runnable = [t for t in resolved if t.name in the_plan.buildable]
        progress(Event(f"plan: {len(runnable)} of {len(resolved)} target(s) to build", stage="plan",
                       targets=tuple(t.name for t in resolved), quiet=True))
        for name, r in results.items():
            progress(Event(f"{name}: skipped", stage="done", target=name, verdict="skipped", quiet=True))
        if not runnable:
            return [results[t.name] for t in resolved]
        bridges = Bridges(source)
        try:
            return _build_planned(source, resolved, runnable, results, bridges, calibration=calibration,
                                  holdout=holdout, out=out,
                                  synthetic=synthetic, archive=archive, skip_unavailable=skip_unavailable,
                                  outputs=outputs, progress=progress, budget_table=budget_table)
        finally:
            bridges.close()


def _bridge_and_preflight(source: Source, runnable: list[Target], results: dict[str, TargetReport], bridges: Bridges,
                          skip_unavailable: bool) -> dict[str, tuple[Source, list[str]]]:
    """Each target's source (bridged to ONNX where its backend needs it). Backends with a preflight that could not
    look at a bridged source during planning look now — still before any data or conversion — and refuse (or, with
    --skip-unavailable, skip) with the reason."""
    sources: dict[str, tuple[Source, list[str]]] = {}
    refused: list[plans.PlanRow] = []
    for t in runnable:
        try:
            sources[t.name] = bridges.for_backend(t.backend.name, t.backend.accepts, t.backend.refusals)
        except Exception as e:  # noqa: BLE001 - a failed bridge is the verdict of the targets needing it
            results[t.name] = _error_report(t, f"bridge ({t.backend.route(source.kind)[1]})", e, source)
            continue
        bridged = sources[t.name][0]
        if bridged is source or not t.backend.has_preflight():
            continue  # direct sources were checked by the plan
        try:
            run_isolated(_preflight_worker, bridged, t, what=f"{t.name} preflight", family=f"backend:{t.backend.name}")
        except EdgepackError as e:
            del sources[t.name]
            if isinstance(e, NotApplicable):
                results[t.name] = _skipped_report(t, plans.NOT_APPLICABLE + e.message, e.hint or None, source)
            elif skip_unavailable:
                results[t.name] = _skipped_report(t, e.message, e.hint or None, source)
            else:
                refused.append(plans.PlanRow(target=t.name, backend=t.backend.name, precision=t.profile.precision,
                                             action="refuse", route=t.backend.route(source.kind)[1], reason=e.message,
                                             hint=e.hint or None))
    plans.refuse(plans.Plan(model=source.name, source=source.describe(), rows=tuple(refused)))
    return sources


FIDELITY_SAMPLES = 64  # calibration samples the onnx → torch bridge is compared on


def bridge_fidelity(source: Source, bridges: Bridges, sources: dict[str, tuple[Source, list[str]]],
                    runnable: list[Target], data: CalibrationData, axes: dict[str, int | None],
                    results: dict[str, TargetReport], progress: Progress) -> dict[str, list[Check]]:
    """The onnx → torch bridged program against the ONNX model on the calibration split, once, before any target
    is converted from it: its row for each target built from it; a failing row is those targets' FAILED verdict
    (in ``results``) and they are not converted."""
    bridged = bridges.torch_bridged()
    users = [t for t in runnable if t.name in sources and sources[t.name][0] is bridged]
    if bridged is None or not users:
        return {}
    from edgepack.sources import onnx_torch

    split = data.calibration or data.holdout
    n = min(FIDELITY_SAMPLES, len(next(iter(split.values()))))
    feeds = take(split, np.arange(n))
    progress(Event(f"checking the {onnx_torch.ROUTE} on {n} calibration samples", stage="source"))
    reference = golden_outputs(source, feeds, axes)
    try:
        row = onnx_torch.fidelity(reference, onnx_torch.run(bridged, feeds, axes), n)
    except Exception as e:  # noqa: BLE001 - the bridged program not running is the ERROR of the targets using it
        for t in users:
            results[t.name] = _error_report(t, "bridge fidelity", e, source)
            progress(Event(f"{t.name}: ERROR in bridge fidelity: {results[t.name].reason}", stage="error",
                           target=t.name, verdict="error"))
        return {}
    if row.passed:
        return {t.name: [row] for t in users}
    for t in users:
        p = t.profile
        results[t.name] = TargetReport(
            target=t.name, status="failed", backend=p.backend, precision=p.precision, device=p.device,
            stage="bridge fidelity", checks=[row], source=source.describe(),
            reason=f"the {onnx_torch.ROUTE} changes the model's numbers ({row.note}); nothing was converted",
            hint="build the ort_mobile/openvino targets, which take the ONNX model directly, or report the ops to "
                 "edgepack (docs/bridge.md)")
        progress(Event(f"{t.name}: FAILED bridge fidelity: {row.note}", stage="done", target=t.name,
                       verdict="failed"))
    return {}


def _skipped_report(t: Target, reason: str | None, hint: str | None, source: Source) -> TargetReport:
    p = t.profile
    return TargetReport(target=t.name, status="skipped", backend=p.backend, precision=p.precision, device=p.device,
                        reason=reason, hint=hint, source=source.describe())


def _build_planned(source: Source, resolved: list[Target], runnable: list[Target], results: dict[str, TargetReport],
                   bridges: Bridges, *, calibration: str | None, holdout: str | None = None, out: Path, synthetic: bool, archive: bool,
                   skip_unavailable: bool, outputs: dict[str, "str | outspec.OutputSpec"] | None,
                   progress: Progress, budget_table: dict[str, dict[str, EffectiveBudget]] | None = None
                   ) -> list[TargetReport]:
    sources = _bridge_and_preflight(source, runnable, results, bridges, skip_unavailable)
    runnable = [t for t in runnable if t.name in sources]
    if not runnable:
        return [results[t.name] for t in resolved]
    out_root = bundles.prepare_parent(out)
    for t in runnable:  # refused before any conversion: an unsafe name, or a non-bundle in the way
        bundles.check_destination(out_root / source.name / t.name)
    progress(Event("preparing calibration and holdout data"))
    data = with_state_trajectories(source, load_data(calibration, runnable, source, synthetic, holdout))
    declared_specs = {n: outspec.parse(s) if isinstance(s, str) else s for n, s in (outputs or {}).items()}
    progress(Event("tracing the model's output shapes on the first calibration batch"))
    axes, shape_warnings = output_axes(source, data.calibration or data.holdout, declared_specs)
    progress(Event(f"computing golden outputs on {len(next(iter(data.holdout.values())))} holdout samples"))
    golden = golden_outputs(source, data.holdout, axes)
    check_reference(golden)
    # decided once per target, before any conversion (bad declarations are refused up front)
    declared_kinds = {n: s.kind for n, s in declared_specs.items()}
    hints = output_ops(source)
    kinds = {t.name: output_kinds(t, golden, data.holdout_labels, declared_kinds, hints) for t in runnable}
    specs = {t.name: output_specs(golden, declared_specs, axes, kinds[t.name]) for t in runnable}
    bridge_rows = bridge_fidelity(source, bridges, sources, runnable, data, axes, results, progress)
    runnable = [t for t in runnable if t.name not in results]
    if not runnable:
        return [results[t.name] for t in resolved]
    # staged now, moved into place when the build ends: an interrupted build leaves no holdout/ behind
    check_holdout_folder(out_root / source.name / "holdout")
    holdout_tmp = stage_holdout(out_root / source.name, data, golden)
    try:
        if data.tuning and any(t.backend.tunes_on_data(t.profile, t.options) for t in runnable):
            progress(Event(f"computing reference outputs on {len(next(iter(data.tuning.values())))} tuning samples "
                           "(for the INT8 accuracy search)"))
            data = replace(data, tuning_reference=golden_outputs(source, data.tuning, axes))
        converted, errors = _convert_all(runnable, sources, data, out_root / source.name, progress, kinds,
                                         {n: s for n, (s, _) in specs.items()})
        results.update(errors)
        try:
            for i, c in enumerate(converted):
                try:
                    spec, spec_warnings = specs[c.target.name]
                    results[c.target.name] = finish_target(c, source, data, golden, out_root, archive,
                                                           kinds[c.target.name], progress, spec,
                                                           shape_warnings + spec_warnings,
                                                           (budget_table or {}).get(c.target.name),
                                                           bridge_rows.get(c.target.name, []))
                    status = results[c.target.name].status
                    progress(Event(f"{c.target.name}: {status.upper()}", stage="done", target=c.target.name,
                                   verdict=status, quiet=True))
                except Exception as e:  # noqa: BLE001 - one target's failure is its verdict
                    results[c.target.name] = _error_report(c.target, "host run", e, source)
                    progress(Event(f"{c.target.name}: ERROR in host run: {results[c.target.name].reason}",
                                   stage="error", target=c.target.name, verdict="error"))
                finally:
                    bundles.discard(c.staging)
                converted[i] = None  # type: ignore[call-overload]
        finally:
            for c in converted:
                if c is not None:
                    bundles.discard(c.staging)
        publish_holdout(holdout_tmp, out_root / source.name / "holdout")
    finally:
        bundles.discard(holdout_tmp)  # nothing left after a publish; the staged copy after an error
    return [results[t.name] for t in resolved]


def check(bundle_dir: Path, progress: Progress = _quiet) -> TargetReport:
    """Re-run integrity, host parity and budgets of an existing bundle from its golden files; rewrites report.json."""
    bundle_dir = Path(bundle_dir)
    manifest = bundles.read_manifest(bundle_dir)
    integrity = bundles.verify(bundle_dir, allow_failed=True)
    bundles.refuse_unsafe(integrity)  # nothing is read through a symlink, a FIFO or a path out of the bundle
    for rel in dict.fromkeys([manifest.artifact.primary, *manifest.artifact.model_files]):
        path = safety.inside(bundle_dir, rel, "model file", error=BundleError)
        if not path.exists():
            raise BundleError(f"{safety.shown(bundle_dir)}: the model file {safety.shown(rel, 120)} named by the "
                              "manifest is missing", hint="rebuild the bundle (`edgepack verify` lists what else "
                              "changed)")
    target = registry.resolve(manifest.target)
    target.backend.ensure_available()
    g = manifest.golden
    inputs = bundles.read_golden(bundle_dir, g.inputs)
    golden = bundles.read_golden(bundle_dir, g.outputs)
    labels = bundles.read_golden(bundle_dir, g.labels)["labels"] if g.labels else None
    from edgepack import quantsearch

    artifact = manifest.artifact
    try:  # the search's timings live in the build's report.json only (the manifest stays byte-reproducible)
        reported = json.loads((bundle_dir / bundles.REPORT).read_text()).get("artifact")
    except (OSError, ValueError, AttributeError):
        reported = None
    artifact = artifact.model_copy(update={"details": quantsearch.with_timings(artifact.details, reported)})
    with _workers():
        ev = evaluate(target, artifact, bundle_dir, inputs, golden, labels, manifest.limits,
                      manifest.kinds, progress, {n: outspec.from_dict(d) for n, d in manifest.output_specs.items()})
    integrity_row = Check("integrity (sha256 of every file)", 0, len(integrity.problems), bool(integrity), "==",
                          "; ".join(integrity.problems))
    checks = [integrity_row, *ev.checks]
    warnings = (["golden inputs are SYNTHETIC random data"] if g.synthetic else []) + ev.warnings
    profile = manifest.target
    report = TargetReport(
        target=profile.name, status=verdict(checks), backend=profile.backend,
        precision=profile.precision, device=profile.device, bundle=str(bundle_dir), size_bytes=ev.size_bytes,
        primary=manifest.artifact.primary, latency=ev.latency, parity=ev.parity, limits=manifest.limits,
        budgets=manifest.budgets, checks=checks, warnings=warnings, artifact=artifact.details, calibration=manifest.calibration,
        source=manifest.source.model_dump(mode="json"),
    )
    bundles.write_report(bundle_dir, report)
    return report


__all__ = ["Evaluation", "build", "check", "check_reference", "evaluate", "golden_subset", "load_data", "output_kinds",
           "plan", "resolve_targets"]

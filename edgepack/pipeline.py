"""The one place where stages are sequenced; every stage returns a value and nothing edits it afterwards.

target profiles → registry.resolve (Options validated once) → source → calibration/holdout data → golden outputs
→ per target: backend.convert (warm worker per framework family; independent families convert concurrently)
→ host parity + latency (one target at a time, so timings do not share the CPU) → budgets → TargetReport
→ bundle.write (golden I/O, runner, report, manifest last) → atomic rename into ``<out>/<model>/<target>/``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgepack import bundle as bundles
from edgepack import calibration as calibration_mod
from edgepack.artifact import Artifact, ConvertData
from edgepack.backends import registry
from edgepack.backends.registry import Target
from edgepack.budgets import check as budget_checks
from edgepack.calibration import CalibrationData
from edgepack.config import available_targets, load_profile
from edgepack.core.batching import first_batch, run_batched
from edgepack.core.checks import Check
from edgepack.core.kinds import KINDS, decide
from edgepack.core.latency import measure as measure_latency
from edgepack.core.limits import Limits
from edgepack.errors import ConfigError, RuntimeUnavailable
from edgepack.feeds import Feeds
from edgepack.isolation import Workers, current, run_isolated
from edgepack.parity.compare import compare
from edgepack.parity.tolerances import limits as parity_limits
from edgepack.report import LatencyReport, OutputKindInfo, ParityReport, TargetReport
from edgepack.signature import TensorSpec
from edgepack.sources import Source, load_source, module_for
from edgepack.sources.bridge import Bridges

Progress = Callable[[str], None]
JOBS = max(1, int(os.environ.get("EDGEPACK_JOBS", "2")))  # concurrent conversions of independent backends


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


def _convert_worker(source: Source, target: Target, data: ConvertData, out_dir: str) -> Artifact:
    return target.backend.convert(source, target.profile, target.options, data, Path(out_dir))


def _host_worker(target: Target, artifact: Artifact, bundle_dir: str, feeds: Feeds, warmup: int, repeats: int,
                 threads: int) -> dict[str, Any]:
    """Run the artifact on the holdout feeds and time one model call (in the backend's worker)."""
    runner = target.backend.runner(artifact, Path(bundle_dir), threads=threads)
    with runner:
        outputs = run_batched(runner.infer, feeds, runner.max_batch)
        one = first_batch(feeds, runner.max_batch)
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


def load_data(spec: str | None, targets: list[Target], source: Source, synthetic: bool) -> CalibrationData:
    """The build's data. Without ``--calibration`` the profiles' recipe is used only when they all name the same one."""
    relative = None
    if spec is None:
        named = {t.profile.calibration: t for t in targets if t.profile.calibration}
        if len(named) > 1:
            listing = ", ".join(f"{t.name} → {r}" for r, t in named.items())
            raise ConfigError(f"no --calibration given and the targets name different recipes ({listing})",
                              hint=f"pass --calibration RECIPE (e.g. --calibration {next(iter(named))}) or build "
                                   "these targets separately")
        if named:
            spec, first = next(iter(named.items()))
            relative = first.profile.directory
    return calibration_mod.load(spec, source.inputs, allow_synthetic=synthetic, relative_to=relative)


def golden_outputs(source: Source, feeds: Feeds) -> Feeds:
    return module_for(source.kind).reference(source, feeds)


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


def model_files(bundle_dir: Path, artifact: Artifact) -> list[str]:
    """The shipped model files, folders (.mlpackage, ir/) expanded to the files under them."""
    out: list[str] = []
    for rel in artifact.shipped():
        p = bundle_dir / rel
        out += [q.relative_to(bundle_dir).as_posix() for q in p.rglob("*") if q.is_file()] if p.is_dir() else [rel]
    return out


def output_kinds(target: Target, golden: Feeds, labels: np.ndarray | None,
                 declared: dict[str, str]) -> dict[str, OutputKindInfo]:
    """Each output's kind: declared on the command line, else in the profile, else inferred conservatively."""
    merged = {**target.profile.outputs, **declared}
    names = list(golden)
    for name, kind in merged.items():
        if name not in golden:
            raise ConfigError(f"{target.name}: output '{name}' is declared as {kind}, but the model's outputs are "
                              f"{', '.join(names)}", hint=f"use one of: {', '.join(names)}")
        if kind not in KINDS:
            raise ConfigError(f"unknown output kind '{kind}' for '{name}'", hint=f"kinds: {', '.join(KINDS)}")
    decided = decide(golden, labels, merged)
    how = {n: ("declared on the command line" if n in declared else "declared in the profile") for n in merged}
    return {n: OutputKindInfo(kind=k, how=how.get(n, h)) for n, (k, h) in decided.items()}


def evaluate(target: Target, artifact: Artifact, bundle_dir: Path, inputs: Feeds, golden: Feeds,
             labels: np.ndarray | None, limits: Limits, kinds: dict[str, OutputKindInfo],
             progress: Progress) -> Evaluation:
    """Run the bundle on this host (its backend's worker) against the golden outputs; judge parity and budgets."""
    profile = target.profile
    size = sum((bundle_dir / f).stat().st_size for f in model_files(bundle_dir, artifact))
    progress(f"{profile.name}: running on host for parity and latency")
    try:
        host = run_isolated(_host_worker, target, artifact, str(bundle_dir), inputs,
                            profile.latency.warmup, profile.latency.repeats, profile.latency.threads,
                            what=f"{profile.name} host run", family=f"backend:{profile.backend}")
    except RuntimeUnavailable as e:
        parity = ParityReport(passed=None, deferred_to_device=True, reason=e.message, kinds=kinds)
        checks = budget_checks(profile.budgets, size, None)
        return Evaluation(size, None, parity, checks, [f"parity deferred to device: {e.message}"])
    outcome = compare(golden, host["outputs"], limits, labels, {n: k.kind for n, k in kinds.items()})
    data = outcome.to_dict()
    decided = {**{n: OutputKindInfo(kind=k, how=h) for n, (k, h) in outcome.kinds.items()}, **kinds}
    parity = ParityReport(passed=bool(outcome), samples=outcome.samples, metrics=data["metrics"],
                          kinds=decided, worst_samples=data["worst_samples"], warnings=list(outcome.warnings))
    latency = LatencyReport(where="host", **host["latency"], runtime=host["facts"])
    checks = list(outcome.checks) + budget_checks(profile.budgets, size, host["latency"])
    return Evaluation(size, latency, parity, checks, list(outcome.warnings))


@dataclass(frozen=True)
class Converted:
    target: Target
    staging: Path
    artifact: Artifact
    seconds: float
    notes: list[str]


def convert_target(target: Target, source: Source, notes: list[str], data: CalibrationData, staging: Path,
                   progress: Progress) -> Converted:
    backend, profile = target.backend, target.profile
    progress(f"{profile.name}: converting with {backend.name} ({profile.precision})")
    tunes = backend.tunes_on_data(profile, target.options)
    convert_data = ConvertData(
        calibration=data.calibration, class_names=data.class_names, preprocess=data.preprocess,
        tuning=data.holdout if tunes else None, tuning_labels=data.holdout_labels if tunes else None,
        holdout_ranges=ConvertData.ranges(data.holdout),
    )
    t0 = time.perf_counter()
    art = run_isolated(_convert_worker, source, target, convert_data, str(staging),
                       what=f"{profile.name} conversion", family=f"backend:{backend.name}")
    seconds = time.perf_counter() - t0
    progress(f"{profile.name}: converted in {seconds:.1f} s")
    return Converted(target, staging, art, seconds, list(notes))


def finish_target(c: Converted, source: Source, data: CalibrationData, golden: Feeds, out_root: Path,
                  archive: bool, kinds: dict[str, OutputKindInfo], progress: Progress) -> TargetReport:
    """Host parity + budgets on the staged bundle, then the bundle written (manifest last) and moved into place."""
    target, profile, art = c.target, c.target.profile, c.artifact
    limits = parity_limits(profile.backend, profile.precision, profile.budgets.parity)
    ev = evaluate(target, art, c.staging, data.holdout, golden, data.holdout_labels, limits, kinds, progress)
    warnings = list(art.warnings) + ev.warnings
    if data.synthetic:
        warnings.insert(0, "parity ran on SYNTHETIC random inputs, not real data: it cannot vouch for accuracy")
    n_cal = len(next(iter(data.calibration.values())))
    if target.backend.needs_calibration(profile, target.options) and n_cal < profile.min_calibration_samples:
        warnings.append(f"calibration used {n_cal} samples, fewer than the profile's minimum "
                        f"{profile.min_calibration_samples}")
    report = TargetReport(
        target=profile.name, status="passed" if ev.passed else "failed", backend=profile.backend,
        precision=profile.precision, device=profile.device, size_bytes=ev.size_bytes, primary=art.primary,
        build_time_s=round(c.seconds, 3), latency=ev.latency, parity=ev.parity, limits=limits, checks=ev.checks,
        warnings=warnings, notes=c.notes + list(art.notes), artifact=art.details, calibration=data.describe(),
        source=source.describe(),
    )
    bundles.write(c.staging, bundles.BundleContent(
        artifact=art, device_loader=target.backend.device_file(), source=bundles.SourceInfo(**source.describe()),
        target=profile, limits=limits, kinds=kinds, golden_inputs=data.holdout, golden_outputs=golden,
        labels=data.holdout_labels, class_names=data.class_names, preprocessing=data.preprocess,
        calibration=data.describe(), synthetic=data.synthetic, report=report,
    ))
    final = out_root / source.name / profile.name
    bundles.commit(c.staging, final)
    zpath = bundles.archive(final, final.with_suffix(".zip")) if archive else None
    return report.model_copy(update={"bundle": str(final), "archive": str(zpath) if zpath else None})


def _convert_all(targets: list[Target], sources: dict[str, tuple[Source, list[str]]], data: CalibrationData,
                 out_parent: Path, progress: Progress) -> list[Converted]:
    """Convert every target: one thread per backend (its warm worker), at most JOBS backends at a time."""
    groups: dict[str, list[Target]] = {}
    for t in targets:
        groups.setdefault(t.backend.name, []).append(t)
    failed: list[BaseException] = []
    done: dict[str, Converted] = {}

    def run_group(group: list[Target]) -> None:
        for t in group:
            if failed:
                return
            staging = bundles.staging_dir(out_parent, t.name)
            try:
                src, notes = sources[t.name]
                done[t.name] = convert_target(t, src, notes, data, staging, progress)
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                bundles.discard(staging)
                failed.append(e)
                return

    with ThreadPoolExecutor(max_workers=min(JOBS, len(groups)) or 1) as pool:
        futures = [pool.submit(contextvars.copy_context().run, run_group, g) for g in groups.values()]
        for f in futures:
            f.result()
    if failed:
        for c in done.values():
            bundles.discard(c.staging)
        raise failed[0]
    return [done[t.name] for t in targets]


def build(
    model: str,
    targets: list[str],
    *,
    calibration: str | None = None,
    out: Path = Path("dist"),
    inputs: tuple[TensorSpec, ...] = (),
    weights: str | None = None,
    trust_code: bool = False,
    signature: str | None = None,
    synthetic: bool = False,
    archive: bool = False,
    skip_unavailable: bool = False,
    targets_dir: Path | None = None,
    outputs: dict[str, str] | None = None,
    progress: Progress = _quiet,
) -> list[TargetReport]:
    """Build, check and report every target; raises EdgepackError for user errors (nothing left behind)."""
    resolved = resolve_targets(targets, targets_dir)
    runnable: list[Target] = []
    results: dict[str, TargetReport] = {}
    for t in resolved:
        missing = t.backend.missing()
        if missing and skip_unavailable:
            results[t.name] = TargetReport(target=t.name, status="skipped", backend=t.profile.backend,
                                           precision=t.profile.precision, device=t.profile.device,
                                           reason=f"not installed: {', '.join(missing)}")
        else:
            t.backend.ensure_available()
            runnable.append(t)
    if not runnable:
        return [results[t.name] for t in resolved]
    out_root = bundles.prepare_parent(out)
    with _workers():
        progress(f"loading source {model}")
        source = load_source(model, weights=weights, inputs=inputs, trust_code=trust_code, signature=signature)
        for t in runnable:  # refused before any conversion: an unsafe name, or a non-bundle in the way
            bundles.check_destination(out_root / source.name / t.name)
        progress("preparing calibration and holdout data")
        data = load_data(calibration, runnable, source, synthetic)
        progress(f"computing golden outputs on {len(next(iter(data.holdout.values())))} holdout samples")
        golden = golden_outputs(source, data.holdout)
        # decided once per target, before any conversion (bad declarations are refused up front)
        kinds = {t.name: output_kinds(t, golden, data.holdout_labels, dict(outputs or {})) for t in runnable}
        bridges = Bridges(source)
        try:
            sources = {t.name: bridges.for_backend(t.backend.name, t.backend.accepts, t.backend.refusals)
                       for t in runnable}
            converted = _convert_all(runnable, sources, data, out_root / source.name, progress)
            try:
                for i, c in enumerate(converted):
                    results[c.target.name] = finish_target(c, source, data, golden, out_root, archive,
                                                           kinds[c.target.name], progress)
                    converted[i] = None  # type: ignore[call-overload]
            finally:
                for c in converted:
                    if c is not None:
                        bundles.discard(c.staging)
        finally:
            bridges.close()
    return [results[t.name] for t in resolved]


def check(bundle_dir: Path, progress: Progress = _quiet) -> TargetReport:
    """Re-run integrity, host parity and budgets of an existing bundle from its golden files; rewrites report.json."""
    bundle_dir = Path(bundle_dir)
    manifest = bundles.read_manifest(bundle_dir)
    integrity = bundles.verify(bundle_dir, allow_failed=True)
    bundles.refuse_unsafe(integrity)  # nothing is read through a symlink, a FIFO or a path out of the bundle
    target = registry.resolve(manifest.target)
    target.backend.ensure_available()
    g = manifest.golden
    inputs = bundles.read_golden(bundle_dir, g.inputs)
    golden = bundles.read_golden(bundle_dir, g.outputs)
    labels = bundles.read_golden(bundle_dir, g.labels)["labels"] if g.labels else None
    with _workers():
        ev = evaluate(target, manifest.artifact, bundle_dir, inputs, golden, labels, manifest.limits,
                      manifest.kinds, progress)
    integrity_row = Check("integrity (sha256 of every file)", 0, len(integrity.problems), bool(integrity), "==",
                          "; ".join(integrity.problems))
    checks = [integrity_row, *ev.checks]
    warnings = (["golden inputs are SYNTHETIC random data"] if g.synthetic else []) + ev.warnings
    profile = manifest.target
    report = TargetReport(
        target=profile.name, status="passed" if all(c.passed for c in checks) else "failed", backend=profile.backend,
        precision=profile.precision, device=profile.device, bundle=str(bundle_dir), size_bytes=ev.size_bytes,
        primary=manifest.artifact.primary, latency=ev.latency, parity=ev.parity, limits=manifest.limits,
        checks=checks, warnings=warnings, artifact=manifest.artifact.details, calibration=manifest.calibration,
        source=manifest.source.model_dump(mode="json"),
    )
    bundles.write_report(bundle_dir, report)
    return report


__all__ = ["Evaluation", "build", "check", "evaluate", "load_data", "output_kinds", "resolve_targets"]

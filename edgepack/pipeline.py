"""The one place where stages are sequenced.

target profiles → source → calibration/holdout data → golden outputs (reference runner) → per target:
backend.convert (worker process) → staging folder (golden I/O, runner) → host parity + latency (worker process)
→ budgets → report.json → manifest.json (last) → atomic rename into ``<out>/<model>/<target>/``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgepack import bundle as bundles
from edgepack import calibration as calibration_mod
from edgepack.backends import registry
from edgepack.backends.base import Artifact
from edgepack.budgets import check as budget_checks
from edgepack.budgets import measure_latency
from edgepack.calibration import CalibrationData
from edgepack.config import TargetProfile, load_profile
from edgepack.errors import EdgepackError, RuntimeUnavailable, UnsupportedConversion
from edgepack.feeds import Feeds, load_npz, run_batched, save_npz, take
from edgepack.isolation import run_isolated
from edgepack.parity.compare import Check, ParityResult, compare
from edgepack.parity.tolerances import default as default_tolerance
from edgepack.sources import Source, load_source, module_for
from edgepack.signature import TensorSpec

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class TargetResult:
    """The verdict for one target: a value, never an exception."""

    target: str
    status: str  # passed | failed | skipped
    bundle: Path | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "skipped")


# ---------------------------------------------------------------------------------------------- workers


def _convert_worker(backend_name: str, source: Source, target: TargetProfile, calib: CalibrationData | None,
                    out_dir: str) -> dict:
    backend = registry.get(backend_name)
    return backend.convert(source, target, calib, Path(out_dir)).to_dict()


def _host_worker(backend_name: str, artifact: dict, bundle_dir: str, feeds: Feeds, warmup: int, repeats: int,
                 threads: int) -> dict:
    """Run the artifact on the holdout feeds and time batch-1 inference (in a fresh process)."""
    backend = registry.get(backend_name)
    art = Artifact.from_dict(artifact)
    runner = backend.runner(art, Path(bundle_dir), threads=threads)
    with runner:
        outputs = run_batched(runner.infer, feeds, runner.max_batch)
        one = take(feeds, slice(0, runner.max_batch or 1))
        timed = getattr(runner, "infer_for_latency", runner.infer)  # a runner may time a deployment-style compile
        latency = measure_latency(lambda: timed(one), warmup, repeats)
        return {"outputs": outputs, "latency": latency, "facts": runner.facts}


# ---------------------------------------------------------------------------------------------- stages


def resolve_targets(names: list[str], targets_dir: Path | None = None) -> list[TargetProfile]:
    """Profiles for the given names or paths; ``all`` expands to every profile found in the targets folders."""
    if not names:
        raise EdgepackError("no target given", hint="add --target NAME (see `edgepack targets`)")
    from edgepack.config import available_targets

    expanded: list[str] = []
    for n in names:
        expanded += [str(p) for p in available_targets(targets_dir).values()] if n == "all" else [n]
    return [load_profile(n, targets_dir) for n in dict.fromkeys(expanded)]


def load_data(spec: str | None, profiles: list[TargetProfile], source: Source, synthetic: bool) -> CalibrationData:
    relative = None
    if spec is None:
        for p in profiles:
            if p.calibration:
                spec, relative = p.calibration, p.directory
                break
    return calibration_mod.load(spec, source.inputs, allow_synthetic=synthetic, relative_to=relative)


def golden_outputs(source: Source, feeds: Feeds) -> Feeds:
    mod = module_for(source.kind)
    if source.kind == "onnx":
        return run_isolated(mod.reference, source, feeds, what="ONNX reference run")
    return mod.reference(source, feeds)


class _Bridges:
    """Source conversions shared by all targets of one build (e.g. one torch → ONNX export)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.dir = Path(tempfile.mkdtemp(prefix="edgepack-bridge-"))
        self.cache: dict[str, tuple[Source, list[str]]] = {}

    def for_backend(self, backend) -> tuple[Source, list[str]]:
        if self.source.kind in backend.accepts:
            return self.source, []
        if "onnx" not in backend.accepts:
            raise UnsupportedConversion(
                f"backend '{backend.name}' cannot take {self.source.kind} sources",
                hint=getattr(backend, "refusals", {}).get(self.source.kind)
                or f"it accepts: {', '.join(sorted(backend.accepts))}",
            )
        if "onnx" not in self.cache:
            path = self.dir / f"{self.source.name}.onnx"
            notes = module_for(self.source.kind).to_onnx(self.source, path)
            from edgepack.sources.onnx import read_model, signature

            ins, outs = signature(read_model(path))
            bridged = Source(kind="onnx", format="onnx", path=str(path), name=self.source.name,
                             inputs=ins, outputs=outs, sha256=self.source.sha256)
            self.cache["onnx"] = (bridged, [f"bridged {self.source.kind} → onnx", *notes])
        return self.cache["onnx"]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def parity_limits(profile: TargetProfile) -> dict[str, float | None]:
    tol = default_tolerance(profile.backend, profile.precision)
    b = profile.budgets.parity
    return {
        "max_abs_error": b.max_abs_error if b.max_abs_error is not None else tol.max_abs_error,
        "min_cosine": b.min_cosine if b.min_cosine is not None else tol.min_cosine,
        "min_top1_agreement": b.min_top1_agreement if b.min_top1_agreement is not None else tol.min_top1_agreement,
        "max_accuracy_drop": b.max_accuracy_drop if b.max_accuracy_drop is not None else tol.max_accuracy_drop,
    }


def evaluate(profile: TargetProfile, artifact: Artifact, bundle_dir: Path, inputs: Feeds, golden: Feeds,
             labels: np.ndarray | None, progress: Progress) -> dict[str, Any]:
    """Host parity + budgets for a (staged or finished) bundle; returns the report body."""
    size = sum((bundle_dir / f).stat().st_size for f in _primary_files(bundle_dir, artifact))
    host = None
    deferred = None
    progress(f"{profile.name}: running on host for parity and latency")
    try:
        host = run_isolated(_host_worker, profile.backend, artifact.to_dict(), str(bundle_dir), inputs,
                            profile.latency.warmup, profile.latency.repeats, profile.latency.threads,
                            what=f"{profile.name} host run")
    except RuntimeUnavailable as e:
        deferred = e.message
    tol = default_tolerance(profile.backend, profile.precision)
    if host is not None:
        parity: ParityResult = compare(golden, host["outputs"], tol, profile.budgets.parity, labels)
        parity_dict = parity.to_dict()
        checks = list(parity.checks)
        warnings = list(parity.warnings)
    else:
        parity_dict = {"passed": None, "deferred_to_device": True, "reason": deferred}
        checks = []
        warnings = [f"parity deferred to device: {deferred}"]
    checks += budget_checks(profile.budgets, size, host["latency"] if host else None)
    passed = all(c.passed for c in checks)
    return {
        "target": profile.name,
        "backend": profile.backend,
        "precision": profile.precision,
        "device": profile.device,
        "status": "passed" if passed else "failed",
        "passed": passed,
        "size_bytes": size,
        "primary": artifact.primary,
        "latency": {"where": "host", **host["latency"], **{"runtime": host["facts"]}} if host else None,
        "parity": parity_dict,
        "parity_limits": parity_limits(profile),
        "checks": [c.to_dict() for c in checks],
        "warnings": warnings,
    }


def _primary_files(bundle_dir: Path, artifact: Artifact) -> list[str]:
    """The shipped model files, folders (.mlpackage) expanded to the files under them."""
    out: list[str] = []
    for rel in artifact.shipped():
        p = bundle_dir / rel
        out += [q.relative_to(bundle_dir).as_posix() for q in p.rglob("*") if q.is_file()] if p.is_dir() else [rel]
    return out


def _write_golden(staging: Path, data: CalibrationData, golden: Feeds) -> dict[str, Any]:
    g = staging / "golden"
    g.mkdir()
    save_npz(g / "inputs.npz", data.holdout)
    save_npz(g / "outputs.npz", golden)
    info: dict[str, Any] = {"inputs": "golden/inputs.npz", "outputs": "golden/outputs.npz",
                            "samples": len(next(iter(data.holdout.values()))), "synthetic": data.synthetic}
    if data.holdout_labels is not None:
        save_npz(g / "labels.npz", {"labels": data.holdout_labels})
        info["labels"] = "golden/labels.npz"
    return info


def build_target(profile: TargetProfile, source: Source, bridges: _Bridges, data: CalibrationData, golden: Feeds,
                 out_root: Path, archive: bool, progress: Progress) -> TargetResult:
    backend = registry.get(profile.backend)
    backend.ensure_available()
    src, notes = bridges.for_backend(backend)
    final = out_root / source.name / profile.name
    staging = bundles.staging_dir(final.parent, profile.name)
    try:
        progress(f"{profile.name}: converting with {backend.name} ({profile.precision})")
        t0 = time.perf_counter()
        calib = data  # quantizers read calib.calibration; others may use class names for app metadata
        art = Artifact.from_dict(run_isolated(_convert_worker, backend.name, src, profile, calib, str(staging),
                                              what=f"{profile.name} conversion"))
        build_s = time.perf_counter() - t0
        progress(f"{profile.name}: converted in {build_s:.1f} s")
        golden_info = _write_golden(staging, data, golden)
        if data.class_names:
            (staging / "labels.txt").write_text("\n".join(data.class_names) + "\n")
        shutil.copyfile(bundles.RUNNER_TEMPLATE, staging / "run_bundle.py")
        report = evaluate(profile, art, staging, data.holdout, golden, data.holdout_labels, progress)
        n_cal = len(next(iter(data.calibration.values())))
        warnings = list(art.warnings) + report["warnings"]
        if data.synthetic:
            warnings.insert(0, "parity ran on SYNTHETIC random inputs, not real data: it cannot vouch for accuracy")
        if backend.needs_calibration(profile) and n_cal < profile.min_calibration_samples:
            warnings.append(f"calibration used {n_cal} samples, fewer than the profile's minimum "
                            f"{profile.min_calibration_samples}")
        report.update(build_time_s=round(build_s, 3), warnings=warnings, notes=notes + art.info.pop("notes", []),
                      artifact_info=art.info, calibration=data.describe(), source=source.describe())
        (staging / bundles.REPORT).write_text(bundles.dumps(report))
        toolchain = bundles.toolchain_versions()
        bundles.write_manifest(staging, {
            "edgepack_version": toolchain["edgepack"],
            "toolchain": toolchain,
            "source": source.describe(),
            "target": profile.model_dump(mode="json", exclude={"path"}),
            "artifact": art.to_dict(),
            "golden": golden_info,
            "parity_limits": report["parity_limits"],
            "preprocessing": data.preprocess,
            "labels": data.class_names,
            "calibration": data.describe(),
        })
        bundles.commit(staging, final)
        staging = None
        report["bundle"] = str(final)
        if archive:
            zpath = bundles.archive(final, final.with_suffix(".zip"))
            report["archive"] = str(zpath)
        return TargetResult(profile.name, report["status"], final, report)
    finally:
        bundles.discard(staging)


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
    progress: Progress = _quiet,
) -> list[TargetResult]:
    """Build, check and report every target; raises EdgepackError for user errors (nothing left behind)."""
    profiles = resolve_targets(targets, targets_dir)
    runnable = []
    results: list[TargetResult] = []
    for p in profiles:
        missing = registry.get(p.backend).missing()
        if missing and skip_unavailable:
            results.append(TargetResult(p.name, "skipped", None, {"target": p.name, "status": "skipped",
                                                                   "reason": f"not installed: {', '.join(missing)}"}))
        else:
            runnable.append(p)
    if not runnable:
        return results
    out_root = bundles.prepare_parent(out)
    progress(f"loading source {model}")
    source = load_source(model, weights=weights, inputs=inputs, trust_code=trust_code, signature=signature)
    progress("preparing calibration and holdout data")
    data = load_data(calibration, runnable, source, synthetic)
    progress(f"computing golden outputs on {len(next(iter(data.holdout.values())))} holdout samples")
    golden = golden_outputs(source, data.holdout)
    bridges = _Bridges(source)
    try:
        for p in runnable:
            results.append(build_target(p, source, bridges, data, golden, out_root, archive, progress))
    finally:
        bridges.close()
    return results


def check(bundle_dir: Path, progress: Progress = _quiet) -> TargetResult:
    """Re-run host parity and budgets of an existing bundle from its golden files; rewrites report.json."""
    bundle_dir = Path(bundle_dir)
    manifest = bundles.read_manifest(bundle_dir)
    integrity = bundles.verify(bundle_dir)
    profile = TargetProfile.model_validate(manifest["target"])
    registry.get(profile.backend).ensure_available()
    art = Artifact.from_dict(manifest["artifact"])
    g = manifest["golden"]
    inputs = load_npz(bundle_dir / g["inputs"])
    golden = load_npz(bundle_dir / g["outputs"])
    labels = load_npz(bundle_dir / g["labels"])["labels"] if g.get("labels") else None
    report = evaluate(profile, art, bundle_dir, inputs, golden, labels, progress)
    report["checks"].insert(0, Check("integrity (sha256 of every file)", 0, len(integrity.problems),
                                     bool(integrity), "==", "; ".join(integrity.problems)).to_dict())
    report["passed"] = all(c["passed"] for c in report["checks"])
    report["status"] = "passed" if report["passed"] else "failed"
    report["bundle"] = str(bundle_dir)
    if g.get("synthetic"):
        report["warnings"].insert(0, "golden inputs are SYNTHETIC random data")
    (bundle_dir / bundles.REPORT).write_text(bundles.dumps(report))
    return TargetResult(profile.name, report["status"], bundle_dir, report)


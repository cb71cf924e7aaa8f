"""Bundles: the one writer and reader of the bundle layout; the Manifest model; verify; archive.

A bundle is ``dist/<model>/<target>/`` holding the model files, ``golden/`` (inputs, reference outputs, labels),
``labels.txt``, ``run_bundle.py`` + ``runner/edgepack_core/`` + ``runner/device.py`` (the numpy-only runner for
devices: edgepack's own core and the backend's loader), ``report.json`` (the latest verdict; rewritten by
``edgepack check`` and therefore not signed) and ``manifest.json`` (sha256 + size of every file), written last.
Bundles are written to a staging folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgepack import __version__
from edgepack.artifact import Artifact
from edgepack.config import EffectiveBudget, TargetProfile
from edgepack.core import integrity
from edgepack.core.limits import Limits
from edgepack import safety, trust
from edgepack.core.npz import save_npz
from edgepack.errors import BundleError, EdgepackError, InputError
from edgepack.report import OutputKindInfo, TargetReport, dumps
from edgepack.signature import TensorSpec

SCHEMA_VERSION = 3  # 3: the build's verdict and the user's opt-ins are recorded (and covered by verify)
MANIFEST = "manifest.json"
REPORT = "report.json"
UNSIGNED = frozenset({MANIFEST, REPORT})
RUNNER_DIR = Path(__file__).parent / "runner"
RUNNER_TEMPLATE = RUNNER_DIR / "run_bundle.py"
CORE_DIR = Path(__file__).parent / "core"

TOOLCHAIN_DISTS = ("numpy", "onnx", "onnxruntime", "onnxscript", "torch", "tensorflow", "keras", "tf2onnx",
                   "ai-edge-litert", "litert-torch", "openvino", "nncf", "coremltools", "executorch", "torchao")


def toolchain_versions() -> dict[str, str]:
    """Installed versions of the converters and runtimes (read from metadata; nothing is imported)."""
    out = {"edgepack": __version__}
    for dist in TOOLCHAIN_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Model):
    path: str
    size: int
    sha256: str


class GoldenInfo(_Model):
    inputs: str = "golden/inputs.npz"
    outputs: str = "golden/outputs.npz"
    labels: str | None = None
    samples: int
    synthetic: bool = False
    holdout_samples: int | None = Field(None, description="size of the build's holdout; golden/ keeps a bounded "
                                        "subset of it (the build report's folder keeps it all)")
    indices: list[int] | None = Field(None, description="holdout indices of the golden samples (None: all of them)")


class SourceInfo(_Model):
    trusted_code: list[str] = Field(default_factory=list, description="why --trust-model-code was needed (empty: "
                                    "the model carries no code)")
    kind: str
    format: str
    path: str
    name: str
    weights: str | None = None
    weights_key: str | None = Field(None, description="the checkpoint key the state dict was taken from "
                                    "(--weights FILE:KEY)")
    weights_strict: bool = Field(True, description="false: keys in the weights file the model does not have were "
                                 "ignored (--weights-non-strict)")
    sha256: str = ""
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    in_memory: dict[str, str] | None = Field(None, description="set when the model was an in-memory object given "
                                             "to edgepack.build: what it was (object), how it was serialized into "
                                             "the build's staging folder (serialized_as) and why it was trusted")


class RecordedCheck(_Model):
    """One check row of the build's report, as the manifest records it (the verdict is derived from these)."""

    name: str
    passed: bool
    inconclusive: bool = False


class RunnerInfo(_Model):
    launcher: str = "run_bundle.py"
    core: str = "runner/edgepack_core"
    device: str = "runner/device.py"


class Manifest(_Model):
    """Everything a bundle says about itself. Read by ``check``, ``verify``, the device harness and the runner."""

    schema_version: Literal[3] = SCHEMA_VERSION
    edgepack_version: str
    verdict: Literal["passed", "inconclusive", "failed"] = Field(
        description="the build's verdict (parity, budgets; inconclusive: a rate budget the holdout had too few "
        "samples to prove); `verify` fails a failed or inconclusive bundle unless --allow-failed")
    checks: list[RecordedCheck] = Field(default_factory=list, description="the build's check rows (name, passed, "
                                        "inconclusive); `verify` fails a bundle whose verdict contradicts them (empty: "
                                        "built before they were recorded, not cross-checked)")
    opt_ins: list[str] = Field(default_factory=list, description="every opt-in the build used "
                               "(--trust-model-code and why it was needed, --synthetic-calibration, user metrics)")
    toolchain: dict[str, str]
    source: SourceInfo
    target: TargetProfile
    artifact: Artifact
    golden: GoldenInfo
    limits: Limits
    kinds: dict[str, OutputKindInfo] = Field(default_factory=dict, description="output → kind (declared or "
                                             "inferred) that decides its parity metrics")
    output_specs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="output → its spec "
                                                    "(edgepack.core.outspec): the batch axis moved to axis 0 in the "
                                                    "golden outputs and by the runner, channel groups judged as "
                                                    "virtual outputs NAME[a:b], a task kind's params; absent in old "
                                                    "manifests (batch on axis 0, no groups)")
    budgets: dict[str, EffectiveBudget] = Field(default_factory=dict, description="every budget the build set, by "
                                                "schema key, with its value and source (profile, model config, "
                                                "command line / API); the effective values are also in `target`")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] | None = None
    calibration: dict[str, Any] = Field(default_factory=dict)
    runner: RunnerInfo = RunnerInfo()
    files: list[FileEntry] = Field(default_factory=list)

    def to_json(self) -> str:
        return dumps(self.model_dump(mode="json"))


def read_golden(bundle: Path, rel: str) -> dict[str, np.ndarray]:
    """A bundle's golden arrays (a path inside the bundle, regular file, size and header checks first)."""
    return safety.load_arrays(safety.inside(bundle, rel, "golden file", error=BundleError), "golden file",
                              error=BundleError)


def read_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest: a regular, size-bounded, valid JSON file whose every path stays inside the bundle."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    shown = safety.shown(path)
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {safety.shown(bundle)}")
    if path.is_symlink() or not path.exists():
        raise BundleError(f"{safety.shown(bundle)} has no {MANIFEST}" + (" (only a symlink)" if path.is_symlink()
                          else "") + ": not a bundle, or its build did not finish")
    raw = safety.read_bytes(path, "manifest", error=BundleError)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{shown}: not valid JSON ({safety.shown(str(e).splitlines()[0] if str(e) else e, 100)})"
                          ) from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        got = data.get("schema_version") if isinstance(data, dict) else f"(a JSON {type(data).__name__})"
        raise BundleError(f"{shown}: schema version {safety.shown(got, 40)} is not {SCHEMA_VERSION}",
                          hint="rebuild the bundle with this edgepack")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise BundleError(f"{shown}: invalid manifest at '{safety.shown('.'.join(map(str, err['loc'])), 100)}': "
                          f"{safety.shown(err['msg'], 200)}") from None
    except RecursionError:
        raise BundleError(f"{shown}: invalid manifest (nested too deeply)") from None
    bad = [p for p in manifest_paths(manifest) if not safety.is_safe_relative(p)]
    if bad:
        raise BundleError(f"{shown}: path '{safety.shown(bad[0], 120)}' is not a relative path inside the bundle",
                          hint="the manifest was tampered with; rebuild the bundle")
    return manifest


def manifest_paths(manifest: Manifest) -> list[str]:
    """Every path a manifest names (files, golden data, runner, the artifact's files)."""
    g, r, a = manifest.golden, manifest.runner, manifest.artifact
    paths = [e.path for e in manifest.files] + [g.inputs, g.outputs] + ([g.labels] if g.labels else [])
    paths += [r.launcher, r.core, r.device, a.primary, *a.files, *a.model_files]
    return paths


# ----------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class BundleContent:
    """Everything that goes into a bundle besides the model files the backend already wrote."""

    artifact: Artifact
    device_loader: Path
    source: SourceInfo
    target: TargetProfile
    limits: Limits
    kinds: dict[str, OutputKindInfo]
    golden_inputs: dict[str, np.ndarray]
    golden_outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    class_names: list[str] | None
    preprocessing: dict[str, Any]
    calibration: dict[str, Any]
    synthetic: bool
    report: TargetReport
    holdout_samples: int | None = None
    golden_indices: list[int] | None = None
    output_specs: dict[str, dict[str, Any]] = field(default_factory=dict)


def write(staging: Path, content: BundleContent) -> Manifest:
    """Write the bundle layout into ``staging`` (which holds the model files): golden I/O, labels, the runner
    (launcher + numpy core + the backend's device loader), report.json, and manifest.json last."""
    staging = Path(staging)
    g = staging / "golden"
    g.mkdir()
    save_npz(g / "inputs.npz", content.golden_inputs, compress=True)
    save_npz(g / "outputs.npz", content.golden_outputs, compress=True)
    labels_file = None
    if content.labels is not None:
        save_npz(g / "labels.npz", {"labels": content.labels}, compress=True)
        labels_file = "golden/labels.npz"
    if content.class_names:
        (staging / "labels.txt").write_text("\n".join(content.class_names) + "\n")
    shutil.copyfile(RUNNER_TEMPLATE, staging / "run_bundle.py")
    core = staging / "runner" / "edgepack_core"
    core.mkdir(parents=True)
    for py in sorted(CORE_DIR.glob("*.py")):
        shutil.copyfile(py, core / py.name)
    shutil.copyfile(content.device_loader, staging / "runner" / "device.py")
    (staging / REPORT).write_text(content.report.to_json())
    golden = GoldenInfo(labels=labels_file, samples=len(next(iter(content.golden_inputs.values()))),
                        synthetic=content.synthetic, holdout_samples=content.holdout_samples,
                        indices=content.golden_indices)
    toolchain = toolchain_versions()
    files = [FileEntry(path=rel, size=(staging / rel).stat().st_size, sha256=integrity.sha256_file(staging / rel))
             for rel in integrity.list_files(staging) if rel not in UNSIGNED]
    manifest = Manifest(
        edgepack_version=toolchain["edgepack"], toolchain=toolchain, source=content.source,
        target=content.target.model_copy(update={"path": None}), artifact=content.artifact, golden=golden,
        limits=content.limits, kinds=content.kinds, output_specs=content.output_specs, budgets=content.report.budgets,
        preprocessing=content.preprocessing, labels=content.class_names,
        calibration=content.calibration, files=files,
        verdict=content.report.status if content.report.status in ("passed", "inconclusive") else "failed",
        checks=[RecordedCheck(name=c.name, passed=c.passed, inconclusive=c.inconclusive) for c in content.report.checks],
        opt_ins=[*(f"--trust-model-code ({r})" for r in content.source.trusted_code),
                 *([f"in-memory model ({content.source.in_memory.get('object')}, serialized as "
                    f"{content.source.in_memory.get('serialized_as')}; trusted: "
                    f"{content.source.in_memory.get('trusted')})"] if content.source.in_memory else []),
                 *(["--synthetic-calibration"] if content.synthetic else []),
                 *(["--weights-non-strict (keys in the weights file the model does not have were ignored)"]
                   if not content.source.weights_strict else []),
                 *(f"--allow-metric {m}" for m in os.environ.get("EDGEPACK_ALLOW_METRICS", "").split(",") if m)],
    )
    (staging / MANIFEST).write_text(manifest.to_json())
    return manifest


def write_report(bundle: Path, report: TargetReport) -> None:
    """Replace a finished bundle's report.json (``edgepack check``); never follows a symlink."""
    safety.write_atomic(Path(bundle) / REPORT, report.to_json(), "report")


# ----------------------------------------------------------------------------------------- verify


@dataclass
class Verification:
    bundle: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.problems


def verify(bundle: Path, allow_failed: bool = False) -> Verification:
    """Check every file against the manifest: changed bytes, missing files, unexpected extra files, symlinks,
    Core ML packages reading outside themselves, and the build's verdict (failed fails unless ``allow_failed``)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    checked, problems = integrity.verify_files(bundle, [e.model_dump() for e in manifest.files], UNSIGNED)
    problems += [p for p in safety.odd_entries(bundle) if p not in problems]
    for pkg in sorted(bundle.rglob("*.mlpackage")):
        problems += _mlpackage_problems(bundle, pkg)
    problems += verdict_problems(manifest)
    if manifest.verdict != "passed" and not allow_failed:
        problems.append(f"the build's verdict was {manifest.verdict}: " + (
            "a rate budget had too few holdout samples to be proven (see the INCONCLUSIVE rows of its report)"
            if manifest.verdict == "inconclusive" else "this bundle failed its parity or budget checks")
            + " (pass --allow-failed to accept it anyway)")
    return Verification(bundle, checked, problems)


def verdict_problems(manifest: Manifest) -> list[str]:
    """The recorded verdict against the recorded check rows: ``failed`` when a row failed, else ``inconclusive``
    when a row was inconclusive, else ``passed`` (``core.checks.verdict``). A verdict
    edited on its own (failed → passed) contradicts the rows it was derived from."""
    if not manifest.checks:
        return []
    failed = [c.name for c in manifest.checks if not c.passed and not c.inconclusive]
    undecided = [c for c in manifest.checks if c.inconclusive]
    if manifest.verdict == ("failed" if failed else "inconclusive" if undecided else "passed"):
        return []
    rows = (f"{len(failed)} failed row(s): {safety.shown(', '.join(failed[:3]), 160)}" if failed
            else f"all {len(manifest.checks)} rows passed")
    return [f"{TAMPERED}: the manifest's verdict is {manifest.verdict} but its recorded check rows say otherwise "
            f"({rows}); the verdict was edited"]


TAMPERED = "verdict contradicts the checks"
UNSAFE = ("outside the bundle", "symlink in the bundle", "not a regular file", TAMPERED)


def refuse_unsafe(result: Verification) -> None:
    """Raise when a bundle holds something no reader may open (paths out, symlinks, FIFOs or devices)."""
    bad = [p for p in result.problems if p.startswith(UNSAFE)]
    if bad:
        raise BundleError(f"{safety.shown(result.bundle)}: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1
                          else "") + "; nothing in it was run", hint="rebuild the bundle; never run a tampered one")


def _mlpackage_problems(bundle: Path, pkg: Path) -> list[str]:
    """A Core ML package's own Manifest.json must name files inside the package's Data folder."""
    rel_pkg = pkg.relative_to(bundle).as_posix()
    mf = pkg / "Manifest.json"
    if not mf.is_file() or mf.is_symlink():
        return [f"{rel_pkg}: no Manifest.json"]
    try:
        data = json.loads(safety.read_bytes(mf, "Core ML package manifest", error=BundleError))
        entries = data["itemInfoEntries"].values()
        paths = [e["path"] for e in entries]
    except (EdgepackError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return [f"{rel_pkg}/Manifest.json: unreadable"]
    out = []
    specs = []
    for p in paths:
        try:
            item = safety.inside(pkg / "Data", p, "Core ML package item", error=BundleError)
        except BundleError:
            out.append(f"outside the bundle: {rel_pkg}/Manifest.json names '{safety.shown(p, 120)}'")
            continue
        if item.suffix == ".mlmodel" and item.is_file() and not item.is_symlink():
            specs.append(item)
    for spec in specs:  # the weight blobs the model spec names: inside its own folder (the rule `check` applies)
        rel_spec = spec.relative_to(bundle).as_posix()
        try:
            names = trust.coreml_blob_files(safety.read_bytes(spec, "Core ML model spec", safety.max_input_bytes(),
                                                              error=BundleError))
        except (EdgepackError, ValueError, RecursionError):
            out.append(f"{rel_spec}: unreadable Core ML model spec")
            continue
        for name in sorted(set(names)):
            try:
                safety.coreml_weight_file(spec.parent, name, error=BundleError)
            except BundleError:
                out.append(f"outside the bundle: {rel_spec} names the weight file '{safety.shown(name, 120)}'")
    return out


# ----------------------------------------------------------------------------------------- staging


def prepare_parent(out_root: Path) -> Path:
    """Create and probe the output folder, turning OS errors into one clear line."""
    out_root = Path(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_root, prefix=".edgepack-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise InputError(f"cannot write to output folder {out_root}: {e.strerror or e}",
                         hint="choose another folder with --out") from None
    return out_root


_LEFTOVER = ".staging-", ".old-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(parent: Path) -> None:
    """Remove staging and replaced-bundle folders left by builds that were killed (their process is gone)."""
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return
    for p in entries:
        if not p.name.startswith(_LEFTOVER) or p.is_symlink() or not p.is_dir():
            continue
        pid = p.name.rsplit("-pid", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def staging_dir(parent: Path, name: str) -> Path:
    safety.check_name(name, "target name")
    parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(parent)
    path = Path(tempfile.mkdtemp(prefix=f".staging-{name}-pid{os.getpid()}-", dir=parent))
    path.chmod(0o755)
    _STAGING.add(path)
    return path


_STAGING: set[Path] = set()


def discard_all() -> None:
    """Remove every staging folder this process still holds (on SIGTERM/SIGINT and on errors)."""
    for p in list(_STAGING):
        discard(p)


def is_bundle(path: Path) -> bool:
    """A real folder (not a symlink) holding a regular manifest.json that names itself an edgepack bundle."""
    path = Path(path)
    mf = path / MANIFEST
    if path.is_symlink() or not path.is_dir() or mf.is_symlink() or not mf.is_file():
        return False
    try:
        with open(mf, "rb") as f:
            head = json.loads(f.read(safety.max_text_bytes()))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(head, dict) and isinstance(head.get("schema_version"), int) and "edgepack_version" in head


def check_destination(final: Path) -> None:
    """Refuse to build into a path whose name is unsafe, or that holds something other than an edgepack bundle."""
    final = Path(final)
    safety.check_name(final.name, "bundle folder name")
    safety.check_name(final.parent.name, "model folder name")
    if final.parent.is_symlink():
        raise InputError(f"{safety.shown(final.parent)} is a symlink; bundles are written into real folders only",
                         hint="choose another --out")
    if (final.exists() or final.is_symlink()) and not is_bundle(final):
        raise InputError(f"{safety.shown(final)} exists and is not an edgepack bundle: it is never replaced",
                         hint="move it away or choose another --out")


def commit(staging: Path, final: Path) -> Path:
    """Move a finished staging folder into place by atomic rename, replacing only an older edgepack bundle."""
    check_destination(final)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-pid{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(final, old)
    os.replace(staging, final)
    _STAGING.discard(Path(staging))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def discard(staging: Path | None) -> None:
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
        _STAGING.discard(Path(staging))


def archive(bundle: Path, zip_path: Path) -> Path:
    """A deterministic zip of the signed bundle (sorted entries, fixed timestamps and modes; report left out)."""
    bundle = Path(bundle)
    if zip_path.is_dir() and not zip_path.is_symlink():
        raise InputError(f"cannot write archive {safety.shown(zip_path)}: it is a folder")
    tmp = zip_path.with_name(f".{zip_path.name}.pid{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED,
                                                     compresslevel=9) as zf:
        for rel in integrity.list_files(bundle):
            if rel == REPORT:
                continue
            info = zipfile.ZipInfo(f"{bundle.name}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(bundle / rel, "rb") as f:
                zf.writestr(info, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, zip_path)
    return zip_path

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
from edgepack.config import TargetProfile
from edgepack.core import integrity
from edgepack.core.limits import Limits
from edgepack.core.npz import save_npz
from edgepack.errors import BundleError, InputError
from edgepack.report import OutputKindInfo, TargetReport, dumps
from edgepack.signature import TensorSpec

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
REPORT = "report.json"
UNSIGNED = frozenset({MANIFEST, REPORT})
RUNNER_DIR = Path(__file__).parent / "runner"
RUNNER_TEMPLATE = RUNNER_DIR / "run_bundle.py"
CORE_DIR = Path(__file__).parent / "core"

TOOLCHAIN_DISTS = ("numpy", "onnx", "onnxruntime", "onnxscript", "torch", "tensorflow", "keras", "tf2onnx",
                   "ai-edge-litert", "litert-torch", "openvino", "nncf", "coremltools")


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
    kind: str
    format: str
    path: str
    name: str
    weights: str | None = None
    sha256: str = ""
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)


class RunnerInfo(_Model):
    launcher: str = "run_bundle.py"
    core: str = "runner/edgepack_core"
    device: str = "runner/device.py"


class Manifest(_Model):
    """Everything a bundle says about itself. Read by ``check``, ``verify``, the device harness and the runner."""

    schema_version: Literal[2] = SCHEMA_VERSION
    edgepack_version: str
    toolchain: dict[str, str]
    source: SourceInfo
    target: TargetProfile
    artifact: Artifact
    golden: GoldenInfo
    limits: Limits
    kinds: dict[str, OutputKindInfo] = Field(default_factory=dict, description="output → kind (declared or "
                                             "inferred) that decides its parity metrics")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] | None = None
    calibration: dict[str, Any] = Field(default_factory=dict)
    runner: RunnerInfo = RunnerInfo()
    files: list[FileEntry] = Field(default_factory=list)

    def to_json(self) -> str:
        return dumps(self.model_dump(mode="json"))


def read_manifest(bundle: Path) -> Manifest:
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    if not path.is_file():
        raise BundleError(f"{bundle} has no {MANIFEST}: not a bundle, or its build did not finish")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        got = data.get("schema_version") if isinstance(data, dict) else None
        raise BundleError(f"{path}: schema version {got} is not {SCHEMA_VERSION}",
                          hint="rebuild the bundle with this edgepack")
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise BundleError(f"{path}: invalid manifest at '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


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
        limits=content.limits, kinds=content.kinds, preprocessing=content.preprocessing, labels=content.class_names,
        calibration=content.calibration, files=files,
    )
    (staging / MANIFEST).write_text(manifest.to_json())
    return manifest


def write_report(bundle: Path, report: TargetReport) -> None:
    """Replace a finished bundle's report.json (``edgepack check``); never follows a symlink."""
    path = Path(bundle) / REPORT
    tmp = path.with_name(f".{REPORT}.{os.getpid()}.tmp")
    tmp.write_text(report.to_json())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- verify


@dataclass
class Verification:
    bundle: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.problems


def verify(bundle: Path) -> Verification:
    """Check every file against the manifest: changed bytes, missing files and unexpected extra files."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    checked, problems = integrity.verify_files(bundle, [e.model_dump() for e in manifest.files], UNSIGNED)
    return Verification(bundle, checked, problems)


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


def staging_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=parent))
    path.chmod(0o755)
    return path


def commit(staging: Path, final: Path) -> Path:
    """Move a finished staging folder into place, replacing an older bundle of the same name."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def discard(staging: Path | None) -> None:
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def archive(bundle: Path, zip_path: Path) -> Path:
    """A deterministic zip of the signed bundle (sorted entries, fixed timestamps and modes; report left out)."""
    bundle = Path(bundle)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
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

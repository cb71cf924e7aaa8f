"""Bundles: write (staging folder → atomic rename, manifest last), read, verify, archive.

A bundle is ``dist/<model>/<target>/`` holding the model files, ``golden/`` (inputs and reference outputs for
device checks), ``run_bundle.py`` (a numpy-only runner for devices), ``manifest.json`` (sha256 + size of every
file) and ``report.json`` (the latest verdict; rewritten by ``edgepack check`` and therefore not signed).
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
from typing import Any

from edgepack import __version__
from edgepack.errors import BundleError, InputError
from edgepack.feeds import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"
UNSIGNED = frozenset({MANIFEST, REPORT})
RUNNER_TEMPLATE = Path(__file__).parent / "runner" / "run_bundle.py"

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


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def _files(bundle: Path) -> list[str]:
    return sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())


def write_manifest(bundle: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Sign every file now in ``bundle`` (except manifest/report) and write manifest.json; returns it."""
    files = [
        {"path": rel, "size": (bundle / rel).stat().st_size, "sha256": sha256_file(bundle / rel)}
        for rel in _files(bundle)
        if rel not in UNSIGNED
    ]
    manifest = {"schema_version": SCHEMA_VERSION, **body, "files": files}
    (bundle / MANIFEST).write_text(dumps(manifest))
    return manifest


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not Path(bundle).is_dir():
        raise BundleError(f"bundle folder not found: {bundle}")
    if not path.is_file():
        raise BundleError(f"{bundle} has no {MANIFEST}: not a bundle, or its build did not finish")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema version {manifest.get('schema_version')} is not {SCHEMA_VERSION}",
                          hint="rebuild the bundle with this edgepack")
    return manifest


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
    result = Verification(bundle)
    listed = {}
    for entry in manifest.get("files", []):
        listed[entry["path"]] = entry
        p = bundle / entry["path"]
        result.checked += 1
        if not p.is_file():
            result.problems.append(f"missing: {entry['path']}")
        elif p.stat().st_size != entry["size"]:
            result.problems.append(f"size changed: {entry['path']} ({p.stat().st_size} bytes, manifest says {entry['size']})")
        elif sha256_file(p) != entry["sha256"]:
            result.problems.append(f"content changed: {entry['path']} (sha256 mismatch)")
    for rel in _files(bundle):
        if rel not in listed and rel not in UNSIGNED:
            result.problems.append(f"unexpected file: {rel}")
    return result


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
        for rel in _files(bundle):
            if rel == REPORT:
                continue
            info = zipfile.ZipInfo(f"{bundle.name}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(bundle / rel, "rb") as f:
                zf.writestr(info, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, zip_path)
    return zip_path

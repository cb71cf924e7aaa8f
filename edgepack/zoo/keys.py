"""Content keys: a cell's key is a sha256 over everything that decides its bundle — the source's bytes (+ weights,
+ a factory's file), the calibration and holdout bytes, the resolved profile (+ the model's budget overrides and
declarations), edgepack's version and the versions of the converters and runtimes the cell uses (read from package
metadata; nothing is imported). Same inputs → same key, on any machine: no path, time or host goes in."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from edgepack.errors import InputError

CHUNK = 1 << 20


def _file_digest(h: "hashlib._Hash", path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def tree_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names + bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path).as_posix()).encode() + b"\0")
            _file_digest(h, f)
            h.update(b"\0")
    elif path.is_file():
        _file_digest(h, path)
    else:
        raise InputError(f"cannot read {path} to compute the cell's content key", hint="check the path in zoo.toml")
    return h.hexdigest()


def factory_file(source: str) -> Path | None:
    """The file that defines a PyTorch factory (``file.py:fn`` or ``pkg.module:fn``), found without importing it."""
    if ":" not in source:
        return None
    mod = source.rsplit(":", 1)[0]
    if mod.endswith(".py"):
        return Path(mod)
    parts = mod.split(".")
    for root in [Path.cwd(), *(Path(p) for p in sys.path if p)]:
        for cand in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if cand.is_file():
                return cand
    spec = importlib.util.find_spec(parts[0]) if len(parts) == 1 else None
    return Path(spec.origin) if spec and spec.origin else None


def source_digest(source: str) -> dict[str, str]:
    """Digests of the source: its file or folder, or a factory's defining file."""
    fac = factory_file(source)
    if fac is not None:
        if not fac.is_file():
            raise InputError(f"cannot find the file of factory {source}", hint="check the source in zoo.toml")
        return {"factory": tree_digest(fac), "factory_name": source.rsplit(":", 1)[1]}
    return {"source": tree_digest(Path(source))}


def data_digest(spec: str | None) -> dict[str, Any] | None:
    """Digest of calibration/holdout data: an .npz/.npy file's bytes, or a recipe's file + its data folder."""
    if spec is None:
        return None
    p = Path(spec)
    if p.suffix.lower() in (".npz", ".npy"):
        return {"file": tree_digest(p)}
    from edgepack.config import load_recipe

    recipe = load_recipe(spec)
    out: dict[str, Any] = {"recipe": tree_digest(Path(recipe.path))}
    if recipe.data.path:
        out["data"] = tree_digest(recipe.directory / recipe.data.path)
    if recipe.data.kind == "sklearn-digits":
        out["scikit-learn"] = toolchain(["scikit-learn"])["scikit-learn"]
    return out


def toolchain(import_names: list[str]) -> dict[str, str | None]:
    """Versions of the distributions behind the given import names (``ai_edge_litert`` → ai-edge-litert)."""
    from edgepack.inspection import DIST_OF
    from edgepack.inspection import _version as version  # the one metadata reader `edgepack doctor` uses too

    return {m: version(DIST_OF.get(m, m)) for m in sorted(set(import_names))}


def content_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a cell's parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = ["content_key", "data_digest", "factory_file", "source_digest", "toolchain", "tree_digest"]

"""sha256 of files and folders, and verification of a folder against manifest file entries."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative paths and contents)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def list_files(root: Path) -> list[str]:
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def verify_files(root: Path, entries: Iterable[Mapping], unsigned: Iterable[str] = ()) -> tuple[int, list[str]]:
    """Check files against ``{path, size, sha256}`` entries: changed, missing and unexpected files.

    Returns (entries checked, problems). Entries must name files inside ``root``.
    """
    root = Path(root)
    resolved_root = root.resolve()
    problems: list[str] = []
    listed: set[str] = set()
    checked = 0
    for entry in entries:
        rel = str(entry["path"])
        listed.add(rel)
        checked += 1
        p = root / rel
        try:
            inside = p.resolve().is_relative_to(resolved_root) and not Path(rel).is_absolute()
        except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes
            inside = False
        if not inside:
            problems.append(f"outside the bundle: {rel}")
        elif p.is_symlink() or not p.is_file():
            problems.append(f"missing: {rel}" if not p.exists() else f"not a regular file: {rel}")
        elif p.stat().st_size != entry["size"]:
            problems.append(f"size changed: {rel} ({p.stat().st_size} bytes, manifest says {entry['size']})")
        elif sha256_file(p) != entry["sha256"]:
            problems.append(f"content changed: {rel} (sha256 mismatch)")
    skip = set(unsigned)
    for rel in list_files(root):
        if rel not in listed and rel not in skip:
            problems.append(f"unexpected file: {rel}")
    return checked, problems

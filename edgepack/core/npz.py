"""Arrays on disk: deterministic ``.npz`` files (never pickled), read only after their archive limits are checked.

The limits live here, in the numpy core, because the bundle runner ships this file: a device reading a bundle's
golden arrays refuses a zip bomb, a forged ``.npy`` header or a pickled (object) array exactly as the build host's
``edgepack check`` does, before anything is inflated. Limits (MB) come from the environment, as on the host:
``EDGEPACK_MAX_UNPACKED_MB`` (default 4096) and ``EDGEPACK_MAX_RATIO`` (default 200; only for unpacked sizes above
64 MB). A value that is not a positive number is refused (:class:`ArchiveError`), never read as "no limit".
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

MB = 1 << 20
MAX_ZIP_ENTRIES = 100_000
RATIO_FLOOR = 64 * MB  # small archives may compress well; the ratio rule applies above this unpacked size
NUMERIC_KINDS = "biuf"  # bool, signed/unsigned integers, floats: no strings, no objects (pickles)


class ArchiveError(ValueError):
    """An archive or array file refused before (or instead of) being inflated. ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def env_number(var: str, default: float) -> float:
    """A positive, finite number from the environment (``default`` when unset); anything else is refused."""
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ArchiveError(f"{var}={_shown(raw, 40)} is not a positive number",
                           hint=f"set {var} to a positive number (default {default:g}) or unset it")
    return value


def max_unpacked_bytes() -> int:
    return int(env_number("EDGEPACK_MAX_UNPACKED_MB", 4096) * MB)


def max_ratio() -> float:
    return env_number("EDGEPACK_MAX_RATIO", 200)


def _shown(text: object, limit: int = 120) -> str:
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def safe_member(name: str) -> bool:
    """A zip entry name that is a relative POSIX path with no empty, ``.``, ``..`` or backslash parts."""
    if not name or len(name) > 1024 or name.startswith("/") or "\\" in name:
        return False
    if any(not c.isprintable() for c in name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def check_zip(path: Path | str, what: str = "archive", max_unpacked: int | None = None) -> list[zipfile.ZipInfo]:
    """The entries of a zip after checking count, names, unpacked size and compression ratio (nothing inflated)."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError as e:
        raise ArchiveError(f"cannot read {what} {_shown(p)}: {e.strerror or e}", hint="check the path") from None
    if not stat.S_ISREG(mode):
        raise ArchiveError(f"{what} {_shown(p)} is not a regular file (a FIFO, device or folder)",
                           hint="give a regular file (FIFOs, devices and folders are not read)")
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ArchiveError(f"{what} {_shown(p)} is not a readable zip ({_shown(e, 100)})",
                           hint="the file may be truncated or of another format") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ArchiveError(f"{what} {_shown(p)} has {len(infos)} entries (limit {MAX_ZIP_ENTRIES})",
                           hint="the file is forged or not what it claims to be")
    unpacked = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    limit = max_unpacked_bytes() if max_unpacked is None else max_unpacked
    if unpacked > limit:
        raise ArchiveError(f"{what} {_shown(p)} unpacks to {unpacked / MB:.0f} MB, over the {limit / MB:.0f} MB limit",
                           hint="raise EDGEPACK_MAX_UNPACKED_MB if this file is genuine")
    if unpacked > RATIO_FLOOR and unpacked / packed > max_ratio():
        raise ArchiveError(f"{what} {_shown(p)} inflates {unpacked / packed:.0f}x ({packed / MB:.1f} MB → "
                           f"{unpacked / MB:.0f} MB): refused as a decompression bomb",
                           hint="raise EDGEPACK_MAX_RATIO if this file is genuine")
    for i in infos:
        if not safe_member(i.filename.rstrip("/")) and i.filename != "/":
            raise ArchiveError(f"{what} {_shown(p)} holds an entry with an unsafe path: {_shown(i.filename, 100)}",
                               hint="the file is forged; never unpack it")
    return infos


def npy_bytes(header_fp) -> tuple[int, bool]:
    """Bytes of array data an ``.npy`` header claims, and whether its dtype is plain numeric (nothing else read)."""
    version = np.lib.format.read_magic(header_fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(header_fp)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(header_fp)
    count = 1
    for d in shape:
        count *= int(d)
    return count * dtype.itemsize, dtype.kind in NUMERIC_KINDS


def check_npz(path: Path | str, what: str = "array file") -> list[zipfile.ZipInfo]:
    """:func:`check_zip`, then every ``.npy`` header: numeric dtype, and no more bytes claimed than the entry holds."""
    p = Path(path)
    infos = check_zip(p, what)
    try:
        with zipfile.ZipFile(p) as zf:
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    claimed, numeric = npy_bytes(f)
                name = _shown(info.filename[:-4], 60)
                if not numeric:
                    raise ArchiveError(f"{what} {_shown(p)}: array '{name}' is not numeric",
                                       hint="arrays must be plain numbers (no strings or pickled objects)")
                if claimed > info.file_size:
                    raise ArchiveError(f"{what} {_shown(p)}: array '{name}' claims {claimed} bytes but its entry "
                                       f"holds {info.file_size}", hint="the file is truncated or forged")
    except ArchiveError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError, SyntaxError) as e:
        raise ArchiveError(f"cannot read {what} {_shown(p)}: {_shown(str(e).splitlines()[0] if str(e) else type(e).__name__, 150)}",
                           hint="arrays must be plain numeric .npy/.npz (no pickled objects)") from None
    return infos


def save_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Write arrays with deterministic bytes for identical inputs (sorted names, fixed timestamps)."""
    path = Path(path)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = method
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.asarray(arrays[name], order="C"), allow_pickle=False)


def load_npz(path: Path, what: str = "array file") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, after :func:`check_npz` (limits, headers); never unpickles.

    Raises :class:`ArchiveError` (a ``ValueError``) for a refused or unreadable file."""
    check_npz(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise ArchiveError(f"cannot read {what} {_shown(path)}: {_shown(str(e).splitlines()[0] if str(e) else type(e).__name__, 150)}",
                           hint="arrays must be plain numeric .npy/.npz (no pickled objects)") from None

"""Guards for everything edgepack reads from or writes for a user: names, paths, files, archives, arrays, images.

One rule per concern, each turning a hostile or malformed input into one ``EdgepackError`` line:

* names (model, target) match ``[A-Za-z0-9._-]``, are at most 64 characters and never ``.``/``..``-like;
* a path taken from a model, profile, manifest, Core ML package or archive is relative, has no ``..`` and resolves
  inside its root (no symlink out);
* inputs are regular files (no FIFO, device, folder; a symlink to ``/dev/zero`` is a device) under a size limit;
* zips (``.npz``, ``.keras``, archives) are checked for entry count, unpacked size and compression ratio, and each
  ``.npy`` header for the bytes it claims, before anything is decompressed;
* images are opened with Pillow's decompression-bomb guard turned into a clean error;
* writes go through a temporary file created with ``O_EXCL | O_NOFOLLOW`` and an atomic rename (never through a
  planted symlink).

Limits are configurable with environment variables (MB): ``EDGEPACK_MAX_INPUT_MB`` (default 8192),
``EDGEPACK_MAX_UNPACKED_MB`` (default 4096), ``EDGEPACK_MAX_RATIO`` (default 200; only for unpacked sizes above
64 MB), ``EDGEPACK_MAX_TEXT_MB`` (profiles, recipes, manifests, configs; default 16).
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

from edgepack.core import npz
from edgepack.errors import EdgepackError, InputError

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MB = 1 << 20
MAX_ZIP_ENTRIES = npz.MAX_ZIP_ENTRIES


def _limit_mb(var: str, default: float) -> int:
    try:
        return int(npz.env_number(var, default) * MB)
    except npz.ArchiveError as e:
        raise InputError(e.message, hint=e.hint) from None


def max_input_bytes() -> int:
    return _limit_mb("EDGEPACK_MAX_INPUT_MB", 8192)


def max_unpacked_bytes() -> int:
    return _limit_mb("EDGEPACK_MAX_UNPACKED_MB", 4096)


def max_text_bytes() -> int:
    return _limit_mb("EDGEPACK_MAX_TEXT_MB", 16)


def max_ratio() -> float:
    try:
        return npz.max_ratio()
    except npz.ArchiveError as e:
        raise InputError(e.message, hint=e.hint) from None


RATIO_FLOOR = npz.RATIO_FLOOR  # small archives may compress well; the ratio rule applies above this unpacked size


def shown(text: object, limit: int = 200) -> str:
    """User text made safe for a one-line message: control characters escaped, length bounded."""
    s = str(text)
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return out if len(out) <= limit else out[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------- names


def check_name(name: str, what: str, error: type[EdgepackError] = InputError) -> str:
    """A name used as a folder or file name: ``[A-Za-z0-9._-]``, 1-64 characters, not starting with a dot."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.startswith("."):
        raise error(f"{what} '{shown(name, 80)}' is not a valid name",
                    hint="names use only letters, digits, '.', '_' and '-' (at most 64, not starting with '.')")
    return name


# ---------------------------------------------------------------------------------------------- paths


def is_safe_relative(rel: object) -> bool:
    """A relative POSIX path with no empty, ``.``, ``..`` or backslash parts and no control characters."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or rel.startswith("/") or "\\" in rel:
        return False
    if any(not c.isprintable() for c in rel):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def inside(root: Path, rel: str, what: str, error: type[EdgepackError] = InputError) -> Path:
    """``root / rel`` when ``rel`` is a safe relative path that resolves (symlinks followed) inside ``root``."""
    if not is_safe_relative(rel):
        raise error(f"{what} '{shown(rel, 120)}' is not a relative path inside {shown(root, 120)}",
                    hint="paths must stay inside their folder (no '..', no absolute paths)")
    p = Path(root) / rel
    try:
        ok = p.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):
        ok = False
    if not ok:
        raise error(f"{what} '{shown(rel, 120)}' points outside {shown(root, 120)} (through a symlink)",
                    hint="paths must stay inside their folder")
    return p


def coreml_weight_file(model_dir: Path, file_name: object, error: type[EdgepackError] = InputError) -> Path:
    """The file a Core ML weight blob names (``@model_path/weights/weight.bin``): inside the model's own folder.

    The one rule for ``check`` (the MIL evaluator reads the blobs) and ``verify`` (which only reads the names)."""
    name = file_name.replace("@model_path/", "", 1) if isinstance(file_name, str) else file_name
    return inside(model_dir, name, "Core ML weight file", error=error)  # type: ignore[arg-type]


def odd_entries(root: Path) -> list[str]:
    """Every symlink, FIFO, device or socket under ``root`` (nothing followed), as problem lines."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            rel = shown(p.relative_to(root).as_posix())
            if stat.S_ISLNK(mode):
                found.append(f"symlink in the bundle: {rel}")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                found.append(f"not a regular file: {rel} ({_kind(mode)})")
    return sorted(found)


# ---------------------------------------------------------------------------------------------- files


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file(path: Path | str, what: str, max_bytes: int | None = None,
                 error: type[EdgepackError] = InputError) -> Path:
    """``path`` if it is a regular file (symlinks followed) of at most ``max_bytes``; else one clear error."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{what} not found: {shown(p)}", hint="check the path") from None
    except OSError as e:
        raise error(f"cannot read {what} {shown(p)}: {e.strerror or e}", hint="check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {shown(p)} is {_kind(st.st_mode)}, not a regular file",
                    hint="give a regular file (FIFOs, devices and folders are not read)")
    limit = max_input_bytes() if max_bytes is None else max_bytes
    if st.st_size > limit:
        raise error(f"{what} {shown(p)} is {st.st_size / MB:.1f} MB, over the {limit / MB:.0f} MB limit",
                    hint="raise EDGEPACK_MAX_INPUT_MB if this file is genuine")
    return p


def read_bytes(path: Path | str, what: str, max_bytes: int | None = None,
               error: type[EdgepackError] = InputError) -> bytes:
    """The bytes of a small regular file (text configs, manifests), under the text limit."""
    p = regular_file(path, what, max_text_bytes() if max_bytes is None else max_bytes, error)
    try:
        with open(p, "rb") as f:
            return f.read((max_text_bytes() if max_bytes is None else max_bytes) + 1)
    except OSError as e:
        raise error(f"cannot read {what} {shown(p)}: {e.strerror or e}") from None


def regular_tree(root: Path, what: str, error: type[EdgepackError] = InputError) -> Path:
    """A folder whose entries are regular files and folders only (no symlinks, FIFOs or devices), under the limit."""
    root = Path(root)
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise error(f"{what} {shown(root)} holds a symlink: {shown(rel)}",
                            hint="copy the real files into the folder")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise error(f"{what} {shown(root)} holds {_kind(st.st_mode)}: {shown(rel)}")
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    if total > max_input_bytes():
        raise error(f"{what} {shown(root)} is {total / MB:.1f} MB, over the {max_input_bytes() / MB:.0f} MB limit",
                    hint="raise EDGEPACK_MAX_INPUT_MB if this model is genuine")
    return root


# ---------------------------------------------------------------------------------------------- archives


def check_zip(path: Path | str, what: str, error: type[EdgepackError] = InputError,
              max_unpacked: int | None = None) -> list[zipfile.ZipInfo]:
    """The entries of a zip after checking count, names, unpacked size and compression ratio (nothing inflated).

    The rules are the numpy core's (:func:`edgepack.core.npz.check_zip`), which the bundle runner ships too."""
    p = regular_file(path, what, error=error)
    try:
        return npz.check_zip(p, what, max_unpacked=max_unpacked)
    except npz.ArchiveError as e:
        raise error(e.message, hint=e.hint) from None


_npy_bytes = npz.npy_bytes


def load_arrays(path: Path | str, what: str, error: type[EdgepackError] = InputError) -> dict:
    """Arrays from an ``.npz``/``.npy`` file after every size check; never unpickles, never over-allocates."""
    import numpy as np

    p = regular_file(path, what, error=error)
    limit = max_unpacked_bytes()
    try:
        if p.suffix == ".npy":
            with open(p, "rb") as f:
                claimed, numeric = _npy_bytes(f)
                data_bytes = os.fstat(f.fileno()).st_size - f.tell()
            if not numeric:
                raise error(f"{what} {shown(p)} holds a non-numeric array", hint="arrays must be numeric")
            if claimed > data_bytes or claimed > limit:
                raise error(f"{what} {shown(p)} claims {claimed / MB:.0f} MB of data but holds "
                            f"{data_bytes / MB:.1f} MB", hint="the file is truncated or forged")
            return {"": np.load(p, allow_pickle=False)}
        try:
            return npz.load_npz(p, what)
        except npz.ArchiveError as e:
            raise error(e.message, hint=e.hint) from None
    except EdgepackError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise error(f"cannot read {what} {shown(p)}: {shown(str(e).splitlines()[0] if str(e) else type(e).__name__, 150)}",
                    hint="arrays must be plain numeric .npy/.npz (no pickled objects)") from None


# ---------------------------------------------------------------------------------------------- images


MAX_IMAGE_PIXELS = 64_000_000


def open_image(path: Path, what: str = "image"):
    """A fully loaded Pillow image; decompression bombs, truncated and unreadable files are one clean error."""
    import warnings

    from PIL import Image

    p = regular_file(path, what)
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{what} {shown(p)} is a decompression bomb ({shown(e, 120)})",
                         hint=f"images above {MAX_IMAGE_PIXELS} pixels are refused") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise InputError(f"cannot read {what} {shown(p)}: {shown(e, 120)}",
                         hint="the file may be truncated or not an image") from None


# ---------------------------------------------------------------------------------------------- writes


def write_atomic(path: Path | str, data: bytes | str, what: str = "file") -> Path:
    """Write ``path`` through a fresh temporary file (O_EXCL | O_NOFOLLOW) and an atomic rename.

    A symlink at ``path`` is replaced, never followed; a folder at ``path`` is refused."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        raise InputError(f"cannot write {what} {shown(p)}: it is a folder", hint="give a file path")
    if isinstance(data, str):
        data = data.encode()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(100):
            tmp = p.with_name(f".{p.name[:100]}.{os.getpid()}.{attempt}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                break
            except FileExistsError:
                continue
        else:
            raise InputError(f"cannot write {what} {shown(p)}: no free temporary name")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise InputError(f"cannot write {what} {shown(p)}: {e.strerror or e}",
                         hint="check the path and its permissions") from None
    return p


def writable_file_option(path: Path | None, option: str) -> None:
    """Refuse a command-line output file option that names a folder or sits under a regular file."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {shown(p)} is a folder", hint=f"give {option} a file path, e.g. {p / 'out'}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {shown(p)}: {shown(parent)} is not a folder")
            break


__all__ = ["check_name", "check_zip", "inside", "is_safe_relative", "load_arrays", "odd_entries", "open_image",
           "read_bytes", "regular_file", "regular_tree", "shown", "writable_file_option", "write_atomic"]

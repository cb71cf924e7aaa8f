"""Build emulated devices from the package registries only (Debian's apt for the interpreter, PyPI for wheels).

``arm64-emu``: an aarch64 CPython 3.11 prefix (arm64 ``.deb``s from Debian bookworm, unpacked with ``dpkg -x``),
aarch64 wheels of numpy and the runtimes installed with the host's pip (``--platform ... --only-binary=:all:``),
an ARM ``/proc/cpuinfo`` (qemu-user serves ``/proc/cpuinfo`` from ``QEMU_LD_PREFIX``; onnxruntime's and LiteRT's
cpuinfo library segfaults at import without one) and a ``bin/python3`` wrapper that runs it under
``qemu-aarch64-static -cpu cortex-a76``. The prefix is cached in ``~/.cache/edgepack/devices/arm64-emu`` and
rebuilt only when its recipe (packages, wheel pins, CPU) changes; ``lock.json`` lists the exact .deb versions and
wheel files with their sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CACHE = Path(os.environ.get("EDGEPACK_DEVICE_CACHE", Path.home() / ".cache" / "edgepack" / "devices"))

# The arm64 .debs of bookworm's python3.11 and the shared libraries its interpreter, stdlib extension modules and
# the runtimes' wheels load (ldd of every .so in the prefix, checked by ``check_libraries``).
DEBS = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libstdc++6", "libgcc-s1", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libncursesw6",
    "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libgomp1", "libzstd1", "media-types",
)
# Wheels for the device, and the wheels they pull in: pinned to constraints.txt where it pins them.
WHEELS = ("numpy", "onnxruntime", "ai-edge-litert", "openvino")
DEPENDENCIES = ("backports.strenum", "flatbuffers", "ml_dtypes", "packaging", "protobuf", "tqdm", "typing_extensions",
                "openvino-telemetry")
# manylinux tags accepted (bookworm's glibc is 2.36)
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "manylinux_2_35_aarch64")


def cpuinfo(part: str, variant: str, features: str, cores: int = 4) -> str:
    """An ARM /proc/cpuinfo as Linux prints it."""
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
                   for i in range(cores))


_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V80.replace(" cpuid", "") + " atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
# One /proc/cpuinfo per qemu -cpu model: the features it lists must be the ones qemu emulates for that model, or the
# runtimes' cpuinfo library picks kernels (dot-product, fp16) the emulated CPU lacks and dies of SIGILL.
CPUINFO = {
    "cortex-a53": cpuinfo("0xd03", "0x0", _V80),
    "cortex-a72": cpuinfo("0xd08", "0x0", _V80),
    "cortex-a76": cpuinfo("0xd0b", "0x4", _V82),
    "neoverse-n1": cpuinfo("0xd0c", "0x3", _V82 + " ssbs"),
}
CPUINFO_A76 = CPUINFO["cortex-a76"]

WRAPPER = """#!/bin/sh
# edgepack arm64-emu: aarch64 CPython under qemu-user (cpu overridable with EDGEPACK_QEMU_CPU). qemu-user serves
# /proc/cpuinfo from QEMU_LD_PREFIX: each known cpu model has its own view of the prefix (cpus/<model>, symlinks +
# its own proc/cpuinfo); other models (e.g. max) see the cortex-a76 one, which lists no more than they have.
here="$(cd "$(dirname "$0")/.." && pwd)"
cpu="${{EDGEPACK_QEMU_CPU:-{cpu}}}"
root="$here"
[ -d "$here/cpus/$cpu" ] && root="$here/cpus/$cpu"
export QEMU_LD_PREFIX="$root"
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
exec {qemu} -cpu "$cpu" "$here/usr/bin/python3.11" -s "$@"
"""


@dataclass(frozen=True)
class EmuDevice:
    """A recipe for an emulated device prefix."""

    name: str
    arch: str  # Debian architecture
    qemu: str  # qemu-user binary
    cpu: str
    python: str  # path of the interpreter inside the prefix
    platforms: tuple[str, ...]


ARM64 = EmuDevice("arm64-emu", "arm64", "qemu-aarch64-static", "cortex-a76", "usr/bin/python3.11", PLATFORMS)
EMULATED = {"arm64-emu": ARM64}


class SetupError(RuntimeError):
    """A setup step failed (the message names the command)."""


def _run(cmd: list[str], log: Callable[[str], None], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SetupError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


def pins(constraints: Path | None = None) -> dict[str, str]:
    """Wheel name → version from constraints.txt (the repo's, when found)."""
    path = constraints or Path(__file__).resolve().parents[2] / "constraints.txt"
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, sep, ver = line.split("#")[0].strip().partition("==")
            if sep:
                out[name.strip().lower()] = ver.strip()
    return out


def recipe(dev: EmuDevice = ARM64) -> dict:
    """What the prefix is made of; its hash names the cached build."""
    p = pins()
    return {"device": dev.name, "arch": dev.arch, "cpu": dev.cpu, "debs": list(DEBS),
            "wheels": [f"{w}=={p[w]}" if w in p else w for w in WHEELS],
            "dependencies": [f"{w}=={p[w.lower()]}" for w in DEPENDENCIES if w.lower() in p],
            "platforms": list(dev.platforms),
            "cpuinfo": hashlib.sha256(CPUINFO_A76.encode()).hexdigest()[:16]}


def recipe_hash(dev: EmuDevice = ARM64) -> str:
    return hashlib.sha256(json.dumps(recipe(dev), sort_keys=True).encode()).hexdigest()[:16]


def prefix_dir(dev: EmuDevice = ARM64) -> Path:
    return CACHE / dev.name


def python_of(name: str = "arm64-emu") -> Path:
    """The wrapper that runs the emulated device's Python."""
    return prefix_dir(EMULATED[name]) / "bin" / "python3"


def is_ready(dev: EmuDevice = ARM64) -> bool:
    lock = prefix_dir(dev) / "lock.json"
    try:
        return json.loads(lock.read_text())["recipe_hash"] == recipe_hash(dev) and (prefix_dir(dev) / "bin/python3").is_file()
    except (OSError, ValueError, KeyError):
        return False


def _ensure_qemu(dev: EmuDevice, log) -> str:
    qemu = shutil.which(dev.qemu)
    if qemu:
        return qemu
    if os.geteuid() != 0:
        raise SetupError(f"{dev.qemu} is missing: sudo apt-get install qemu-user-static")
    _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], log,
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    qemu = shutil.which(dev.qemu)
    if not qemu:
        raise SetupError(f"{dev.qemu} not found after installing qemu-user-static")
    return qemu


def _ensure_foreign_arch(dev: EmuDevice, log) -> None:
    archs = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    have_lists = any(Path("/var/lib/apt/lists").glob(f"*binary-{dev.arch}_Packages*"))
    if dev.arch in archs and have_lists:
        return
    if os.geteuid() != 0:
        raise SetupError(f"apt has no {dev.arch} package lists: sudo dpkg --add-architecture {dev.arch} && "
                         "sudo apt-get update")
    if dev.arch not in archs:
        _run(["dpkg", "--add-architecture", dev.arch], log)
    _run(["apt-get", "update", "-q"], log)


def _finish(root: Path, qemu: str, dev: EmuDevice) -> Path:
    """The cheap, derived parts (rewritten on every setup): the default cpuinfo, one prefix view per cpu model
    (symlinks to the prefix's folders + that model's proc/cpuinfo) and the wrapper."""
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(CPUINFO[dev.cpu])
    for model, text in CPUINFO.items():
        view = root / "cpus" / model
        (view / "proc").mkdir(parents=True, exist_ok=True)
        (view / "proc" / "cpuinfo").write_text(text)
        for entry in ("usr", "lib", "etc", "bin"):
            link = view / entry
            if (root / entry).exists() and not link.is_symlink():
                link.symlink_to(Path("..") / ".." / entry)
    (root / "bin").mkdir(exist_ok=True)
    wrapper = root / "bin" / "python3"
    wrapper.write_text(WRAPPER.format(qemu=qemu, cpu=dev.cpu))
    wrapper.chmod(0o755)
    return wrapper


def setup(dev: EmuDevice = ARM64, *, force: bool = False, log: Callable[[str], None] = lambda s: None) -> Path:
    """Build (or reuse) the emulated device's prefix; returns the wrapper Python. Idempotent and cached."""
    final = prefix_dir(dev)
    if not force and is_ready(dev):
        log(f"{dev.name}: cached at {final}")
        _finish(final, _ensure_qemu(dev, log), dev)
        return final / "bin" / "python3"
    qemu = _ensure_qemu(dev, log)
    _ensure_foreign_arch(dev, log)
    staging = final.with_name(final.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    debs_dir, root = staging / "debs", staging / "prefix"
    debs_dir.mkdir(parents=True)
    root.mkdir()
    _run(["apt-get", "download", *[f"{p}:{dev.arch}" if p != "media-types" else p for p in DEBS]], log,
         cwd=debs_dir)
    lock: dict = {"recipe_hash": recipe_hash(dev), "recipe": recipe(dev), "debs": {}, "wheels": {}}
    for deb in sorted(debs_dir.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(root)], log)
        lock["debs"][deb.name] = hashlib.sha256(deb.read_bytes()).hexdigest()
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    wheel_dir = staging / "wheels"
    plat = [a for p in dev.platforms for a in ("--platform", p)]
    common = ["--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *plat]
    pinned = staging / "pins.txt"
    pinned.write_text("\n".join(recipe(dev)["dependencies"]) + "\n")
    _run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheel_dir), *common, "-c", str(pinned),
          *recipe(dev)["wheels"]], log)
    for whl in sorted(wheel_dir.glob("*.whl")):
        lock["wheels"][whl.name] = hashlib.sha256(whl.read_bytes()).hexdigest()
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
          "--no-index", *common, *map(str, sorted(wheel_dir.glob("*.whl")))], log)
    wrapper = _finish(root, qemu, dev)
    (root / "lock.json").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(debs_dir)
    shutil.rmtree(wheel_dir)
    probe = subprocess.run([str(wrapper), "-c", "import platform, numpy; print(platform.machine(), numpy.__version__)"],
                           capture_output=True, text=True, timeout=600)
    if probe.returncode != 0 or "aarch64" not in probe.stdout:
        raise SetupError(f"the emulated Python does not start: {probe.stderr.strip()[-800:]}")
    log(f"{dev.name}: {probe.stdout.strip()}")
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    shutil.rmtree(staging, ignore_errors=True)
    return final / "bin" / "python3"

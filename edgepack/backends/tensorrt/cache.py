"""TensorRT calibration caches: writer, reader and lint. Standard library only.

Format (what ``IInt8EntropyCalibrator2`` writes and ``trtexec --calib`` reads)::

    TRT-<version>-EntropyCalibration2
    <tensor name>: <hex of the float32 bits of scale>

with ``scale = amax / 127``, and ``<version>`` the TensorRT version integer: 8.x → major*1000 + minor*100 + patch
(8.5.2 → 8502), 10.x → major*10000 + minor*100 + patch (10.3.0 → 100300).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

ALGORITHM = "EntropyCalibration2"


def version_int(tensorrt: str) -> int:
    parts = [int(p) for p in tensorrt.split(".")[:3]] + [0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def header(tensorrt: str) -> str:
    return f"TRT-{version_int(tensorrt)}-{ALGORITHM}"


def float_hex(value: float) -> str:
    return format(struct.unpack(">I", struct.pack(">f", value))[0], "08x")


def hex_float(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def write(path: Path, tensorrt: str, scales: dict[str, float]) -> Path:
    """Write a cache for ``tensor → scale`` (scale = amax/127), in the given order."""
    lines = [header(tensorrt)] + [f"{name}: {float_hex(float(s))}" for name, s in scales.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read(path: Path) -> tuple[str, dict[str, float]]:
    """``(header, tensor → scale)``; ValueError on a malformed line."""
    lines = [ln.rstrip("\r") for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty calibration cache")
    scales: dict[str, float] = {}
    for n, ln in enumerate(lines[1:], start=2):
        name, sep, value = ln.rpartition(": ")
        if not sep or not name:
            raise ValueError(f"{path}:{n}: not 'tensor: hex' ({ln!r})")
        scales[name] = hex_float(value.strip())
    return lines[0], scales


@dataclass(frozen=True)
class CacheLint:
    problems: list[str] = field(default_factory=list)
    tensors: int = 0

    @property
    def passed(self) -> bool:
        return not self.problems


def lint(path: Path, tensorrt: str, tensors: set[str], qdq_scales: dict[str, float],
         rel_tol: float = 1e-6) -> CacheLint:
    """Header and version, every tensor present in the network, every scale equal to the Q/DQ scale."""
    problems: list[str] = []
    try:
        head, scales = read(path)
    except (OSError, ValueError) as e:
        return CacheLint([str(e)])
    if head != header(tensorrt):
        problems.append(f"header '{head}' is not '{header(tensorrt)}'")
    for name, s in scales.items():
        if name not in tensors:
            problems.append(f"tensor '{name}' is not in the network")
        if not (math.isfinite(s) and s > 0):
            problems.append(f"tensor '{name}': scale {s} is not a positive finite number")
        q = qdq_scales.get(name)
        if q is not None and not math.isclose(s, q, rel_tol=rel_tol):
            problems.append(f"tensor '{name}': cache scale {s:.8g} != Q/DQ scale {q:.8g}")
    missing = sorted(set(qdq_scales) - set(scales))
    problems += [f"Q/DQ tensor '{m}' has no cache entry" for m in missing[:5]]
    return CacheLint(problems, len(scales))

"""Tensor signatures: names, shapes and dtypes of a model's inputs and outputs.

A dimension is an ``int`` or ``None`` (dynamic). ``--input name=1x3x224x224[:float32]`` is parsed here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from edgepack.errors import ConfigError

MAX_RANK = 8
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 28  # per sample: 1 GiB of float32
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")

_INPUT_RE = re.compile(r"^(?P<name>[^=]+)=(?P<shape>[0-9?x]+)(?::(?P<dtype>[a-z0-9]+))?$")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with dynamic dimensions resolved (leading dim → ``batch``, others refused)."""
        dims = []
        for i, d in enumerate(self.shape):
            if d is None:
                if i != 0:
                    raise ConfigError(
                        f"input '{self.name}' has a dynamic dimension {i} in shape {self.shape_str()}",
                        hint=f"give a concrete shape with --input {self.name}=" + "x".join(
                            "1" if x is None else str(x) for x in self.shape
                        ),
                    )
                dims.append(batch)
            else:
                dims.append(d)
        return tuple(dims)

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] is None

    def shape_str(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"))


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``name=1x3x224x224[:dtype]`` (``?`` marks a dynamic dimension)."""
    m = _INPUT_RE.match(text.strip()) if isinstance(text, str) and len(text) <= 1024 else None
    if not m:
        raise ConfigError(
            f"cannot parse --input '{text}'",
            hint="use NAME=DIMxDIMx...[:DTYPE], e.g. --input input=1x3x224x224:float32",
        )
    dims: list[int | None] = []
    for part in m.group("shape").split("x"):
        if part == "?":
            dims.append(None)
        elif part.isdigit() and int(part) > 0:
            dims.append(int(part))
        else:
            raise ConfigError(f"bad dimension '{part}' in --input '{text}'", hint="dimensions are positive integers or ?")
    elements = 1
    for d in dims:
        elements *= d or 1
    if len(dims) > MAX_RANK or any(d is not None and d > MAX_DIM for d in dims) or elements > MAX_ELEMENTS:
        raise ConfigError(f"--input '{text}' is too large (at most {MAX_RANK} dimensions of at most {MAX_DIM}, "
                          f"{MAX_ELEMENTS} elements per sample)", hint="check the shape")
    if len(m.group("name")) > 256 or not m.group("name").isprintable():
        raise ConfigError("--input name is too long or holds control characters", hint="use the model's input name")
    dtype = m.group("dtype") or "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}' in --input '{text}'", hint=f"use one of: {', '.join(DTYPES)}")
    return TensorSpec(m.group("name"), tuple(dims), dtype)

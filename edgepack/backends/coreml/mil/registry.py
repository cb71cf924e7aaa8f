"""The op table: MIL op type → numpy implementation.

An implementation takes an ``OpContext`` plus the op's named parameters (constants already decoded, fp16 inputs
widened to fp32) and returns one array or a tuple of arrays. The evaluator rounds each result to the dtype the
program declares, so fp16 programs are emulated op by op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgepack.backends.coreml.mil.program import Op, TensorType


@dataclass(frozen=True)
class OpContext:
    op: Op
    ios: int  # deployment target of the program's opset: semantics differ between 15, 16, 17, 18
    out_types: tuple[TensorType, ...]

    @property
    def out_dtype(self) -> str:
        return self.out_types[0].dtype if self.out_types else "fp32"


@dataclass(frozen=True)
class OpImpl:
    fn: Callable[..., object]
    variadic: frozenset[str]  # parameters that take a list of values (concat's "values")


OPS: dict[str, OpImpl] = {}


def op(*names: str, variadic: tuple[str, ...] = ()) -> Callable:
    """Register ``fn`` for the MIL op types ``names``."""

    def deco(fn: Callable) -> Callable:
        for n in names:
            OPS[n] = OpImpl(fn, frozenset(variadic))
        return fn

    return deco


class EvaluationError(Exception):
    """An op produced something its declaration rules out (a bug in the program or in the evaluator)."""


def axis_list(axes: object, rank: int) -> tuple[int, ...]:
    return tuple(int(a) % rank if rank else 0 for a in np.atleast_1d(np.asarray(axes)).tolist())


def scalar(v: object, default: object = None) -> object:
    if v is None:
        return default
    a = np.asarray(v)
    return a.item() if a.size == 1 else a

"""Execute an ML program op by op with numpy, checking every op's declared shape and dtype.

fp16 programs are emulated the way they declare themselves: each op computes in fp32 from its (fp16) inputs and its
result is rounded to the declared output dtype. Nothing is rounded globally, so an fp32 island inside an fp16
program (a ``cast`` pair around a sensitive op) stays fp32 here too.

Every op's outputs can be kept in a trace (``run(..., trace=True)``), in program order: the basis for reporting the
first layer where a bundle diverges from its reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# importing the op modules fills the op table
from edgepack.backends.coreml.mil import constexpr_ops, nn_ops, tensor_ops  # noqa: F401
from edgepack.backends.coreml.mil.program import FLOAT_DTYPES, NUMPY_DTYPES, Op, Program, TensorType, load_program
from edgepack.backends.coreml.mil.registry import OPS, EvaluationError, OpContext
from edgepack.errors import InputError, RuntimeUnavailable

CONST_OPS = frozenset({"const"})


@dataclass
class TraceEntry:
    """One executed op: where it sits in the program, what it produced."""

    index: int
    op_type: str
    name: str
    outputs: dict[str, np.ndarray]
    types: dict[str, TensorType]

    def summary(self) -> dict[str, Any]:
        out = {}
        for k, v in self.outputs.items():
            a = np.asarray(v)
            num = a.dtype.kind in "fiub" and a.size
            out[k] = {"type": str(self.types[k]),
                      "min": float(a.min()) if num else None, "max": float(a.max()) if num else None}
        return {"index": self.index, "op": self.op_type, "name": self.name, "outputs": out}


def _kind_ok(declared: str, arr: np.ndarray) -> bool:
    if declared in FLOAT_DTYPES:
        return arr.dtype.kind == "f"
    if declared == "bool":
        return arr.dtype.kind in "bui"
    return arr.dtype.kind in "iub"


def _shape_ok(declared: tuple[int | None, ...] | None, shape: tuple[int, ...]) -> bool:
    if declared is None:
        return True
    return len(declared) == len(shape) and all(d is None or d == s for d, s in zip(declared, shape))


def _widen(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.dtype == np.float16:
        return v.astype(np.float32)
    if isinstance(v, list):
        return [_widen(x) for x in v]
    return v


class Evaluator:
    """A reference executor for one program. ``unsupported`` lists ops it cannot run (type, node name)."""

    def __init__(self, program: Program | Path | str) -> None:
        self.program = program if isinstance(program, Program) else load_program(program)
        self.unsupported: list[tuple[str, str]] = [
            (o.type, o.name) for o in self.program.ops if o.type not in OPS and o.type not in CONST_OPS
        ]
        self._consts: dict[str, Any] | None = None
        self.last_trace: list[TraceEntry] = []

    # ------------------------------------------------------------------ checks

    def ensure_supported(self) -> None:
        """Raise RuntimeUnavailable naming every op the evaluator does not implement."""
        if self.unsupported:
            seen: dict[str, str] = {}
            for t, n in self.unsupported:
                seen.setdefault(t, n)
            names = ", ".join(f"'{t}' (node '{n}')" for t, n in seen.items())
            raise RuntimeUnavailable(
                f"the Core ML evaluator does not implement op {names}",
                hint="parity is deferred to a device that runs Core ML (macOS/iOS)",
            )

    # ------------------------------------------------------------------ running

    def _constants(self) -> dict[str, Any]:
        """Values of const and constexpr ops (folded once; constexpr decompression is checked like any op)."""
        if self._consts is None:
            env: dict[str, Any] = {}
            for i, o in enumerate(self.program.ops):
                if o.type in CONST_OPS:
                    name, tt = o.outputs[0]
                    env[name] = self._check(o, i, o.attributes.get("val"), [(name, tt)], label="const")[name]
                elif o.type.startswith("constexpr_") and o.type in OPS:
                    env.update(self._execute(i, o, env))
            self._consts = env
        return self._consts

    def _params(self, o: Op, env: dict[str, Any]) -> dict[str, Any]:
        impl = OPS[o.type]
        params: dict[str, Any] = {}
        for key, args in o.inputs.items():
            vals = []
            for a in args:
                if a.name is not None:
                    if a.name not in env:
                        raise EvaluationError(f"op '{o.name}' ({o.type}) reads '{a.name}', which is not defined yet")
                    vals.append(env[a.name])
                else:
                    vals.append(a.value)
            if key in impl.variadic:
                params[key] = vals
            elif len(vals) == 1:
                params[key] = vals[0]
            else:
                raise EvaluationError(f"op '{o.name}' ({o.type}): parameter '{key}' has {len(vals)} values")
        for key, v in o.attributes.items():
            params.setdefault(key, v)
        return {k: _widen(v) for k, v in params.items()}

    def _check(self, o: Op, index: int, result: Any, outputs: list[tuple[str, TensorType]],
               label: str | None = None) -> dict[str, np.ndarray]:
        values = result if isinstance(result, tuple) else (result,)
        if len(values) != len(outputs):
            raise EvaluationError(f"op #{index} '{o.name}' ({o.type}) produced {len(values)} outputs, "
                                  f"the program declares {len(outputs)}")
        got: dict[str, np.ndarray] = {}
        for (name, tt), v in zip(outputs, values):
            if tt is None or tt.dtype == "string":  # classifier labels / probability dictionaries
                got[name] = v
                continue
            arr = np.asarray(v)
            if not _kind_ok(tt.dtype, arr):
                raise EvaluationError(f"op #{index} '{o.name}' ({label or o.type}) output '{name}': got {arr.dtype}, "
                                      f"the program declares {tt}")
            if not _shape_ok(tt.shape, arr.shape):
                raise EvaluationError(f"op #{index} '{o.name}' ({label or o.type}) output '{name}': got shape "
                                      f"{arr.shape}, the program declares {tt}")
            got[name] = arr.astype(NUMPY_DTYPES[tt.dtype], copy=False)
        return got

    def _execute(self, index: int, o: Op, env: dict[str, Any]) -> dict[str, np.ndarray]:
        ctx = OpContext(op=o, ios=self.program.ios, out_types=tuple(t for _, t in o.outputs))
        params = self._params(o, env)
        try:
            result = OPS[o.type].fn(ctx, **params)
        except (EvaluationError, RuntimeUnavailable):
            raise
        except Exception as e:  # noqa: BLE001 - name the op that failed
            raise EvaluationError(f"op #{index} '{o.name}' ({o.type}) failed: {type(e).__name__}: {e}") from e
        return self._check(o, index, result, o.outputs)

    def feed_types(self) -> dict[str, TensorType]:
        return dict(self.program.inputs)

    def run(self, feeds: dict[str, np.ndarray], trace: bool = False, extra: list[str] | tuple[str, ...] = ()
            ) -> dict[str, np.ndarray]:
        """Outputs by program name, in the program's declared dtypes (fp16 stays fp16).

        ``extra`` names intermediate variables to return as well (e.g. the scores a ``classify`` op reads).
        """
        self.ensure_supported()
        env = dict(self._constants())
        for name, tt in self.program.inputs:
            if name not in feeds:
                raise InputError(f"the Core ML program needs input '{name}'", hint=f"inputs: {list(self.feed_types())}")
            arr = np.asarray(feeds[name])
            if tt is None or not _shape_ok(tt.shape, arr.shape):
                raise InputError(f"input '{name}' has shape {arr.shape}; the program declares {tt}")
            env[name] = arr.astype(NUMPY_DTYPES[tt.dtype])
        self.last_trace = []
        for i, o in enumerate(self.program.ops):
            if o.type in CONST_OPS or o.outputs and o.outputs[0][0] in env:
                continue
            got = self._execute(i, o, env)
            env.update(got)
            if trace:
                self.last_trace.append(TraceEntry(i, o.type, o.name, got, dict(o.outputs)))
        wanted = list(self.program.outputs) + [n for n in extra if n not in self.program.outputs]
        missing = [n for n in wanted if n not in env]
        if missing:
            raise EvaluationError(f"program variables never computed: {missing}")
        return {n: env[n] for n in wanted}

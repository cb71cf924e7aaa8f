"""FP16 safety for tflite bundles: find what float16 cannot hold before shipping a bundle that answers NaN.

* ``constant_hazards``: float32 constants (weights, biases, scalars) of the float model with values beyond float16's
  range (|x| > 65504 becomes inf) or small constants whose non-zero values flush to 0 in float16 (an epsilon that
  becomes 0 turns a log/div/rsqrt into inf). The ops that read them stay float32 (mixed FP16) and are reported.
* ``activation_hazards``: op outputs of the float model on calibration samples beyond float16's range: a host run
  of an fp16-weight file computes in float32, but an fp16 GPU delegate would overflow there (reported as warnings).
* ``nonfinite_outputs``: the final guard: outputs that are finite in float32 but not in the fp16 file.

numpy + the LiteRT schema/interpreter only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FP16_MAX = 65504.0
SMALL_CONSTANT = 16  # elements: constants this small (epsilons, scales) must not flush to zero


def _tensor_values(model, buf: bytes, tensor, type_names: dict[int, str]) -> np.ndarray | None:
    if type_names.get(tensor.Type()) != "FLOAT32":
        return None
    b = model.Buffers(tensor.Buffer())
    if b.DataLength():
        raw = b.DataAsNumpy().tobytes()
    elif b.Offset() > 1 and b.Size():
        raw = buf[b.Offset():b.Offset() + b.Size()]
    else:
        return None
    return np.frombuffer(raw, dtype="<f4")


def constant_hazards(buf: bytes) -> list[dict]:
    """Ops of the float model that read a float32 constant float16 cannot hold: op, scope (output tensor names, as
    ai-edge-quantizer names ops), tensor, largest |value|, why ("overflow" or "underflow")."""
    from edgepack.backends.tflite.flatbuffer import enum_names, schema

    fb = schema()
    model = fb.Model.GetRootAs(buf, 0)
    op_names, type_names = enum_names(fb.BuiltinOperator), enum_names(fb.TensorType)
    codes = [op_names.get(max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode()),
                          "CUSTOM") for i in range(model.OperatorCodesLength())]
    out = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            scope = ";".join(sg.Tensors(op.Outputs(i)).Name().decode() for i in range(op.OutputsLength())
                             if op.Outputs(i) >= 0)
            for i in range(op.InputsLength()):
                idx = op.Inputs(i)
                if idx < 0:
                    continue
                t = sg.Tensors(idx)
                v = _tensor_values(model, buf, t, type_names)
                if v is None or not v.size:
                    continue
                big = float(np.max(np.abs(v[np.isfinite(v)]))) if np.isfinite(v).any() else 0.0
                why = None
                if big > FP16_MAX:
                    why = "overflow"
                elif v.size <= SMALL_CONSTANT and np.any((v != 0) & (v.astype(np.float16) == 0)):
                    why = "underflow"
                if why:
                    small = float(np.min(np.abs(v[v != 0]))) if np.any(v != 0) else 0.0
                    out.append({"op": codes[op.OpcodeIndex()], "scope": scope, "subgraph": s,
                                "tensor": t.Name().decode(), "max_abs": big, "min_abs_nonzero": small, "why": why})
    return out


def activation_hazards(fp32: bytes, samples: list[dict], limit: int = 8) -> list[dict]:
    """Op outputs of the float model beyond float16's range on up to ``limit`` calibration samples (file layout,
    keyed by signature input name)."""
    from edgepack.backends.tflite.device import _interpreter

    import importlib

    Interpreter, module, _ = _interpreter()
    kw = {}
    resolver = getattr(importlib.import_module(f"{module}.interpreter"), "OpResolverType", None)
    if resolver is not None:  # no XNNPACK: every op keeps its own name and outputs
        kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_content=fp32, num_threads=1, experimental_preserve_all_tensors=True, **kw)
    except TypeError:  # an old runtime without the options
        return []
    sig = interp.get_signature_runner("serving_default")
    worst: dict[int, float] = {}
    for sample in samples[:limit]:
        sig(**sample)
        for d in interp._get_ops_details():  # noqa: SLF001 - the only per-op view the interpreter gives
            for t in d.get("outputs", []):
                try:
                    a = interp.get_tensor(int(t))
                except ValueError:
                    continue
                if a.dtype.kind == "f" and a.size:
                    worst[int(t)] = max(worst.get(int(t), 0.0), float(np.max(np.abs(a))))
    details = {int(d["index"]): d for d in interp.get_tensor_details()}
    ops = {int(t): d["op_name"] for d in interp._get_ops_details() for t in d.get("outputs", [])}  # noqa: SLF001
    return [{"op": ops.get(t, "?"), "tensor": details[t]["name"] if t in details else str(t), "max_abs": m}
            for t, m in sorted(worst.items()) if m > FP16_MAX]


def nonfinite_outputs(fp32: bytes, fp16: bytes, samples: list[dict], limit: int = 4) -> list[str]:
    """Output names that are finite in the float model and not in the fp16 file, on up to ``limit`` samples."""
    from edgepack.backends.tflite.device import _interpreter

    Interpreter = _interpreter()[0]
    runs: list[Callable] = [Interpreter(model_content=b, num_threads=1).get_signature_runner("serving_default")
                            for b in (fp32, fp16)]
    bad: set[str] = set()
    for sample in samples[:limit]:
        ref, got = (r(**sample) for r in runs)
        for k, v in ref.items():
            if np.all(np.isfinite(v)) and not np.all(np.isfinite(got[k])):
                bad.add(k)
    return sorted(bad)


def describe(h: dict) -> str:
    if h["why"] == "overflow":
        return f"{h['op']} '{h['scope']}' (constant '{h['tensor']}' reaches |x| = {h['max_abs']:.4g} > 65504)"
    return (f"{h['op']} '{h['scope']}' (constant '{h['tensor']}' holds {h['min_abs_nonzero']:.3g}, which is 0 in "
            "float16)")

"""Facts about ``.tflite`` files and the data around them (no TensorFlow, no torch: numpy + the LiteRT schema).

* ``analyze``: op census, Select-TF/custom ops, how many compute ops run in int8, weight bytes per dtype.
* ``signature_io``: the serving signature's tensors with dtype, shape and quantization scale/zero-point.
* ``calibration_warnings``: calibration sanity (takes plain values: this module imports nothing of the backend).

Layout and (de)quantization at a runner's edges live in ``device.py`` (the loader shipped in bundles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgepack.errors import ConversionFailed

SIGNATURE_KEY = "serving_default"
COMPUTE_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                         "CONV_3D", "CONV_3D_TRANSPOSE"})
EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
INT_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT4"})
SANITY_SATURATION = 0.005  # share of calibration values beyond the int8 input range that earns a warning
HOLDOUT_OVERSHOOT = 0.25  # how far (× the int8 input range) the holdout may reach past it before a warning


# ------------------------------------------------------------------------------------------ flatbuffer facts


def schema():
    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError:  # pragma: no cover - tensorflow ships the same generated schema
        from tensorflow.lite.python import schema_py_generated as fb
    return fb


def enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _buffer_bytes(b) -> int:
    """Bytes of a constant: inline data, or data stored after the flatbuffer (offset/size, large models)."""
    return b.DataLength() or (b.Size() if b.Offset() > 1 else 0)


def op_codes(fb, model, op_names: dict[int, str]) -> list[str]:
    """The name of every operator code of a model (a custom op by its custom code)."""
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(oc.CustomCode().decode() if code == fb.BuiltinOperator.CUSTOM else op_names.get(code, str(code)))
    return codes


def analyze(buf: bytes) -> dict[str, Any]:
    """Op census, custom/Flex ops, int8 coverage of compute ops and weight bytes per dtype of a .tflite model."""
    fb = schema()
    model = fb.Model.GetRootAs(buf, 0)
    op_names, type_names = enum_names(fb.BuiltinOperator), enum_names(fb.TensorType)
    codes = op_codes(fb, model, op_names)
    census: dict[str, int] = {}
    compute = int8_compute = int8_weight_compute = 0
    float_compute: dict[str, int] = {}  # compute ops whose activations are float
    float_weight_compute: dict[str, int] = {}  # compute ops whose weights are not int8
    other = int8_other = 0
    weight_bytes: dict[str, int] = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)

        def ttype(idx: int) -> str | None:
            return None if idx < 0 else type_names.get(sg.Tensors(idx).Type())

        def const(idx: int) -> bool:
            return idx >= 0 and _buffer_bytes(model.Buffers(sg.Tensors(idx).Buffer())) > 0

        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            n = _buffer_bytes(model.Buffers(tensor.Buffer()))
            if n:
                key = type_names.get(tensor.Type(), "?")
                weight_bytes[key] = weight_bytes.get(key, 0) + n
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            name = codes[op.OpcodeIndex()]
            census[name] = census.get(name, 0) + 1
            ins = [op.Inputs(i) for i in range(op.InputsLength())]
            if name in COMPUTE_OPS and ins:
                compute += 1
                act = ttype(ins[0])
                weights = [ttype(i) for i in ins[1:2] if const(i)]
                int_weights = bool(weights) and weights[0] in INT_TYPES
                if act in INT_TYPES:
                    int8_compute += 1
                else:
                    float_compute[name] = float_compute.get(name, 0) + 1
                if int_weights:
                    int8_weight_compute += 1
                else:
                    float_weight_compute[name] = float_weight_compute.get(name, 0) + 1
            elif name not in EDGE_OPS and ins:
                other += 1
                int8_other += any(ttype(i) in INT_TYPES for i in ins if not const(i))
    custom = sorted({c for c in codes if c not in op_names.values()})
    float_w = weight_bytes.get("FLOAT32", 0) + weight_bytes.get("FLOAT16", 0)
    int_w = sum(weight_bytes.get(k, 0) for k in INT_TYPES)
    return {
        "ops": dict(sorted(census.items(), key=lambda kv: (-kv[1], kv[0]))),
        "flex_ops": [c for c in custom if c.startswith("Flex")],
        "custom_ops": [c for c in custom if not c.startswith("Flex")],
        "compute_ops": compute,
        "int8_compute_ops": int8_compute,
        "int8_weight_compute_ops": int8_weight_compute,
        "float_compute_ops": float_compute,
        "float_weight_compute_ops": float_weight_compute,
        "other_ops": other,
        "int8_other_ops": int8_other,
        "weight_bytes": weight_bytes,
        "int8_weight_share": int_w / (int_w + float_w) if int_w + float_w else 0.0,
        "fp16_weight_share": weight_bytes.get("FLOAT16", 0) / float_w if float_w else 0.0,
    }


def signature_io(buf: bytes) -> tuple[list[dict], list[dict]]:
    """The serving signature's inputs and outputs: tflite name, shape (None = dynamic), dtype, scale, zero point."""
    fb = schema()
    model = fb.Model.GetRootAs(buf, 0)
    type_names = enum_names(fb.TensorType)
    if model.SignatureDefsLength() == 0:
        raise ConversionFailed("the converted model has no signature")
    sig = next((model.SignatureDefs(i) for i in range(model.SignatureDefsLength())
                if model.SignatureDefs(i).SignatureKey().decode() == SIGNATURE_KEY), model.SignatureDefs(0))
    sg = model.Subgraphs(sig.SubgraphIndex())

    def describe(tm) -> dict:
        t = sg.Tensors(tm.TensorIndex())
        sig_shape = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
        shape = [None if int(d) < 0 else int(d) for d in (sig_shape if not isinstance(sig_shape, int) else [])]
        q = t.Quantization()
        scale = [float(x) for x in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
        zp = [int(x) for x in q.ZeroPointAsNumpy()] if q is not None and q.ZeroPointLength() else []
        return {"tflite_name": tm.Name().decode(), "shape": shape,
                "dtype": type_names.get(t.Type(), "?").lower(),
                "scale": scale[0] if len(scale) == 1 else (scale or None), "zero_point": zp[0] if len(zp) == 1 else (zp or None)}

    return ([describe(sig.Inputs(i)) for i in range(sig.InputsLength())],
            [describe(sig.Outputs(i)) for i in range(sig.OutputsLength())])


# ------------------------------------------------------------------------------------------ calibration sanity


def calibration_warnings(calibration: Mapping[str, np.ndarray], holdout_ranges: Mapping[str, tuple[float, float]],
                         input_names: Sequence[str], io_in: Mapping[str, dict], *,
                         input_mean: Sequence[float] = (), input_std: Sequence[float] = ()) -> list[str]:
    """Loud hints that calibration data is scaled differently from what the model expects.

    ``calibration``: input name → calibration array; ``holdout_ranges``: input name → (min, max) of the holdout
    (the holdout itself never reaches a backend); ``io_in``: input name → its signature entry (dtype, scale,
    zero point); ``input_mean``/``input_std``: the profile's normalization of raw 0-255 inputs, if any.
    """
    out: list[str] = []
    for name in input_names:
        cal = calibration.get(name)
        if cal is None or not np.issubdtype(cal.dtype, np.floating):
            continue
        lo, hi = float(cal.min()), float(cal.max())
        sample = cal.ravel()[:100_000]
        if hi > 2.0 and lo >= 0.0 and np.all(sample == np.round(sample)):
            out.append(f"CALIBRATION: inputs for '{name}' look like raw pixel values (integers in [{lo:g}, {hi:g}]); "
                       "float models usually expect scaled inputs (0-1 or -1-1): check the recipe's preprocess "
                       "scale/mean/std")
        if input_mean and input_std:
            mean, std = np.asarray(input_mean, np.float64), np.asarray(input_std, np.float64)
            exp_lo, exp_hi = float(np.min((0 - mean) / std)), float(np.max((255 - mean) / std))
            span = exp_hi - exp_lo
            if lo < exp_lo - 0.1 * span or hi > exp_hi + 0.1 * span or (hi - lo) < 0.1 * span:
                out.append(f"CALIBRATION: inputs for '{name}' span [{lo:.3g}, {hi:.3g}], but the profile's "
                           f"normalization (mean {list(input_mean)}, std {list(input_std)}) gives "
                           f"[{exp_lo:.3g}, {exp_hi:.3g}]: the data is preprocessed differently from what the model expects")
        hold = holdout_ranges.get(name)
        if hold is not None and (hi - lo) > 0:
            h_lo, h_hi = float(hold[0]), float(hold[1])
            ratio = (h_hi - h_lo) / (hi - lo)
            if ratio > 4 or ratio < 0.25:
                out.append(f"CALIBRATION: calibration inputs for '{name}' span [{lo:.3g}, {hi:.3g}] but the holdout "
                           f"spans [{h_lo:.3g}, {h_hi:.3g}] ({ratio:.3g}x): the two splits are preprocessed differently")
        q = io_in.get(name, {})
        if q.get("dtype") in ("int8", "uint8") and isinstance(q.get("scale"), float) and q["scale"] > 0:
            info = np.iinfo(q["dtype"])
            rng_lo, rng_hi = (info.min - q["zero_point"]) * q["scale"], (info.max - q["zero_point"]) * q["scale"]
            span = rng_hi - rng_lo
            margin = 0.05 * span  # rounding at the range ends is not saturation
            share = float(np.mean((cal < rng_lo - margin) | (cal > rng_hi + margin))) if cal.size else 0.0
            if share > SANITY_SATURATION:
                out.append(f"CALIBRATION: {share:.1%} of the calibration values for '{name}' fall outside the int8 "
                           f"input range [{rng_lo:.3g}, {rng_hi:.3g}] and saturate: calibrate with data "
                           "preprocessed exactly like the app's inputs")
            if hold is None:
                continue
            h_lo, h_hi = float(hold[0]), float(hold[1])
            # only the holdout's range is known here: warn when it reaches well past the int8 range on either side
            beyond = max(rng_lo - h_lo, h_hi - rng_hi, 0.0)
            if beyond > HOLDOUT_OVERSHOOT * span:
                out.append(f"CALIBRATION: the holdout values for '{name}' span [{h_lo:.3g}, {h_hi:.3g}], reaching "
                           f"{beyond / span:.3g}x the int8 input range [{rng_lo:.3g}, {rng_hi:.3g}] beyond it: "
                           "such values saturate; calibrate with data preprocessed exactly like the app's inputs")
            else:
                levels = (h_hi - h_lo) / q["scale"]
                if levels < 16:
                    out.append(f"CALIBRATION: the holdout values for '{name}' use only {levels:.0f} of the "
                               f"{info.max - info.min + 1} int8 input levels (range [{rng_lo:.3g}, {rng_hi:.3g}]): "
                               "the calibration data was scaled larger than the model's real inputs")
    return out

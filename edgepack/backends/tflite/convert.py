"""The worker side of the tflite backend: Keras/SavedModel → TFLiteConverter, PyTorch → litert-torch
(+ ai-edge-quantizer), then the precision check, the I/O description, calibration sanity and app metadata.

Frameworks are imported inside the functions (importing this module loads none). The litert-torch float conversion
of a PyTorch source is kept in a small per-process cache (``_FP32_CACHE``): a worker that builds fp32, fp16, int8
and int8-dynamic of one model converts it once.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.tflite.device import to_file_layout
from edgepack.backends.tflite.flatbuffer import analyze, calibration_warnings, signature_io
from edgepack.backends.tflite.metadata import app_metadata, embed
from edgepack.backends.tflite.spec import PRIMARY, SIGNATURE_KEY, TFLiteRuntime
from edgepack.errors import ConfigError, ConversionFailed, InputError, UnsupportedConversion, explain
from edgepack.feeds import sha256_file, sha256_tree
from edgepack.signature import TensorSpec

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

# ``options`` is the package's validated TFLiteOptions; this module reads its fields and never imports the package
# (that would be an import cycle: the package imports this module lazily from Backend.convert).
Options = Any

_FLEX_RE = re.compile(r"Flex ops: ([\w, ]+)")
_CUSTOM_RE = re.compile(r"Custom ops: ([\w, ]+)")
_NEEDS_RE = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_NOT_QUANT_RE = re.compile(r"(?:Quantization not yet supported for op|not support(?:ed)? .*?quantiz\w*)[: ]*'?([\w.]+)'?",
                           re.IGNORECASE)


def _flex_refusal(flex: list[str], custom: list[str]) -> UnsupportedConversion:
    parts = []
    if flex:
        parts.append(f"Select-TF (Flex) ops {', '.join(flex)}")
    if custom:
        parts.append(f"custom ops {', '.join(custom)}")
    allow = [o for o, ops in (("allow_flex_ops", flex), ("allow_custom_ops", custom)) if ops]
    return UnsupportedConversion(
        f"the model needs {' and '.join(parts)}, which stock Android LiteRT runtimes do not have",
        hint=f"replace those ops in the model, or set options.{' / options.'.join(allow)} = true in the target "
             "profile (the app must then link the Flex delegate / register the custom kernels)",
    )


# ------------------------------------------------------------------------------------------ tf route


def _convert_tf(source: "Source", profile: "TargetProfile", data: ConvertData, opts: Options,
                work: Path) -> tuple[bytes, list[str], dict[str, Any]]:
    import tensorflow as tf

    from edgepack.sources import keras as keras_source

    notes = [f"tensorflow {tf.__version__} TFLiteConverter"]
    staged = keras_source.stage_savedmodel(source, work / "savedmodel", batch=None if profile.dynamic_batch else 1)

    def converter():
        conv = tf.lite.TFLiteConverter.from_saved_model(str(staged), signature_keys=[SIGNATURE_KEY])
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if profile.precision == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([tf.lite.OpsSet.TFLITE_BUILTINS] if opts.float_fallback else [])
        if opts.allow_flex_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        conv.target_spec.supported_ops = ops
        conv.allow_custom_ops = opts.allow_custom_ops
        return conv

    conv = converter()
    if profile.precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif profile.precision == "int8-dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif profile.precision == "int8":
        from edgepack.backends.tflite.search import TFSpace

        names = [t.name for t in source.inputs]
        cal = data.calibration
        n = len(next(iter(cal.values())))

        def representative():
            for i in range(n):
                yield [np.asarray(cal[k][i:i + 1], dtype=np.float32 if cal[k].dtype.kind == "f" else cal[k].dtype)
                       for k in names]

        fp32_conv = converter()
        fp32_conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if opts.allow_flex_ops else [])
        space = TFSpace(converter, representative, opts.io_type, opts.per_channel, work=work / "search",
                        fp32=b"", in_names=names, out_names=[t.name for t in source.outputs], in_t=[], out_t=[],
                        feed1={k: np.asarray(cal[k][:1]) for k in names})
        conv = space._converter(space.recipes()[0])
        notes.append(f"representative dataset: {n} calibration samples")
    try:
        buf = conv.convert()
        if profile.precision == "fp16":
            return _tf_fp16(buf, converter, source, data, opts, work, notes)
        if profile.precision == "int8":
            space.fp32 = fp32_conv.convert()
            return _search(space, buf, data, opts, notes)
        return buf, notes, {}
    except Exception as e:  # noqa: BLE001 - converter errors are free text
        details = [getattr(x, "error_message", "") for x in getattr(e, "errors", [])]
        text = "\n".join([str(e), *details])
        flex = {o.strip() if o.strip().startswith("Flex") else f"Flex{o.strip()}"
                for m in _FLEX_RE.findall(text) for o in m.split(",") if o.strip()}
        custom = {o.strip() for m in _CUSTOM_RE.findall(text) for o in m.split(",") if o.strip()}
        for d in details:
            for op in _NEEDS_RE.findall(d):
                (custom if "ERROR_NEEDS_CUSTOM_OPS" in d else flex).add(op if "CUSTOM" in d else f"Flex{op}")
        flex, custom = sorted(flex), sorted(custom)
        if flex or custom:
            raise _flex_refusal(flex, custom) from None
        if profile.precision == "int8" and not opts.float_fallback and "quantiz" in text.lower():
            ops = sorted(set(_NOT_QUANT_RE.findall(text)))
            raise ConversionFailed(
                "full-integer int8 conversion failed: "
                + (f"no int8 kernel for {', '.join(ops)}" if ops else text.strip().splitlines()[-1][:200]),
                hint="set options.float_fallback = true to keep such ops float (the report shows the int8 share)",
            ) from None
        raise ConversionFailed(f"TFLite conversion failed: {explain(text) or type(e).__name__}",
                               details=text) from None


def _tf_fp16(buf: bytes, converter, source: "Source", data: ConvertData, opts: Options, work: Path,
             notes: list[str]) -> tuple[bytes, list[str], dict[str, Any]]:
    """The converter's fp16 file when float16 holds every constant; else ai-edge-quantizer float casting on the
    converter's float32 file with the offending ops left float32 (the converter has no per-op switch)."""
    import importlib.util

    import tensorflow as tf

    conv = converter()
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if opts.allow_flex_ops else [])
    fp32 = conv.convert()
    path = work / "fp32.tflite"
    path.write_bytes(fp32)

    def make(keep: list[str]) -> bytes:
        if importlib.util.find_spec("ai_edge_quantizer") is None:
            from edgepack.backends.tflite.fp16 import constant_hazards, describe

            raise ConversionFailed("float16 cannot hold some constants of this model: "
                                   + "; ".join(describe(h) for h in constant_hazards(fp32)),
                                   hint="install ai-edge-quantizer (it keeps those ops float32), or use the fp32 "
                                        "target")
        notes.append("ai-edge-quantizer float casting on the converter's float32 file (mixed FP16)")
        return _aeq_fp16(path, keep)

    return _fp16_safe(fp32, make, _file_samples(fp32, source, data, []), notes, prebuilt=buf)


# ------------------------------------------------------------------------------------------ torch route

# (source, weights, their sha256, I/O specs, nhwc, litert-torch version) → fp32 .tflite bytes; most recent last
_FP32_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_FP32_CACHE_ENTRIES = 2  # the precisions of one build share one entry; a second model must not evict it at once


def _digest(path: str | None) -> str:
    if not path:
        return ""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        return sha256_tree(p)
    return ""


def _code_file(source: "Source") -> str | None:
    """The file whose code builds the module: the .pt2/TorchScript file, the factory's .py file, or the factory
    module's file (None when it cannot be found without importing it)."""
    if source.format != "factory":
        return source.path
    target = source.path.rpartition(":")[0]
    if target.endswith(".py"):
        return target
    import importlib.util

    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _fp32_key(source: "Source", nhwc: bool, version: str) -> tuple:
    specs = tuple((t.name, tuple(t.shape), t.dtype) for t in source.inputs), \
        tuple((t.name, tuple(t.shape), t.dtype) for t in source.outputs)
    return (source.format, source.path, _digest(_code_file(source)), source.weights or "", _digest(source.weights),
            specs, nhwc, version)


def _convert_torch(source: "Source", profile: "TargetProfile", data: ConvertData, opts: Options, work: Path,
                   nhwc: bool) -> tuple[bytes, list[str], dict[str, Any]]:
    import litert_torch

    if profile.dynamic_batch:
        raise UnsupportedConversion("dynamic batch is not supported for PyTorch → TFLite here",
                                    hint="set dynamic_batch = false in the target profile (batch 1)")
    if profile.precision == "int8" and opts.io_type == "uint8":
        raise UnsupportedConversion(
            "PyTorch → TFLite int8 (ai-edge-quantizer) gives float32 or int8 inputs/outputs, not uint8",
            hint="set options.io_type = \"float32\" (quantize/dequantize inside the model) or \"int8\" (the "
                 "manifest records scale/zero-point for the app), or convert a Keras/SavedModel source")
    in_idx = [i for i, t in enumerate(source.inputs) if nhwc and len(t.shape) >= 3]
    out_idx = [i for i, t in enumerate(source.outputs) if nhwc and len(t.shape) >= 3]
    notes = [f"litert-torch {litert_torch.__version__}"]
    key = _fp32_key(source, nhwc, litert_torch.__version__)
    fp32_bytes = _FP32_CACHE.get(key)
    if fp32_bytes is None:
        fp32_bytes = _litert_fp32(source, in_idx, out_idx)
        _FP32_CACHE[key] = fp32_bytes
        while len(_FP32_CACHE) > _FP32_CACHE_ENTRIES:
            _FP32_CACHE.popitem(last=False)
    else:
        _FP32_CACHE.move_to_end(key)
        notes.append("float conversion reused from an earlier target of this build (same model, weights, inputs "
                     "and layout)")
    if profile.precision == "fp32":
        return fp32_bytes, notes, {}
    fp32 = work / "fp32.tflite"
    fp32.write_bytes(fp32_bytes)
    return _quantize_tflite(fp32, source, profile, data, opts, in_idx, out_idx, notes)


def _litert_fp32(source: "Source", in_idx: list[int], out_idx: list[int]) -> bytes:
    """The float .tflite of a PyTorch source from litert-torch (channel-last I/O at ``in_idx``/``out_idx``)."""
    import tempfile

    import litert_torch
    import torch

    from edgepack.sources.torch import build_module, example_args, tensor_outputs

    module = tensor_outputs(build_module(source))
    args = example_args(source, batch=1)
    if in_idx or out_idx:
        module = litert_torch.to_channel_last_io(module, args=in_idx, outputs=out_idx)
        args = tuple(a.permute(0, *range(2, a.ndim), 1).contiguous() if i in in_idx else a for i, a in enumerate(args))
    with torch.no_grad():
        edge = litert_torch.convert(module.eval(), args)
    with tempfile.TemporaryDirectory(prefix="edgepack-litert-") as tmp:
        path = Path(tmp) / "fp32.tflite"
        edge.export(str(path))
        return path.read_bytes()


def _quantize_tflite(fp32: Path, source: "Source", profile: "TargetProfile", data: ConvertData, opts: Options,
                     in_idx: list[int], out_idx: list[int], notes: list[str]) -> tuple[bytes, list[str], dict]:
    """fp16 weights, static int8 or dynamic int8 with ai-edge-quantizer (for .tflite files from litert-torch)."""
    from ai_edge_quantizer import quantizer, recipe

    if profile.precision == "fp16":
        fp32_bytes = fp32.read_bytes()
        return _fp16_safe(fp32_bytes, lambda keep: _aeq_fp16(fp32, keep), _file_samples(fp32_bytes, source, data,
                                                                                          in_idx), notes)
    if profile.precision == "int8-dynamic":
        q = quantizer.Quantizer(str(fp32))
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        return bytes(q.quantize().quantized_model), notes, {}
    from edgepack.backends.tflite.search import AEQSpace

    ins, _ = signature_io(fp32.read_bytes())
    cal = data.calibration
    n = len(next(iter(cal.values())))
    samples = []
    for i in range(n):
        sample = {}
        for j, (t, io) in enumerate(zip(source.inputs, ins)):
            arr = np.asarray(cal[t.name][i:i + 1])
            sample[io["tflite_name"]] = to_file_layout(arr) if j in in_idx else arr
        samples.append(sample)
    names = [t.name for t in source.inputs]
    space = AEQSpace(fp32, samples, opts.io_type, opts.per_channel, work=fp32.parent / "search", in_names=names,
                     out_names=[t.name for t in source.outputs], in_t=in_idx, out_t=out_idx,
                     feed1={k: np.asarray(cal[k][:1]) for k in names})
    plain = space.recipes()[0]
    try:
        buf = space._build(plain, ())
    except Exception as e:  # noqa: BLE001 - quantizer errors are free text
        raise ConversionFailed(f"ai-edge-quantizer static int8 failed: {explain(str(e)) or type(e).__name__}",
                               details=str(e)) from None
    notes.append(f"ai-edge-quantizer static int8 (min/max), {n} calibration samples, "
                 + ("float32 I/O (quantize/dequantize inside the model)" if opts.io_type == "float32"
                    else "int8 I/O"))
    return _search(space, buf, data, opts, notes)


def _aeq_fp16(fp32: Path, keep: list[str]) -> bytes:
    """ai-edge-quantizer float16 weights (float casting), the ops whose scope is in ``keep`` left float32."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    from edgepack.backends.tflite.search import scope_regex

    q = quantizer.Quantizer(str(fp32))
    q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    for scope in keep:
        q.update_quantization_recipe(regex=scope_regex(scope), operation_name=TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)
    return bytes(q.quantize().quantized_model)


def _file_samples(fp32: bytes, source: "Source", data: ConvertData, in_idx: list[int], n: int = 8) -> list[dict]:
    """Up to ``n`` calibration samples in the file's layout, keyed by the signature's input names."""
    if not data.calibration or any(t.name not in data.calibration for t in source.inputs):
        return []
    ins, _ = signature_io(fp32)
    count = min(n, len(next(iter(data.calibration.values()))))
    out = []
    for i in range(count):
        sample = {}
        for j, (t, io) in enumerate(zip(source.inputs, ins)):
            arr = np.asarray(data.calibration[t.name][i:i + 1])
            arr = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
            sample[io["tflite_name"]] = to_file_layout(arr) if j in in_idx else arr
        out.append(sample)
    return out


def _fp16_safe(fp32: bytes, make, samples: list[dict], notes: list[str],
               prebuilt: bytes | None = None) -> tuple[bytes, list[str], dict[str, Any]]:
    """FP16 weights without NaN: ops reading constants float16 cannot hold stay float32 (``make(keep)`` builds the
    file), activations beyond float16's range are reported, and a file that answers non-finite where float32 does
    not fails with the ops named."""
    from edgepack.backends.tflite.fp16 import activation_hazards, constant_hazards, describe, nonfinite_outputs

    hazards = constant_hazards(fp32)
    keep = sorted({h["scope"] for h in hazards})
    buf = prebuilt if prebuilt is not None and not keep else make(keep)
    acts = activation_hazards(fp32, samples) if samples else []
    safety: dict[str, Any] = {"kept_float32": [describe(h) for h in hazards],
                              "activations_beyond_fp16": [f"{a['op']} '{a['tensor']}' (|x| up to {a['max_abs']:.4g})"
                                                          for a in acts],
                              "samples_scanned": len(samples)}
    if keep:
        notes.append(f"mixed FP16: {len(keep)} op(s) kept in float32 (constants beyond float16's range)")
    bad = nonfinite_outputs(fp32, buf, samples) if samples else []
    if bad:
        raise ConversionFailed(
            f"the fp16 model answers NaN/inf on {', '.join(bad)} where the float32 model is finite"
            + (f"; float16 cannot hold: {'; '.join(safety['kept_float32'])}" if hazards else "")
            + (f"; activations beyond float16's range: {'; '.join(safety['activations_beyond_fp16'])}"
               if acts else ""),
            hint="use the fp32 target, or rescale the model so its constants and activations stay within ±65504")
    return buf, notes, {"fp16_safety": safety}


def _search(space, plain_buf: bytes, data: ConvertData, opts: Options,
            notes: list[str]) -> tuple[bytes, list[str], dict[str, Any]]:
    """The INT8 accuracy search on the tuning split (plain recipe first, built already as ``plain_buf``)."""
    from edgepack import quantsearch

    space.prebuilt[(space.recipes()[0].name, ())] = plain_buf
    tuning = data.search_tuning()
    if tuning is not None:  # the tuning feeds come in the reference layout; the space's loader moves them
        tuning.feeds = {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v
                        for k, v in tuning.feeds.items()}
    result = quantsearch.search(space, tuning, opts.accuracy_search)
    buf = result.candidate.buf
    details: dict[str, Any] = {"accuracy_search": result.to_dict(), "float_layers": list(result.float_layers)}
    if result.searched or result.float_layers:
        notes.append(f"accuracy search: recipe '{result.recipe.name}'"
                     + (f" with {len(result.float_layers)} layer(s) kept in float" if result.float_layers else "")
                     + f" ({result.reason})")
    space.release(result.candidate)
    return buf, notes, details


def _ensure_route(kind: str, precision: str) -> None:
    import importlib.util

    from edgepack.errors import MissingDependency

    need = ("tensorflow",) if kind == "tf" else ("litert_torch",) + (() if precision == "fp32" else ("ai_edge_quantizer",))
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"{kind} → TFLite ({precision}) needs {', '.join(missing)}",
                                hint="pip install -c constraints.txt -e '.[tflite]'")


# ------------------------------------------------------------------------------------------ convert


def convert(source: "Source", profile: "TargetProfile", options: Options, data: ConvertData,
            out_dir: Path) -> Artifact:
    opts = options
    out_dir = Path(out_dir)
    if source.kind not in ("tf", "torch"):  # Backend.convert refuses onnx with its hint before coming here
        raise UnsupportedConversion(f"backend 'tflite' cannot take {source.kind} sources")
    if opts.io_type != "float32" and profile.precision != "int8":
        raise ConfigError(f"{profile.name}: options.io_type = '{opts.io_type}' applies to precision int8 only",
                          hint="drop io_type or set precision = \"int8\"")
    if profile.precision == "int8" and not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    if bool(opts.input_mean) != bool(opts.input_std):
        raise ConfigError(f"{profile.name}: options.input_mean and options.input_std go together")
    if source.kind == "tf" and profile.layout == "nchw":
        raise UnsupportedConversion("Keras/TensorFlow models are channel-last (NHWC); TFLite keeps their layout",
                                    hint="drop layout = \"nchw\" from the target profile")
    nhwc = source.kind == "tf" or profile.layout == "nhwc"
    _ensure_route(source.kind, profile.precision)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if source.kind == "tf":
        buf, notes, searched = _convert_tf(source, profile, data, opts, work)
    else:
        buf, notes, searched = _convert_torch(source, profile, data, opts, work, nhwc)
    facts = analyze(buf)
    if (facts["flex_ops"] and not opts.allow_flex_ops) or (facts["custom_ops"] and not opts.allow_custom_ops):
        raise _flex_refusal([] if opts.allow_flex_ops else facts["flex_ops"],
                            [] if opts.allow_custom_ops else facts["custom_ops"])
    warnings: list[str] = []
    details: dict[str, Any] = {"convert_s": round(time.perf_counter() - t0, 3), "ops": facts["ops"],
                               "weight_bytes": facts["weight_bytes"]}
    details.update(searched)
    for what, items in (("kept in float32 (float16 cannot hold their constants)", "kept_float32"),
                        ("activations beyond float16's range (an fp16 GPU delegate would overflow there)",
                         "activations_beyond_fp16")):
        if searched.get("fp16_safety", {}).get(items):
            warnings.append(f"FP16: {what}: " + "; ".join(searched["fp16_safety"][items]))
    details.update(_precision_check(profile.precision, opts, facts, warnings, len(searched.get("float_layers", ()))))
    ins, outs = signature_io(buf)
    if len(ins) != len(source.inputs) or len(outs) != len(source.outputs):
        raise ConversionFailed(f"the converted model has {len(ins)} inputs/{len(outs)} outputs; the source has "
                               f"{len(source.inputs)}/{len(source.outputs)}")
    io_in, io_out = _match(source.inputs, ins), _match(source.outputs, outs)
    if profile.precision == "int8":  # the runtime spec says what the file really takes and gives
        got = sorted({io["dtype"] for io in [*io_in.values(), *io_out.values()]
                      if io["dtype"] in ("float32", "int8", "uint8")})
        if got != [opts.io_type]:
            raise ConversionFailed(f"options.io_type = '{opts.io_type}' was asked for but the converted model's "
                                   f"inputs/outputs are {', '.join(got) or 'of other types'}")
        details["io_type"] = opts.io_type + (" (quantize/dequantize inside the model)" if opts.io_type == "float32"
                                             else " (the app (de)quantizes with each tensor's scale/zero-point)")
    transposed = source.kind == "torch" and nhwc
    quant: dict[str, dict[str, Any]] = {}
    for specs, matched in ((source.inputs, io_in), (source.outputs, io_out)):
        for t in specs:
            io = matched[t.name]
            io["transpose"] = bool(transposed and len(t.shape) >= 3)
            quant[t.name] = {"tflite_name": io["tflite_name"], "dtype": io["dtype"], "scale": io["scale"],
                             "zero_point": io["zero_point"], "layout": "nhwc" if io["transpose"] else None}
    keys = ("tflite_name", "dtype", "scale", "zero_point", "transpose")
    runtime = TFLiteRuntime(signature=SIGNATURE_KEY,
                            inputs=tuple({k: io_in[t.name][k] for k in keys} for t in source.inputs),
                            outputs=tuple({k: io_out[t.name][k] for k in keys} for t in source.outputs),
                            flex_ops=tuple(facts["flex_ops"]))
    details["model_name"] = opts.model_name or source.name
    if opts.input_mean:
        details["input_normalization"] = {"mean": list(opts.input_mean), "std": list(opts.input_std),
                                          "applies_to": "raw 0-255 pixel values: (x - mean) / std"}
    if data.calibration:
        warnings += calibration_warnings(data.calibration, data.holdout_ranges, [t.name for t in source.inputs],
                                         io_in, input_mean=opts.input_mean, input_std=opts.input_std)
    app = app_metadata(profile, details["model_name"], opts.input_mean, opts.input_std, data.class_names)
    if app:  # the profile gave metadata, normalization or class names: embed them for apps
        try:
            buf, details["metadata"], more = embed(buf, app, nhwc=nhwc, signature_key=SIGNATURE_KEY)
            warnings += more
        except ValueError as e:
            warnings.append(f"METADATA: not written into {PRIMARY}: {e}")
    (out_dir / PRIMARY).write_bytes(buf)
    shutil.rmtree(work, ignore_errors=True)

    def spec(t: TensorSpec, io: dict) -> TensorSpec:
        return TensorSpec(t.name, tuple(io["shape"]), io["dtype"])

    return Artifact(
        backend="tflite", precision=profile.precision, primary=PRIMARY, files=[PRIMARY],
        inputs=[spec(t, io_in[t.name]) for t in source.inputs],
        outputs=[spec(t, io_out[t.name]) for t in source.outputs],
        layout="nhwc" if nhwc else "nchw", quantization=quant, runtime=runtime.model_dump(mode="json"),
        details=details, notes=notes, warnings=warnings,
    )


def _match(specs, ios: list[dict]) -> dict[str, dict]:
    """Source tensor name → signature entry: by name where they agree, else by position."""
    by_name = {io["tflite_name"]: io for io in ios}
    if all(t.name in by_name for t in specs):
        return {t.name: dict(by_name[t.name]) for t in specs}
    return {t.name: dict(io) for t, io in zip(specs, ios)}


def _precision_check(p: str, opts: Options, facts: dict, warnings: list[str], kept_float: int = 0) -> dict[str, Any]:
    """Measure what the converter really did; fail a build that came out float where int8 was asked for.
    ``kept_float``: compute ops the accuracy search deliberately kept in float (not counted against
    ``min_quantized_share``; the report lists them)."""
    if p == "fp16":
        if facts["weight_bytes"].get("FLOAT32", 0) and not facts["weight_bytes"].get("FLOAT16", 0):
            raise ConversionFailed("fp16 was asked for but no weight came out float16")
        return {"fp16_weight_share": round(facts["fp16_weight_share"], 4)}
    if p not in ("int8", "int8-dynamic"):
        return {}
    total = facts["compute_ops"]
    if total:
        done = facts["int8_compute_ops"] if p == "int8" else facts["int8_weight_compute_ops"]
    else:
        total, done = facts["other_ops"], facts["int8_other_ops"] if p == "int8" else 0
    share = done / total if total else 0.0
    still_float = facts["float_compute_ops"] if p == "int8" else facts["float_weight_compute_ops"]
    out = {"quantized_ops": done, "quantizable_ops": total, "quantized_share": round(share, 4),
           "int8_weight_share": round(facts["int8_weight_share"], 4), "float_ops": still_float}
    what = "compute in int8" if p == "int8" else "hold int8 weights"
    judged = done / (total - kept_float) if total > kept_float else share
    if kept_float:
        out["kept_float_by_search"] = kept_float
    if judged < opts.min_quantized_share or done == 0:
        left = ", ".join(f"{k}×{v}" for k, v in still_float.items()) or "all ops"
        raise ConversionFailed(
            f"{p} was asked for but the model came out float: {done} of {total} compute ops {what} "
            f"({judged:.0%} < {opts.min_quantized_share:.0%}"
            + (f" not counting {kept_float} kept in float by the accuracy search" if kept_float else "")
            + f"); float: {left}; "
            f"{facts['int8_weight_share']:.0%} of weight bytes are int8",
            hint="check options.float_fallback and the calibration data; lower options.min_quantized_share only "
                 "if a partly float model is what you want",
        )
    if share < 1.0:
        warnings.append(f"{p}: {done} of {total} compute ops {what}; still float: "
                        + ", ".join(f"{k}×{v}" for k, v in still_float.items()))
    return out

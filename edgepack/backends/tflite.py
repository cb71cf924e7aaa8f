"""TensorFlow Lite / LiteRT: one ``model.tflite`` for Android (and anything else that runs LiteRT).

Routes (each runs inside the conversion worker, which imports only its own framework):

* tf sources (Keras ``.keras``/``.h5``, SavedModel): ``tf.lite.TFLiteConverter`` from a concrete function with the
  source's own tensor names. fp16 = float16 weights; int8 = full-integer, the calibration split as representative
  dataset, per-channel weights, int8/uint8/float32 I/O; int8-dynamic = dynamic-range (int8 weights, float I/O).
* torch sources: ``litert-torch`` to a float ``.tflite`` (NHWC I/O when the profile says ``layout = "nhwc"``), then
  ``ai-edge-quantizer`` for fp16 weights, static int8 (calibrated, per-channel weights) or dynamic int8.
* onnx sources: refused; there is no dependable ONNX → TFLite route here (onnx2tf would downgrade numpy/TF).

Select-TF ("Flex") and custom ops are refused unless the profile allows them. After an int8 build the share of
compute ops that really run in int8 is measured; a build that came out float fails. Calibration data that looks
scaled differently from what the model expects is reported as warnings. Profile metadata, input normalization and
class names go into the file as TFLite Support metadata (``tflite_metadata``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgepack.backends import tflite_metadata
from edgepack.backends.base import Artifact, Backend, Runner
from edgepack.backends.tflite_model import (  # noqa: F401 - re-exported for runners and tests
    SIGNATURE_KEY,
    analyze,
    calibration_warnings,
    dequantize,
    from_file_layout,
    quantize,
    signature_io,
    to_file_layout,
)
from edgepack.errors import ConfigError, ConversionFailed, InputError, RuntimeUnavailable, UnsupportedConversion
from edgepack.signature import TensorSpec

PRIMARY = "model.tflite"


class TFLiteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    io_type: Literal["float32", "int8", "uint8"] = Field(
        "float32", description="int8 precision only: dtype of the model's inputs/outputs (int types need (de)quantizing "
                               "in the app with the scale/zero-point recorded in the manifest)")
    per_channel: bool = Field(True, description="int8: per-channel weight scales (per-tensor when false)")
    float_fallback: bool = Field(False, description="int8 (tf sources): ops without an int8 kernel stay float instead "
                                                    "of failing the conversion")
    min_quantized_share: float = Field(0.5, ge=0.0, le=1.0, description="int8: least share of compute ops that must "
                                       "run in int8 (or hold int8 weights for int8-dynamic); below it the build fails")
    allow_flex_ops: bool = Field(False, description="allow Select-TF (Flex) ops; the app then needs the Flex delegate")
    allow_custom_ops: bool = Field(False, description="allow custom ops; the app must register their kernels")
    model_name: str = Field("", description="model name recorded in the manifest (default: the source's name)")
    input_mean: tuple[float, ...] = Field((), description="normalization the model expects on raw 0-255 inputs: "
                                          "(x - mean) / std (recorded for apps; calibration data is checked against it)")
    input_std: tuple[float, ...] = ()


# ------------------------------------------------------------------------------------------ routes


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


def _convert_tf(source, target, calib, opts: TFLiteOptions, work: Path) -> tuple[bytes, list[str]]:
    import tensorflow as tf

    from edgepack.sources import keras as keras_source

    notes = [f"tensorflow {tf.__version__} TFLiteConverter"]
    staged = keras_source.stage_savedmodel(source, work / "savedmodel", batch=None if target.dynamic_batch else 1)

    def converter():
        conv = tf.lite.TFLiteConverter.from_saved_model(str(staged), signature_keys=[SIGNATURE_KEY])
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if target.precision == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([tf.lite.OpsSet.TFLITE_BUILTINS] if opts.float_fallback else [])
        if opts.allow_flex_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        conv.target_spec.supported_ops = ops
        conv.allow_custom_ops = opts.allow_custom_ops
        return conv

    conv = converter()
    if target.precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif target.precision == "int8-dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif target.precision == "int8":
        names = [t.name for t in source.inputs]
        cal = calib.calibration
        n = len(next(iter(cal.values())))

        def representative():
            for i in range(n):
                yield [np.asarray(cal[k][i:i + 1], dtype=np.float32 if cal[k].dtype.kind == "f" else cal[k].dtype)
                       for k in names]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        io = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[opts.io_type]
        conv.inference_input_type = io
        conv.inference_output_type = io
        conv._experimental_disable_per_channel = not opts.per_channel  # noqa: SLF001 - the converter's only switch
        notes.append(f"representative dataset: {n} calibration samples")
    try:
        return conv.convert(), notes
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
        if target.precision == "int8" and not opts.float_fallback and "quantiz" in text.lower():
            ops = sorted(set(_NOT_QUANT_RE.findall(text)))
            raise ConversionFailed(
                "full-integer int8 conversion failed: "
                + (f"no int8 kernel for {', '.join(ops)}" if ops else text.strip().splitlines()[-1][:200]),
                hint="set options.float_fallback = true to keep such ops float (the report shows the int8 share)",
            ) from None
        raise ConversionFailed(f"TFLite conversion failed: {text.strip().splitlines()[-1][:300] if text.strip() else type(e).__name__}") from None


def _convert_torch(source, target, calib, opts: TFLiteOptions, work: Path, nhwc: bool) -> tuple[bytes, list[str]]:
    import litert_torch
    import torch

    from edgepack.sources.torch import build_module, example_args

    if target.dynamic_batch:
        raise UnsupportedConversion("dynamic batch is not supported for PyTorch → TFLite here",
                                    hint="set dynamic_batch = false in the target profile (batch 1)")
    if target.precision == "int8" and opts.io_type != "int8":
        raise UnsupportedConversion(
            f"PyTorch → TFLite int8 gives int8 inputs/outputs; io_type '{opts.io_type}' is available for tf sources",
            hint="set options.io_type = \"int8\" (the manifest records scale/zero-point for the app), or convert a "
                 "Keras/SavedModel source")
    module = build_module(source)
    args = example_args(source, batch=1)
    in_idx = [i for i, t in enumerate(source.inputs) if nhwc and len(t.shape) >= 3]
    out_idx = [i for i, t in enumerate(source.outputs) if nhwc and len(t.shape) >= 3]
    if in_idx or out_idx:
        module = litert_torch.to_channel_last_io(module, args=in_idx, outputs=out_idx)
        args = tuple(a.permute(0, *range(2, a.ndim), 1).contiguous() if i in in_idx else a for i, a in enumerate(args))
    with torch.no_grad():
        edge = litert_torch.convert(module.eval(), args)
    fp32 = work / "fp32.tflite"
    edge.export(str(fp32))
    notes = [f"litert-torch {litert_torch.__version__}"]
    if target.precision == "fp32":
        return fp32.read_bytes(), notes
    return _quantize_tflite(fp32, source, target, calib, opts, in_idx, notes)


def _quantize_tflite(fp32: Path, source, target, calib, opts: TFLiteOptions, in_idx: list[int],
                     notes: list[str]) -> tuple[bytes, list[str]]:
    """fp16 weights, static int8 or dynamic int8 with ai-edge-quantizer (for .tflite files from litert-torch)."""
    from ai_edge_quantizer import quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

    q = quantizer.Quantizer(str(fp32))
    if target.precision == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
        result = q.quantize()
    elif target.precision == "int8-dynamic":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = q.quantize()
    else:
        q.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                            weight_num_bits=8, weight_granularity=QuantGranularity.CHANNELWISE if opts.per_channel
                            else QuantGranularity.TENSORWISE)
        ins, _ = signature_io(fp32.read_bytes())
        cal = calib.calibration
        n = len(next(iter(cal.values())))
        samples = []
        for i in range(n):
            sample = {}
            for j, (t, io) in enumerate(zip(source.inputs, ins)):
                arr = np.asarray(cal[t.name][i:i + 1])
                sample[io["tflite_name"]] = to_file_layout(arr) if j in in_idx else arr
            samples.append(sample)
        result = q.quantize(q.calibrate({SIGNATURE_KEY: samples}))
        notes.append(f"ai-edge-quantizer static int8 (min/max), {n} calibration samples")
    return bytes(result.quantized_model), notes


def _ensure_route(kind: str, precision: str) -> None:
    import importlib.util

    from edgepack.errors import MissingDependency

    need = ("tensorflow",) if kind == "tf" else ("litert_torch",) + (() if precision == "fp32" else ("ai_edge_quantizer",))
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"{kind} → TFLite ({precision}) needs {', '.join(missing)}",
                                hint="pip install -c constraints.txt -e '.[tflite]'")


# ------------------------------------------------------------------------------------------ backend


class TFLiteBackend(Backend):
    name = "tflite"
    requires = ("ai_edge_litert",)
    extra = "tflite"
    accepts = frozenset({"tf", "torch"})
    precisions = frozenset({"fp32", "fp16", "int8", "int8-dynamic"})
    Options = TFLiteOptions
    description = "TensorFlow Lite / LiteRT (.tflite) for Android apps; checked on the host with ai_edge_litert"
    refusals = {"onnx": "no dependable ONNX → TFLite route here (onnx2tf would downgrade numpy/onnx/TensorFlow): "
                        "give the Keras .keras / SavedModel source or the PyTorch model (module:factory + --weights, "
                        ".pt2) instead; ONNX files go to the ort_mobile/openvino targets"}

    def needs_calibration(self, target) -> bool:
        return target.precision == "int8"

    def convert(self, source, target, calib, out_dir: Path) -> Artifact:
        opts: TFLiteOptions = self.options(target)
        out_dir = Path(out_dir)
        if source.kind == "onnx":
            raise UnsupportedConversion("backend 'tflite' cannot take onnx sources", hint=self.refusals["onnx"])
        if opts.io_type != "float32" and target.precision != "int8":
            raise ConfigError(f"{target.name}: options.io_type = '{opts.io_type}' applies to precision int8 only",
                              hint="drop io_type or set precision = \"int8\"")
        if target.precision == "int8" and calib is None:
            raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
        if bool(opts.input_mean) != bool(opts.input_std):
            raise ConfigError(f"{target.name}: options.input_mean and options.input_std go together")
        if source.kind == "tf" and target.layout == "nchw":
            raise UnsupportedConversion("Keras/TensorFlow models are channel-last (NHWC); TFLite keeps their layout",
                                        hint="drop layout = \"nchw\" from the target profile")
        nhwc = source.kind == "tf" or target.layout == "nhwc"
        _ensure_route(source.kind, target.precision)
        work = out_dir / ".work"
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if source.kind == "tf":
            buf, notes = _convert_tf(source, target, calib, opts, work)
        else:
            buf, notes = _convert_torch(source, target, calib, opts, work, nhwc)
        facts = analyze(buf)
        if (facts["flex_ops"] and not opts.allow_flex_ops) or (facts["custom_ops"] and not opts.allow_custom_ops):
            raise _flex_refusal([] if opts.allow_flex_ops else facts["flex_ops"],
                                [] if opts.allow_custom_ops else facts["custom_ops"])
        warnings: list[str] = []
        info: dict[str, Any] = {"convert_s": round(time.perf_counter() - t0, 3), "ops": facts["ops"],
                                "weight_bytes": facts["weight_bytes"], "notes": notes}
        info.update(self._precision_check(target, opts, facts, warnings))
        ins, outs = signature_io(buf)
        if len(ins) != len(source.inputs) or len(outs) != len(source.outputs):
            raise ConversionFailed(f"the converted model has {len(ins)} inputs/{len(outs)} outputs; the source has "
                                   f"{len(source.inputs)}/{len(source.outputs)}")
        io_in, io_out = self._match(source.inputs, ins), self._match(source.outputs, outs)
        transposed = source.kind == "torch" and nhwc
        records = []
        quant: dict[str, dict[str, Any]] = {}
        for kind, specs, matched in (("inputs", source.inputs, io_in), ("outputs", source.outputs, io_out)):
            for t in specs:
                io = matched[t.name]
                io["transpose"] = bool(transposed and len(t.shape) >= 3)
                records.append((kind, t, io))
                quant[t.name] = {"tflite_name": io["tflite_name"], "dtype": io["dtype"], "scale": io["scale"],
                                 "zero_point": io["zero_point"], "layout": "nhwc" if io["transpose"] else None}
        info["io"] = {"signature": SIGNATURE_KEY,
                      "inputs": [io for k, _, io in records if k == "inputs"],
                      "outputs": [io for k, _, io in records if k == "outputs"]}
        info["model_name"] = opts.model_name or source.name
        if opts.input_mean:
            info["input_normalization"] = {"mean": list(opts.input_mean), "std": list(opts.input_std),
                                           "applies_to": "raw 0-255 pixel values: (x - mean) / std"}
        if calib is not None:
            warnings += calibration_warnings(calib, source, opts, io_in)
        app = tflite_metadata.app_metadata(target, info["model_name"], opts.input_mean, opts.input_std,
                                           getattr(calib, "class_names", None))
        if app:  # the profile gave metadata, normalization or class names: embed them for apps
            try:
                buf, info["metadata"], more = tflite_metadata.embed(buf, app, nhwc=nhwc, signature_key=SIGNATURE_KEY)
                warnings += more
            except ValueError as e:
                warnings.append(f"METADATA: not written into {PRIMARY}: {e}")
        (out_dir / PRIMARY).write_bytes(buf)
        import shutil

        shutil.rmtree(work, ignore_errors=True)

        def spec(t: TensorSpec, io: dict) -> TensorSpec:
            return TensorSpec(t.name, tuple(io["shape"]), io["dtype"])

        return Artifact(
            backend=self.name, precision=target.precision, primary=PRIMARY, files=[PRIMARY],
            inputs=[spec(t, io_in[t.name]) for t in source.inputs],
            outputs=[spec(t, io_out[t.name]) for t in source.outputs],
            layout="nhwc" if nhwc else "nchw", quantization=quant, info=info, warnings=warnings,
        )

    @staticmethod
    def _match(specs, ios: list[dict]) -> dict[str, dict]:
        """Source tensor name → signature entry: by name where they agree, else by position."""
        by_name = {io["tflite_name"]: io for io in ios}
        if all(t.name in by_name for t in specs):
            return {t.name: dict(by_name[t.name]) for t in specs}
        return {t.name: dict(io) for t, io in zip(specs, ios)}

    @staticmethod
    def _precision_check(target, opts: TFLiteOptions, facts: dict, warnings: list[str]) -> dict[str, Any]:
        """Measure what the converter really did; fail a build that came out float where int8 was asked for."""
        p = target.precision
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
        if share < opts.min_quantized_share or done == 0:
            left = ", ".join(f"{k}×{v}" for k, v in still_float.items()) or "all ops"
            raise ConversionFailed(
                f"{p} was asked for but the model came out float: {done} of {total} compute ops {what} "
                f"({share:.0%} < {opts.min_quantized_share:.0%}); float: {left}; "
                f"{facts['int8_weight_share']:.0%} of weight bytes are int8",
                hint="check options.float_fallback and the calibration data; lower options.min_quantized_share only "
                     "if a partly float model is what you want",
            )
        if share < 1.0:
            warnings.append(f"{p}: {done} of {total} compute ops {what}; still float: "
                            + ", ".join(f"{k}×{v}" for k, v in still_float.items()))
        return out

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        return TFLiteRunner(artifact, bundle_dir, threads)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter

            return Interpreter, "tflite_runtime"
        except ImportError:
            raise RuntimeUnavailable("no LiteRT runtime here (pip install ai-edge-litert)") from None


class TFLiteRunner(Runner):
    """LiteRT interpreter (XNNPACK on) behind the signature runner; (de)quantizes and transposes at its edges."""

    def activate_impl(self) -> None:
        Interpreter, runtime = _interpreter_class()
        io = self.artifact.info["io"]
        try:
            self.interp = Interpreter(model_path=str(self.bundle_dir / self.artifact.primary), num_threads=self.threads)
            self.sig = self.interp.get_signature_runner(io.get("signature", SIGNATURE_KEY))
        except (RuntimeError, ValueError) as e:
            if self.artifact.info.get("ops") and any(o.startswith("Flex") for o in self.artifact.info["ops"]):
                raise RuntimeUnavailable(f"this LiteRT build has no Flex delegate for the model's Select-TF ops ({e})") from None
            raise
        self.inputs = {t.name: rec for t, rec in zip(self.artifact.inputs, io["inputs"])}
        self.outputs = {t.name: rec for t, rec in zip(self.artifact.outputs, io["outputs"])}
        delegated = sum(1 for d in self.interp._get_ops_details() if d.get("op_name") == "DELEGATE")  # noqa: SLF001
        from importlib import metadata

        try:
            version = metadata.version("ai-edge-litert" if runtime == "ai_edge_litert" else "tflite-runtime")
        except metadata.PackageNotFoundError:
            version = "?"
        self.facts = {"runtime": f"{runtime} {version}", "delegate": "XNNPACK" if delegated else "none",
                      "delegated_partitions": delegated, "threads": self.threads}

    def infer_impl(self, feed):
        args = {}
        for name, rec in self.inputs.items():
            arr = np.asarray(feed[name])
            if rec["transpose"]:
                arr = to_file_layout(arr)
            if rec["dtype"] in ("int8", "uint8", "int16") and rec["scale"]:
                arr = quantize(arr, rec["dtype"], rec["scale"], rec["zero_point"])
            else:
                arr = arr.astype(rec["dtype"], copy=False)
            args[rec["tflite_name"]] = arr
        got = self.sig(**args)
        out = {}
        for name, rec in self.outputs.items():
            arr = np.asarray(got[rec["tflite_name"]])
            if rec["dtype"] in ("int8", "uint8", "int16") and rec["scale"]:
                arr = dequantize(arr, rec["scale"], rec["zero_point"])
            out[name] = from_file_layout(arr) if rec["transpose"] else arr
        return out

    def deactivate_impl(self) -> None:
        self.sig = None
        self.interp = None

"""The tflite backend's INT8 search spaces for :func:`edgepack.quantsearch.search` (worker side).

* :class:`AEQSpace` (PyTorch sources: litert-torch's float ``.tflite`` → ai-edge-quantizer static quantization).
  Recipes: the profile's plain a8w8 (min/max), the other weight granularity, a16w8 (int16 activations, int8
  weights: ``activation_num_bits=16``). Layers go back to float with per-op recipes (``NO_QUANTIZE`` on a regex of
  the op's scope, the op's output tensor names). The calibration statistics (min/max per tensor) are collected once
  and reused by every candidate.
* :class:`TFSpace` (Keras/SavedModel sources: ``tf.lite.TFLiteConverter``). Recipes: plain int8, the other weight
  granularity, 16x8 (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``). Layers go back to float with
  ``tf.lite.experimental.QuantizationDebugger`` (``denylisted_nodes``); its layer statistics (RMSE ÷ scale of each
  layer's quantized output against its float output) are the toolkit's own sensitivity ranking.

Candidates are ``.tflite`` files in a work folder; they run through the bundle's own loader (``device.py``), with
the tuning feeds moved to the file layout where the reference model is channel-first (``to_file_layout``), so what
the search judges is what the bundle will run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.tflite.device import load, to_file_layout
from edgepack.backends.tflite.flatbuffer import COMPUTE_OPS, analyze, signature_io
from edgepack.quantsearch import Recipe, Space

Feeds = dict[str, np.ndarray]


@dataclass
class Candidate:
    path: Path
    buf: bytes
    float_layers: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    _infer: Callable | None = None


def _runtime(buf: bytes, in_names: list[str], out_names: list[str], in_t: list[int], out_t: list[int]):
    ins, outs = signature_io(buf)

    def rec(io: dict, transpose: bool) -> dict:
        return {"tflite_name": io["tflite_name"], "dtype": io["dtype"], "scale": io["scale"],
                "zero_point": io["zero_point"], "transpose": transpose}

    def match(names: list[str], ios: list[dict]) -> list[dict]:  # as convert._match: by name, else by position
        by_name = {io["tflite_name"]: io for io in ios}
        return [by_name[n] for n in names] if all(n in by_name for n in names) else list(ios)

    artifact = {"inputs": [{"name": n} for n in in_names], "outputs": [{"name": n} for n in out_names]}
    runtime = {"signature": "serving_default",
               "inputs": [rec(io, i in in_t) for i, io in enumerate(match(in_names, ins))],
               "outputs": [rec(io, i in out_t) for i, io in enumerate(match(out_names, outs))]}
    return artifact, runtime


class _TFLiteSpace(Space):
    """What both routes share: candidates on disk, run by the bundle's loader, sizes, timers, int8 share."""

    def __init__(self, work: Path, fp32: bytes, in_names: list[str], out_names: list[str], in_t: list[int],
                 out_t: list[int], feed1: Feeds):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.fp32 = fp32
        self.in_names, self.out_names, self.in_t, self.out_t = in_names, out_names, in_t, out_t
        self.feed1 = feed1  # one reference-layout sample for the timers
        self.prebuilt: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._n = 0
        self._fp32_infer: Callable | None = None

    def _save(self, buf: bytes, floats: tuple[str, ...]) -> Candidate:
        self._n += 1
        path = self.work / f"candidate-{self._n}.tflite"
        path.write_bytes(buf)
        return Candidate(path, buf, floats)

    def _infer(self, path: Path, buf: bytes) -> Callable:
        artifact, runtime = _runtime(buf, self.in_names, self.out_names, self.in_t, self.out_t)
        artifact["primary"] = path.name
        infer, _ = load(path.parent, artifact, runtime, 1)
        return infer

    def build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> Candidate:
        key = (recipe.name, tuple(float_layers))
        if key in self.prebuilt:
            return self._save(self.prebuilt.pop(key), tuple(float_layers))
        return self._save(self._build(recipe, tuple(float_layers)), tuple(float_layers))

    def _build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> bytes:
        raise NotImplementedError

    def run(self, candidate: Candidate, feeds: Feeds) -> Feeds:
        if candidate._infer is None:
            candidate._infer = self._infer(candidate.path, candidate.buf)
        n = len(next(iter(feeds.values())))
        outs: dict[str, list[np.ndarray]] = {k: [] for k in self.out_names}
        for i in range(n):
            got = candidate._infer({k: v[i:i + 1] for k, v in feeds.items()})
            for k in self.out_names:
                outs[k].append(np.asarray(got[k]))
        return {k: np.concatenate(v) for k, v in outs.items()}

    def layers(self, candidate: Candidate) -> list[str]:
        """Quantized compute ops (by their scope: output tensor names), graph order."""
        return [name for name, op, quantized in op_scopes(candidate.buf) if quantized and op in COMPUTE_OPS]

    def size(self, candidate: Candidate) -> int:
        return len(candidate.buf)

    def timer(self, candidate: Candidate) -> Callable[[], Any]:
        if candidate._infer is None:
            candidate._infer = self._infer(candidate.path, candidate.buf)
        infer, feed = candidate._infer, self.feed1
        return lambda: infer(feed)

    def float_timer(self) -> Callable[[], Any]:
        if self._fp32_infer is None:
            path = self.work / "fp32.tflite"
            path.write_bytes(self.fp32)
            self._fp32_infer = self._infer(path, self.fp32)
        infer, feed = self._fp32_infer, self.feed1
        return lambda: infer(feed)

    def int8_share(self, candidate: Candidate) -> float | None:
        facts = analyze(candidate.buf)
        return facts["int8_compute_ops"] / facts["compute_ops"] if facts["compute_ops"] else None

    def release(self, candidate: Candidate) -> None:
        candidate._infer = None
        candidate.path.unlink(missing_ok=True)


def op_scopes(buf: bytes) -> list[tuple[str, str, bool]]:
    """(scope, op name, runs on integer activations) of every op of the main subgraph; the scope is the op's output
    tensor names joined with ';' (as ai-edge-quantizer and the QuantizationDebugger name ops)."""
    from edgepack.backends.tflite.flatbuffer import INT_TYPES, enum_names, op_codes, schema

    fb = schema()
    model = fb.Model.GetRootAs(buf, 0)
    op_names, type_names = enum_names(fb.BuiltinOperator), enum_names(fb.TensorType)
    codes = op_codes(fb, model, op_names)
    sg = model.Subgraphs(0)
    out = []
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        names = [sg.Tensors(op.Outputs(i)).Name().decode() for i in range(op.OutputsLength()) if op.Outputs(i) >= 0]
        act = op.Inputs(0) if op.InputsLength() else -1
        quantized = act >= 0 and type_names.get(sg.Tensors(act).Type()) in INT_TYPES
        out.append((";".join(names), codes[op.OpcodeIndex()], quantized))
    return out


def scope_regex(scope: str) -> str:
    """A regex that matches exactly this op's scope (ai-edge-quantizer adds a trailing ';' to scopes)."""
    return "^" + re.escape(scope) + ";$"


# ------------------------------------------------------------------------------------------ PyTorch: ai-edge-quantizer


class AEQSpace(_TFLiteSpace):
    """ai-edge-quantizer static quantization of a float ``.tflite``."""

    def __init__(self, fp32_path: Path, samples: list[dict], io_type: str, per_channel: bool, **kw):
        super().__init__(fp32=Path(fp32_path).read_bytes(), **kw)
        self.fp32_path = Path(fp32_path)
        self.samples = samples
        self.io_type = io_type
        self.per_channel = per_channel
        self._qsv: Any = None

    def recipes(self) -> list[Recipe]:
        plain_g = "per-channel" if self.per_channel else "per-tensor"
        other_g = "per-tensor" if self.per_channel else "per-channel"
        return [
            Recipe(f"a8w8-{plain_g}", {"activation_bits": 8, "weight_bits": 8, "per_channel": self.per_channel,
                                       "algorithm": "min_max_uniform_quantize", "io": self.io_type},
                   "the profile's plain recipe: int8 activations (min/max), int8 weights"),
            Recipe(f"a8w8-{other_g}", {"activation_bits": 8, "weight_bits": 8, "per_channel": not self.per_channel,
                                       "algorithm": "min_max_uniform_quantize", "io": self.io_type},
                   f"int8 with {other_g} weight scales"),
            Recipe("a16w8", {"activation_bits": 16, "weight_bits": 8, "per_channel": True,
                             "algorithm": "min_max_uniform_quantize", "io": self.io_type},
                   "16x8: int16 activations, int8 weights (ai-edge-quantizer activation_num_bits=16)"),
        ]

    def quantizer(self, recipe: Recipe, float_layers: tuple[str, ...]):
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

        s = recipe.settings
        q = quantizer.Quantizer(str(self.fp32_path))
        q.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                            activation_num_bits=s["activation_bits"], weight_num_bits=s["weight_bits"],
                            weight_granularity=QuantGranularity.CHANNELWISE if s["per_channel"]
                            else QuantGranularity.TENSORWISE)
        if s["io"] == "float32":  # quantize/dequantize inside the model: the signature stays float
            for edge in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):
                q.update_quantization_recipe(regex=".*", operation_name=edge, algorithm_key=AlgorithmName.NO_QUANTIZE)
        for layer in float_layers:
            q.update_quantization_recipe(regex=scope_regex(layer), operation_name=TFLOperationName.ALL_SUPPORTED,
                                         algorithm_key=AlgorithmName.NO_QUANTIZE)
        return q

    def _build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> bytes:
        q = self.quantizer(recipe, float_layers)
        if self._qsv is None:  # min/max per tensor: the same for every recipe, collected once
            self._qsv = q.calibrate({"serving_default": self.samples})
        return bytes(q.quantize(self._qsv).quantized_model)


# ------------------------------------------------------------------------------------------ Keras: TFLiteConverter


class TFSpace(_TFLiteSpace):
    """tf.lite.TFLiteConverter full-integer quantization of a staged SavedModel."""

    def __init__(self, make_converter: Callable[[], Any], representative: Callable, io_type: str, per_channel: bool,
                 **kw):
        super().__init__(**kw)
        self.make_converter = make_converter
        self.representative = representative
        self.io_type = io_type
        self.per_channel = per_channel

    def recipes(self) -> list[Recipe]:
        plain_g = "per-channel" if self.per_channel else "per-tensor"
        other_g = "per-tensor" if self.per_channel else "per-channel"
        out = [Recipe(f"int8-{plain_g}", {"ops": "TFLITE_BUILTINS_INT8", "per_channel": self.per_channel,
                                          "io": self.io_type},
                      "the profile's plain recipe: full-integer int8, representative dataset"),
               Recipe(f"int8-{other_g}", {"ops": "TFLITE_BUILTINS_INT8", "per_channel": not self.per_channel,
                                          "io": self.io_type}, f"full-integer int8 with {other_g} weight scales")]
        if self.io_type == "float32":  # 16x8 takes float or int16 I/O, not int8/uint8
            out.append(Recipe("16x8", {"ops": "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",
                                       "per_channel": True, "io": "float32"},
                              "16x8: int16 activations, int8 weights (TFLite experimental ops set)"))
        return out

    def _converter(self, recipe: Recipe):
        import tensorflow as tf

        s = recipe.settings
        conv = self.make_converter()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = self.representative
        if s["ops"] != "TFLITE_BUILTINS_INT8":
            conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, s["ops"])] + [
                o for o in conv.target_spec.supported_ops if o != tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[s["io"]]
        conv.inference_input_type = io
        conv.inference_output_type = io
        conv._experimental_disable_per_channel = not s["per_channel"]
        return conv

    def _build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> bytes:
        if not float_layers:
            return bytes(self._converter(recipe).convert())
        import tensorflow as tf

        conv = self._converter(recipe)
        conv.target_spec.supported_ops = list(conv.target_spec.supported_ops) + [tf.lite.OpsSet.TFLITE_BUILTINS]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=self.representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layers)))
        return bytes(debugger.get_nondebug_quantized_model())

    def ranking(self, recipe: Recipe, candidate: Candidate, tuning) -> list[tuple[str, float]] | None:
        """The QuantizationDebugger's layer statistics on the tuning split: each quantized layer's output against
        its float output, RMSE ÷ scale (the ranking TensorFlow's debugger guide uses), most sensitive first."""
        import tensorflow as tf

        names = [k for k in self.in_names]
        feeds = tuning.feeds
        n = len(next(iter(feeds.values())))

        def debug_data():
            for i in range(n):
                yield [np.asarray(feeds[k][i:i + 1], dtype=np.float32) for k in names]

        conv = self._converter(recipe)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=debug_data)
        debugger.run()
        import csv
        import io

        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        buf.seek(0)
        quantized = set(self.layers(candidate))
        out = []
        for row in csv.DictReader(buf):
            name = row.get("tensor_name", "")
            try:
                rmse, scale = float(row["mean_squared_error"]) ** 0.5, float(row["scale"])
            except (KeyError, ValueError):
                continue
            if scale > 0 and name in quantized:
                out.append((name, rmse / scale))
        out.sort(key=lambda x: (-x[1], x[0]))
        return out or None


def feeds_to_file_layout(feeds: Feeds, names: list[str], in_t: list[int]) -> Feeds:
    return {k: (to_file_layout(feeds[k]) if i in in_t else feeds[k]) for i, k in enumerate(names)}

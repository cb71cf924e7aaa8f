"""The ORT INT8 search space (worker side): :class:`OrtSpace` lets :func:`edgepack.quantsearch.search` drive
onnxruntime.quantization.

Recipes, cheapest first (``[0]`` is the profile's own settings):

* calibration: percentile 99.999 / 99.99, entropy (KL), min-max; signed symmetric activations; reduce-range
  weights; per-channel weights — each with ``quantize_static``'s real arguments;
* transformers (MatMul + Softmax + LayerNormalization or its ReduceMean/Pow decomposition): only Conv/Gemm and
  MatMul with a constant B quantized (per-channel weights), the attention-mask Add, Softmax and LayerNorm (and
  every other op) kept in float; the same with percentile calibration; then dynamic INT8 (``quantize_dynamic``:
  int8 weights, activations quantized at run time), for when static cannot hold;
* recurrent models (LSTM/GRU): dynamic INT8 too (``DynamicQuantizeLSTM``: the LSTM's int8 weights).

Before any layer goes back to float, the most sensitive layers get 16-bit activations (int8 weights kept): 1, 2, 4,
... of them, then all (:meth:`OrtSpace.widen`: per-tensor ``TensorQuantOverrides`` made consistent by ORT's
``MixedPrecisionTensorQuantOverridesFixer``; the model moves to opset 21, whose QuantizeLinear/DequantizeLinear take
16-bit types). ONNX Runtime has no cross-layer equalization or bias correction of its own (its ``quantize_static``
offers range setting, SmoothQuant for MatMuls and these overrides), so the search has no such stage here.
Float layers are ``nodes_to_exclude``. Sensitivity (``options.accuracy_search.sensitivity``): ``float-one`` (the
core's: each layer alone back in float, output error on the tuning split), ``toolkit`` (ORT's qdq_loss_debug: the
noise each node adds, float vs QDQ activations; one augmented run of each model), ``auto`` = float-one up to
``AUTO_FLOAT_ONE_MAX_LAYERS`` quantized layers (on the depthwise/SiLU network float-one ranked the layers that
matter; the SQNR ranking did not), toolkit beyond.

Each calibration method runs **once**: its tensor ranges go to a JSON cache (``quantize_static``'s
``calibration_cache_path``) that every later variant of it (float layers = ``nodes_to_exclude``, symmetric or
reduce-range settings) reuses, so mixed-precision candidates cost one QDQ rewrite and one run each.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.core.batching import axes_of, first_batch, run_batched
from edgepack.quantsearch import Recipe, Space, Tuning

if TYPE_CHECKING:
    from edgepack.backends.ort_mobile.spec import OrtOptions
    from edgepack.sources import Source

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "Attention")
TRANSFORMER_QUANT_OPS = ["Conv", "Gemm", "MatMul"]
DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "Attention"]
# 'auto' sensitivity: float-one (each layer alone back in float) while it is affordable, ORT's qdq_loss_debug
# ranking (one augmented run of each model) beyond this many quantized layers
AUTO_FLOAT_ONE_MAX_LAYERS = 32


# ------------------------------------------------------------------------------------------------ graph facts


def transformer_nodes(model) -> dict[str, list[str]] | None:
    """The attention/normalisation nodes of a transformer graph (None when the graph is not one): MatMul and
    Softmax, plus LayerNormalization or its ReduceMean/Pow decomposition."""
    nodes = list(model.graph.node)
    types = {n.op_type for n in nodes}
    if not ({"MatMul", "Softmax"} <= types and ("LayerNormalization" in types or {"ReduceMean", "Pow"} <= types)):
        return None
    producers = {o: n for n in nodes for o in n.output}
    softmax = [n.name for n in nodes if n.op_type == "Softmax"]
    mask_add = []
    for n in nodes:
        if n.op_type == "Softmax":
            p = producers.get(n.input[0])
            if p is not None and p.op_type == "Add":
                mask_add.append(p.name)
    norm = [n.name for n in nodes if n.op_type == "LayerNormalization"]
    # decomposed LayerNorm: ReduceMean → Sub → Pow → ReduceMean → Add → Sqrt → Div (all kept float)
    for n in nodes:
        if n.op_type == "Pow":
            chain = [n]
            p = producers.get(n.input[0])
            if p is not None and p.op_type == "Sub":
                chain.append(p)
                q = producers.get(p.input[1]) if len(p.input) > 1 else None
                if q is not None and q.op_type == "ReduceMean":
                    chain.append(q)
            norm += [c.name for c in chain if c.name]
    return {"softmax": sorted(set(softmax)), "mask_add": sorted(set(mask_add)), "layer_norm": sorted(set(norm))}


def compute_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]


def _quantized_nodes(model, originals: dict[str, str]) -> list[str]:
    """Original compute nodes that run quantized in ``model``: in QDQ form a node whose weight (second input) is a
    DequantizeLinear output; in dynamic (operator) form a node replaced by its integer version (name gone or op type changed)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    out = []
    for name, op in originals.items():
        n = by_name.get(name)
        if n is None or n.op_type != op:
            out.append(name)
            continue
        w = producers.get(n.input[1]) if len(n.input) > 1 else None
        if w is not None and w.op_type == "DequantizeLinear":  # its weight (or second operand) is int8
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------ candidates


@dataclass
class Candidate:
    path: Path
    recipe: Recipe
    float_layers: tuple[str, ...]
    excluded: list[str]
    quantized: list[str]
    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


CALIBRATION_CHUNK = 8  # samples per calibrator pass (ranges and histograms merge across passes)
RANKING_BUDGET_BYTES = 2 << 30  # activations the qdq-loss ranking may hold (float + INT8 models together)


class _Reader:
    """A fresh CalibrationDataReader over ready model batches (one per calibration or ranking pass)."""

    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self._items = items
        self._it = iter(items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._items[start_index:end_index])


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtSpace(Space):
    """Quantization candidates of one (pre-processed) float ONNX model; every candidate is a QDQ (or dynamic) ONNX
    file in ``work``."""

    def __init__(self, pre: Path, float_model: Path, source: Source, calibration: dict[str, np.ndarray],
                 opts: OrtOptions, work: Path, per_channel: bool) -> None:
        import onnx

        from edgepack.core.batching import model_batches, num_samples

        self.pre, self.float_model, self.source, self.opts = Path(pre), Path(float_model), source, opts
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.per_channel_ok = per_channel
        self.axes = axes_of(source.inputs)
        first = source.inputs[0].shape
        self.max_batch = None if (not first or first[0] is None) else first[0]
        model = onnx.load(str(self.pre))
        self.originals = {n.name: n.op_type for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name}
        self.node_types = {n.name: n.op_type for n in model.graph.node}
        self.transformer = transformer_nodes(model)
        self.profile_excluded = list(opts.exclude_nodes) + [n for n, t in self.node_types.items()
                                                             if t in opts.exclude_op_types]
        self.calibration = calibration
        if calibration:
            n = num_samples(calibration)
            b = self.max_batch or 1
            whole = (n // b) * b  # whole model batches only (no padded duplicates)
            self.items = model_batches({k: v[:whole] for k, v in calibration.items()}, self.max_batch or 1, self.axes)
            self.one = first_batch(calibration, self.max_batch, self.axes)
        else:
            self.items, self.one = [], None
        self.calibrations: dict[str, float] = {}  # method → seconds its one calibration pass took
        self._calibrators: dict[str, Any] = {}
        self.ranking_error: str | None = None
        self._count = 0
        self._float_session = None
        self.sensitivity = opts.accuracy_search.sensitivity

    # ---------------------------------------------------------------------------------------- recipes

    def plain_settings(self) -> dict[str, Any]:
        o = self.opts
        if o.quantization == "dynamic":
            return {"mode": "dynamic", "per_channel": self.per_channel_ok, "reduce_range": o.reduce_range,
                    "weight_type": o.weight_type, "op_types": list(DYNAMIC_OPS)}
        s: dict[str, Any] = {"mode": "static", "method": o.calibration_method, "per_channel": self.per_channel_ok,
                             "reduce_range": o.reduce_range, "activation_type": o.activation_type,
                             "weight_type": o.weight_type, "symmetric_activations": o.symmetric_activations}
        if o.calibration_method == "percentile":
            s["percentile"] = o.percentile
        return s

    def recipes(self) -> list[Recipe]:
        plain = self.plain_settings()
        out = [Recipe("plain", plain, "the profile's own settings (options.*)")]
        if plain["mode"] == "dynamic":
            if not plain["reduce_range"]:
                out.append(Recipe("dynamic-reduce-range", {**plain, "reduce_range": True},
                                  "7-bit weights: no u8×s8 saturation in the integer kernels"))
            return out
        seen = [json.dumps(plain, sort_keys=True)]

        def add(name: str, why: str, **changes: Any) -> None:
            s = {**plain, **changes}
            if s.get("method") != "percentile":
                s.pop("percentile", None)
            key = json.dumps(s, sort_keys=True)
            if key not in seen:
                seen.append(key)
                out.append(Recipe(name, s, why))

        add("percentile-99.999", "percentile calibration: outliers no longer stretch the activation ranges",
            method="percentile", percentile=99.999)
        add("percentile-99.99", "tighter percentile: finer steps for the bulk of every activation",
            method="percentile", percentile=99.99)
        add("entropy", "entropy (KL) calibration: ranges that keep each activation's distribution",
            method="entropy")
        add("minmax", "min-max calibration: no activation value clipped", method="minmax")
        add("symmetric-int8-activations", "signed, symmetric activations (zero point 0)",
            activation_type="int8", symmetric_activations=True)
        add("reduce-range", "7-bit weights: no u8×s8 saturation in the integer kernels", reduce_range=True)
        if self.per_channel_ok:
            add("per-channel", "per-channel weights: one scale per output channel", per_channel=True)
        if self.transformer is not None:
            t = self.transformer
            floats = t["softmax"] + t["mask_add"] + t["layer_norm"]
            why = (f"transformer (MatMul + Softmax + LayerNorm): only weight MatMuls/Gemm/Conv quantized with "
                   f"per-channel weights; attention-mask Add ({len(t['mask_add'])}), Softmax ({len(t['softmax'])}), "
                   f"LayerNorm ({len(t['layer_norm'])}), attention score MatMuls and every other op kept in float")
            tr = {"op_types": TRANSFORMER_QUANT_OPS, "matmul_const_b_only": True, "float_nodes": floats,
                  "per_channel": self.per_channel_ok}
            add("transformer", why, **tr)
            add("transformer-percentile", why + "; percentile 99.999 calibration", method="percentile",
                percentile=99.999, **tr)
        recurrent = sorted({t for t in self.node_types.values() if t in ("LSTM", "GRU")})
        if self.transformer is not None or recurrent:
            what = "transformer" if self.transformer is not None else f"recurrent ({'/'.join(recurrent)})"
            out.append(Recipe("dynamic", {"mode": "dynamic", "per_channel": self.per_channel_ok, "reduce_range": False,
                                          "weight_type": "int8", "op_types": list(DYNAMIC_OPS)},
                              f"{what} model: dynamic INT8 (quantize_dynamic): int8 weights of MatMul/Gemm"
                              f"{'/LSTM' if 'LSTM' in recurrent else ''}, activations quantized per call at run time, "
                              "so no calibrated range can clip; tried when static INT8 cannot hold"))
        return out

    def widen(self, recipe: Recipe, layers: tuple[str, ...]) -> Recipe | None:
        """16-bit activations (uint16, or int16 with signed activations) on ``layers``' activation inputs and
        outputs, int8 weights kept: ``quantize_static``'s per-tensor ``TensorQuantOverrides``, made consistent by
        ORT's own ``MixedPrecisionTensorQuantOverridesFixer`` (it inserts the 8 ↔ 16-bit conversions). Static
        recipes only."""
        s = recipe.settings
        if s["mode"] != "static" or not layers:
            return None
        bits = "int16" if s["activation_type"] == "int8" else "uint16"
        return Recipe(f"{recipe.name}+a16x{len(layers)}", {**s, "wide_layers": list(layers)},
                      f"{recipe.name} with {bits} activations on the {len(layers)} most sensitive layer(s) "
                      "(int8 weights; TensorQuantOverrides + MixedPrecisionTensorQuantOverridesFixer)")

    def _wide_overrides(self, layers: list[str], activation_type: str, symmetric: bool) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.execution_providers.qnn.mixed_precision_overrides_utils import (
            MixedPrecisionTensorQuantOverridesFixer,
        )
        from onnxruntime.quantization.tensor_quant_overrides import TensorQuantOverridesHelper

        model = onnx.load(str(self.pre), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        wide = QuantType.QInt16 if activation_type == "int8" else QuantType.QUInt16
        default = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
        by_name = {n.name: n for n in model.graph.node}
        init: dict[str, list[dict[str, Any]]] = {}
        for name in layers:
            n = by_name.get(name)
            if n is None:
                continue
            acts = [x for x in n.input[:2] if x and x not in inits] + [n.output[0]]
            for t in acts:
                init[t] = [{"quant_type": wide}]
        helper = TensorQuantOverridesHelper(init)
        fixer = MixedPrecisionTensorQuantOverridesFixer.create_from_model(helper, model, default)
        fixer.apply(default, symmetric)
        return helper.get_dict()

    # ---------------------------------------------------------------------------------------- building

    def _ranges(self, s: dict[str, Any]) -> Path:
        """The calibration cache (tensor ranges, JSON) for ``s``'s method: each calibrator family collects once
        (min-max; the absolute histograms every percentile reads; the signed histograms of entropy), each
        percentile is one ``compute_data`` on the kept histograms."""
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import (
            create_calibrator,
            save_tensors_data,
        )

        key = json.dumps({"method": s["method"], "percentile": s.get("percentile")}, sort_keys=True)
        cache = self.work / f"calib-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
        if cache.is_file():
            return cache
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
        t0 = time.monotonic()
        cal = self._calibrators.get(s["method"])
        if cal is None:
            # entropy: ORT's default 128 histogram bins for 128 quantized bins leaves KL nothing to choose (the
            # threshold is always the full range, i.e. min-max); 2048 bins as TensorRT's entropy calibrator uses
            extra = ({"percentile": s["percentile"]} if s["method"] == "percentile" else
                     {"num_bins": 2048, "num_quantized_bins": 128} if s["method"] == "entropy" else {})
            cal = create_calibrator(self.pre, [], augmented_model_path=str(self.work / f"augmented-{s['method']}.onnx"),
                                    calibrate_method=method[s["method"]], extra_options=extra)
            # in chunks: histogram calibrators hold every intermediate tensor of the samples collected at once
            # (a 640×640 YOLO's 48 samples took 22 GB and the worker was OOM-killed); ranges and histograms merge
            for start in range(0, len(self.items), CALIBRATION_CHUNK):
                cal.collect_data(_Reader(self.items[start:start + CALIBRATION_CHUNK]))
            self._calibrators[s["method"]] = cal
        if s["method"] == "percentile":
            cal.collector.percentile = s["percentile"]
        save_tensors_data(cal.compute_data(), cache)
        self.calibrations[f"{s['method']}" + (f" {s['percentile']}" if s["method"] == "percentile" else "")] = \
            round(time.monotonic() - t0, 3)
        return cache

    def build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> Candidate:
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        s = recipe.settings
        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        excluded = list(dict.fromkeys(self.profile_excluded + list(s.get("float_nodes", ())) + list(float_layers)))
        self._count += 1
        out = self.work / f"cand-{self._count:03d}.onnx"
        if s["mode"] == "dynamic":
            quantize_dynamic(str(self.pre), str(out), op_types_to_quantize=s.get("op_types"),
                             per_channel=s["per_channel"], reduce_range=s["reduce_range"],
                             weight_type=qtype[s["weight_type"]], nodes_to_exclude=excluded,
                             extra_options={"MatMulConstBOnly": True})
        else:
            if not self.items:
                from edgepack.errors import InputError

                raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
            extra: dict[str, Any] = {"ActivationSymmetric": s["symmetric_activations"]}
            if s["method"] == "percentile":
                extra["CalibPercentile"] = s["percentile"]
            if s.get("matmul_const_b_only"):
                extra["MatMulConstBOnly"] = True
                extra["QDQOpTypePerChannelSupportToAxis"] = {"MatMul": 1}
            if s.get("wide_layers"):
                extra["TensorQuantOverrides"] = self._wide_overrides(list(s["wide_layers"]), s["activation_type"],
                                                                     s["symmetric_activations"])
            cache = self._ranges(s)
            quantize_static(
                str(self.pre), str(out), _Reader(self.items), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=s.get("op_types"), per_channel=s["per_channel"], reduce_range=s["reduce_range"],
                activation_type=qtype[s["activation_type"]], weight_type=qtype[s["weight_type"]],
                calibrate_method=method[s["method"]], nodes_to_exclude=excluded, extra_options=extra,
                calibration_cache_path=str(cache),
            )
        model = onnx.load(str(out), load_external_data=False)
        quantized = _quantized_nodes(model, self.originals)
        return Candidate(out, recipe, tuple(float_layers), excluded, quantized)

    # ---------------------------------------------------------------------------------------- running

    def _sess(self, cand: Candidate):
        if cand.session is None:
            cand.session = _session(cand.path)
        return cand.session

    def run(self, candidate: Candidate, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._sess(candidate)
        names = [o.name for o in sess.get_outputs()]

        def infer(feed):
            return dict(zip(names, sess.run(names, feed)))

        return run_batched(infer, feeds, self.max_batch, self.axes)

    def layers(self, candidate: Candidate) -> list[str]:
        return [n for n in candidate.quantized if n not in candidate.float_layers]

    def size(self, candidate: Candidate) -> int | None:
        return candidate.path.stat().st_size if candidate.path.is_file() else None

    def timer(self, candidate: Candidate) -> Callable[[], Any] | None:
        if self.one is None:
            return None
        sess, one = self._sess(candidate), self.one
        return lambda: sess.run(None, one)

    def float_timer(self) -> Callable[[], Any] | None:
        if self.one is None:
            return None
        if self._float_session is None:
            self._float_session = _session(self.float_model)
        sess, one = self._float_session, self.one
        return lambda: sess.run(None, one)

    def int8_share(self, candidate: Candidate) -> float | None:
        return len(candidate.quantized) / len(self.originals) if self.originals else None

    def release(self, candidate: Candidate) -> None:
        candidate.session = None
        candidate.path.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------- sensitivity

    def ranking(self, recipe: Recipe, candidate: Candidate, tuning: Tuning) -> list[tuple[str, float]] | None:
        """ORT's own analysis (onnxruntime.quantization.qdq_loss_debug) on the tuning split: every quantized
        compute node's activations in the float and the QDQ model; a node's error is the relative noise power
        (10^(-SQNR/10)) of its output minus that of its input, i.e. the noise that node adds. Used for
        ``sensitivity = "toolkit"``, and for ``"auto"`` beyond ``AUTO_FLOAT_ONE_MAX_LAYERS`` quantized layers
        (below it, float-one is affordable and measures the output error directly)."""
        layers = self.layers(candidate)
        if recipe.settings["mode"] != "static" or not layers:
            return None
        if self.sensitivity == "float-one" or (self.sensitivity == "auto" and len(layers) <= AUTO_FLOAT_ONE_MAX_LAYERS):
            return None
        try:
            return self._qdq_loss_ranking(candidate, tuning, layers)
        except Exception as e:  # noqa: BLE001 - the analysis is optional: the search falls back to float-one
            from edgepack.errors import explain

            self.ranking_error = explain(str(e)) or type(e).__name__
            return None

    def _qdq_loss_ranking(self, candidate: Candidate, tuning: Tuning, layers: list[str]) -> list[tuple[str, float]]:
        import onnx
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations,
            compute_signal_to_quantization_noice_ratio,
            modify_model_output_intermediate_tensors,
        )

        from edgepack.core.batching import model_batches

        items = model_batches(tuning.feeds, self.max_batch or 1, self.axes)[:64]
        aug_f, aug_q = self.work / "rank-float.onnx", self.work / "rank-qdq.onnx"
        modify_model_output_intermediate_tensors(str(self.pre), str(aug_f))
        modify_model_output_intermediate_tensors(str(candidate.path), str(aug_q))
        # every intermediate tensor of every sample, twice (float and INT8): bounded by RANKING_BUDGET_BYTES
        first = collect_activations(str(aug_f), _Reader(items[:1]))
        per_sample = sum(int(a.nbytes) for v in first.values() for a in v) or 1
        items = items[:max(1, min(len(items), RANKING_BUDGET_BYTES // (2 * per_sample)))]
        fa = collect_activations(str(aug_f), _Reader(items))
        qa = collect_activations(str(aug_q), _Reader(items))
        aug_f.unlink(missing_ok=True)
        aug_q.unlink(missing_ok=True)
        model = onnx.load(str(self.pre), load_external_data=False)
        qmodel = onnx.load(str(candidate.path), load_external_data=False)
        qnodes = {n.name: n for n in qmodel.graph.node}

        def noise(float_name: str, q_name: str) -> float | None:
            if float_name not in fa or q_name not in qa:
                return None
            snr = compute_signal_to_quantization_noice_ratio(fa[float_name], qa[q_name])
            return 10 ** (-snr / 10)

        out = []
        for n in model.graph.node:
            if n.name not in layers:
                continue
            qn = qnodes.get(n.name)
            if qn is None:
                continue
            y = noise(n.output[0], qn.output[0])
            x = noise(n.input[0], qn.input[0])
            if y is None:
                continue
            out.append((n.name, max(0.0, y - (x or 0.0))))
        out.sort(key=lambda t: (-t[1], t[0]))
        return out

    # ---------------------------------------------------------------------------------------- report

    def describe(self, cand: Candidate) -> dict[str, Any]:
        """The artifact details of the chosen candidate."""
        s = cand.recipe.settings
        d: dict[str, Any] = {"quantization": "static QDQ" if s["mode"] == "static" else
                             "dynamic (int8 weights, activations quantized at run time)",
                             "recipe": cand.recipe.name, "per_channel": s["per_channel"],
                             "reduce_range": s["reduce_range"], "weight_type": s["weight_type"]}
        if s["mode"] == "static":
            d.update({"calibration_method": s["method"], "activation_type": s["activation_type"],
                      "symmetric_activations": s["symmetric_activations"]})
            if s["method"] == "percentile":
                d["percentile"] = s["percentile"]
        if s.get("op_types"):
            d["op_types_quantized"] = list(s["op_types"])
        if self.transformer is not None:
            d["transformer"] = {k: len(v) for k, v in self.transformer.items()}
        if s.get("wide_layers"):
            d["activations_16bit_layers"] = list(s["wide_layers"])
        d["excluded_nodes"] = list(cand.excluded)
        d["float_layers"] = list(cand.float_layers)
        d["compute_ops"] = len(self.originals)
        d["quantized_compute_ops"] = len(cand.quantized)
        d["quantized_share"] = len(cand.quantized) / len(self.originals) if self.originals else 0.0
        d["float_compute_ops"] = [n for n in self.originals if n not in cand.quantized]
        if self.calibrations:  # which calibration passes ran (their wall-clock time would break reproducibility)
            d["calibration_passes"] = sorted(self.calibrations)
        if self.ranking_error:
            d["sensitivity_toolkit_error"] = f"qdq_loss_debug ranking failed ({self.ranking_error}); float-one used"
        return d

    def cleanup(self) -> None:
        self._float_session = None
        self._calibrators.clear()
        shutil.rmtree(self.work, ignore_errors=True)

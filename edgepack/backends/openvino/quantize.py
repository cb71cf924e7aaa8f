"""Worker side: NNCF post-training int8 quantization, the INT8 accuracy search, and accuracy control.

Plain int8 runs ``nncf.quantize`` on the build's calibration split (``data.calibration``) with the profile's
settings. When the build passes the tuning split (``data.tuning``: drawn from the calibration source, disjoint from
the holdout, possibly overlapping the calibration split; the holdout never reaches a backend), :class:`OVSpace` lets
:func:`edgepack.quantsearch.search` judge the plain build on the tuning split against the profile's parity budget and,
if it misses, try NNCF's other recipes (bias correction, asymmetric activations, range estimators, channel alignment,
``model_type=TRANSFORMER`` with SmoothQuant for transformers), then keep the most sensitive layers in float
(``nncf.IgnoredScope(names=...)``, each layer's error measured float-one on the tuning split).

Accuracy control (``[options.accuracy_control]``, profile ``intel-openvino-int8-acc``) replaces that last,
float-one stage with ``nncf.quantize_with_accuracy_control`` on the best recipe: NNCF ranks quantizer groups and
reverts the most harmful to float until the metric's drop from the fp32 IR, measured on the **tuning split**, is
within ``max_drop`` (the recipe's ``nncf.quantize`` arguments are passed under the names the installed NNCF's
``quantize_with_accuracy_control`` takes: :func:`control_kwargs`). When NNCF reverts every compute layer, there is
no INT8 left: the bundle stays the search's best INT8 build and the search's row fails, saying INT8 cannot meet the
budget, with that build's tuning figures and the layers NNCF reverted. The metric is one of:

* ``auto`` (default): ``top1_agreement`` when the model has a class-score output (N, C), else ``parity``.
* ``parity``: edgepack's own parity score on the tuning split (:func:`edgepack.quantsearch.score` of the profile's
  parity budget against the reference model's outputs), as ``min(1, 1 + score)``: 1.0 when every parity check of
  the budget passes, lower by the summed relative margins of the failing ones. Works for any output kind.
* ``top1_agreement``: share of tuning samples whose arg-max matches the fp32 IR's (computed here, forced f32 on the
  CPU plugin). The fp32 value is 1.0 by definition, so ``max_drop = 0.005`` means ≥ 99.5 % agreement.
* ``accuracy``: top-1 accuracy against the tuning labels (``data.tuning_labels``; needs a labelled recipe).
* the name of an installed ``edgepack.metrics`` entry point enabled with ``--allow-metric NAME``:
  ``fn(outputs, reference, labels) -> float`` (higher is better) over ``{output name: array}`` dicts for the same
  samples; ``labels`` may be None. Its value for the fp32 model must not be 0 (NNCF divides by it).

The parity report is computed afterwards on the holdout, which neither the search nor the controller saw: its
figures are an independent estimate.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import quantsearch
from edgepack.backends.openvino import ir
from edgepack.errors import ConfigError, ConversionFailed, EdgepackError, InputError, converter_error, explain
from edgepack.feeds import Feeds, num_samples, take

log = logging.getLogger("edgepack.openvino")


def _items(feeds: Feeds, inputs, batch: int | None) -> list[tuple[np.ndarray, Feeds]]:
    """(sample indices, feed) per model call: batch-1 calls for dynamic batch, padded chunks for a fixed batch B;
    one sample per call, in the model's form, when an input's batch axis is not 0."""
    from edgepack.core.batching import axes_of, per_sample, to_model

    n = num_samples(feeds)
    step = 1 if per_sample(axes_of(inputs)) else (batch or 1)
    out = []
    for start in range(0, n, step):
        idx = np.arange(start, min(start + step, n))
        part = take(feeds, idx)
        if batch is not None and len(idx) < batch:
            part = {k: np.concatenate([v] + [v[-1:]] * (batch - len(idx))) for k, v in part.items()}
        out.append((idx, to_model({t.name: part[t.name] for t in inputs}, axes_of(inputs))))
    return out


def _batch(source) -> int | None:
    first = source.inputs[0].shape if source.inputs else ()
    return None if (not first or first[0] is None) else first[0]


# ------------------------------------------------------------------------------------------ recipes


GROUP_SEP = "|"  # joins the operations of one NNCF quantizer group into one float "layer" of the search
RANGE_SETS = ("MINMAX", "MEAN_MINMAX", "MEDIAN_MINMAX", "MEAN_NO_OUTLIERS_MINMAX", "MEAN_QUANTILE", "HISTOGRAM")


def plain_settings(opts) -> dict[str, Any]:
    """The profile's own recipe as JSON-able settings (what the report lists)."""
    return {"preset": opts.preset, "target_device": opts.target_device, "subset_size": opts.subset_size,
            "fast_bias_correction": opts.fast_bias_correction, "model_type": opts.model_type}


def nncf_kwargs(settings: dict[str, Any], scope, floats: tuple[str, ...] = ()) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments for a recipe's settings, the profile's ignored scope and the layers kept
    in float (``IgnoredScope(names=...)``)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    kw: dict[str, Any] = {
        "preset": (nncf.QuantizationPreset.MIXED if settings["preset"] == "mixed"
                   else nncf.QuantizationPreset.PERFORMANCE),
        "target_device": getattr(nncf.TargetDevice, settings["target_device"].upper()),
        "subset_size": settings["subset_size"],
        "fast_bias_correction": settings["fast_bias_correction"],
        "model_type": nncf.ModelType.TRANSFORMER if settings["model_type"] == "transformer" else None,
    }
    adv: dict[str, Any] = {}
    if settings.get("activations_range"):
        adv["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet,
                                                            settings["activations_range"])
    if settings.get("weights_range"):
        adv["weights_range_estimator_params"] = getattr(RangeEstimatorParametersSet, settings["weights_range"])
    if settings.get("channel_alignment"):
        adv["disable_channel_alignment"] = False
    if settings.get("smooth_quant_alpha") is not None:
        adv["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=settings["smooth_quant_alpha"])
    if adv:
        kw["advanced_parameters"] = AdvancedQuantizationParameters(**adv)
    names = [*scope.names, *[f for f in floats if f not in scope.names]]
    if names or scope.types or scope.patterns:
        # the profile's names are checked (a typo is the user's error); search layers come from the IR itself
        kw["ignored_scope"] = nncf.IgnoredScope(names=names, types=list(scope.types), patterns=list(scope.patterns),
                                                validate=not floats)
    return kw


def is_transformer(model) -> dict[str, int] | None:
    """Attention and layer-norm patterns in the IR: fused ``ScaledDotProductAttention`` (what ``convert_model``
    makes of most exported attention blocks), MatMul of two activations next to a Softmax, MVN or a mean/variance
    normalisation. The counts found, or None for a model that does not look like a transformer."""
    counts = {"scaled_dot_product_attention": 0, "activation_matmul": 0, "softmax": 0, "layernorm": 0}
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t == "ScaledDotProductAttention":
            counts["scaled_dot_product_attention"] += 1
        elif t == "MatMul":
            counts["activation_matmul"] += all(op.input_value(i).get_node().get_type_name() not in
                                               ("Constant", "Convert", "FakeQuantize") for i in (0, 1))
        elif t in ("Softmax", "SoftMax"):
            counts["softmax"] += 1
        elif t == "MVN":
            counts["layernorm"] += 1
        elif t == "ReduceMean" and any(c.get_node().get_type_name() in ("Subtract", "Sqrt", "Add")
                                       for out in op.outputs() for c in out.get_target_inputs()):
            counts["layernorm"] += 1
    attention = counts["scaled_dot_product_attention"] or (counts["activation_matmul"] and counts["softmax"])
    return {k: v for k, v in counts.items() if v} if attention else None


def recipes(opts, transformer: bool) -> list[quantsearch.Recipe]:
    """Cheapest first; ``[0]`` is the profile's plain recipe. Every setting is NNCF's own (``nncf.quantize``
    arguments and ``AdvancedQuantizationParameters``)."""
    R = quantsearch.Recipe
    plain = plain_settings(opts)
    out = [R("plain", plain, "the profile's settings")]

    def add(name: str, why: str, **change: Any) -> None:
        settings = {**plain, **change}
        if settings != plain and all(r.settings != settings for r in out):
            out.append(R(name, settings, why))

    if transformer:
        add("transformer", "model_type=TRANSFORMER: NNCF's transformer scheme (SmoothQuant on MatMul inputs, "
            "attention kept sensible: no quantizer on the softmax / mask add)", model_type="transformer")
        add("transformer-smoothquant-0.5", "transformer scheme with a stronger SmoothQuant migration "
            "(alpha 0.5: more of the activation outliers moved into the weights)", model_type="transformer",
            smooth_quant_alpha=0.5)
        add("transformer-mixed", "transformer scheme with asymmetric activations (preset mixed)",
            model_type="transformer", preset="mixed")
        add("transformer-no-smoothquant", "transformer scheme without SmoothQuant (alpha -1)",
            model_type="transformer", smooth_quant_alpha=-1.0)
    add("full-bias-correction", "BiasCorrection re-estimates each layer's bias shift on the quantized network's "
        "own activations (slower than the fast variant)", fast_bias_correction=False)
    add("fast-bias-correction", "FastBiasCorrection (per-layer bias shift from the float statistics)",
        fast_bias_correction=True)
    add("preset-mixed", "asymmetric activation quantizers (preset mixed): full int8 range for one-sided "
        "activations such as SiLU/GELU outputs", preset="mixed")
    add("ranges-quantile", "activation ranges from the mean 0.01 %/99.99 % quantiles (outliers clipped)",
        activations_range="MEAN_QUANTILE")
    add("ranges-histogram", "activation ranges chosen from the histogram (quantization-error optimal)",
        activations_range="HISTOGRAM")
    add("preset-mixed-ranges-quantile", "asymmetric activations with quantile ranges", preset="mixed",
        activations_range="MEAN_QUANTILE")
    add("channel-alignment", "NNCF's channel alignment (CLE-like: aligns per-channel ranges between consecutive "
        "convolutions)", channel_alignment=True)
    return out


def _control(model) -> list[str]:
    return sorted({op.get_type_name() for op in model.get_ordered_ops()} & {"If", "Loop", "TensorIterator"})


def run_nncf(model, cal_items: list, kw: dict[str, Any], info: dict[str, Any] | None = None):
    """``nncf.quantize``, falling back to fast bias correction on models with control flow (NNCF's BiasCorrection
    cannot walk If bodies)."""
    import nncf

    control = _control(model)
    try:
        try:
            return nncf.quantize(model, nncf.Dataset(cal_items), **kw)
        except nncf.ValidationError:
            raise
        except Exception as e:  # noqa: BLE001 - NNCF's (slow) BiasCorrection cannot walk control flow
            if not control or kw.get("fast_bias_correction"):
                raise converter_error("nncf.quantize failed", e) from None
            kw = {**kw, "fast_bias_correction": True}  # FastBiasCorrection handles If bodies
            try:
                quantized = nncf.quantize(model, nncf.Dataset(cal_items), **kw)
            except Exception as e2:  # noqa: BLE001
                if "must not be empty" in str(e2):
                    raise ConversionFailed(
                        f"nncf.quantize cannot calibrate this model's control flow ({', '.join(control)}): NNCF "
                        "calibrates each If branch on the samples that take it, and no calibration sample takes "
                        "one of the branches (e.g. a branch for another sample rate)",
                        hint="quantize this model with ort_mobile (android-ort-int8), or keep it fp16/fp32 on "
                             "OpenVINO", details=str(e2)) from None
                raise converter_error(f"nncf.quantize failed on a model with control flow ({', '.join(control)}), "
                                      "even with fast bias correction", e2,
                                      hint="quantize this model with ort_mobile (android-ort-int8), or keep it "
                                           "fp16/fp32 on OpenVINO") from None
            if info is not None:
                info["fast_bias_correction"] = True
                info["bias_correction"] = (f"fast: NNCF's BiasCorrection refuses control flow "
                                           f"({', '.join(control)}): {explain(str(e))}")
            return quantized
    except nncf.ValidationError as e:
        raise ConfigError(f"options.ignored_scope: {str(e).splitlines()[0][:300]}",
                          hint="names are the IR's operation names (artifact.compute_op_names in a report)"
                          ) from None


class OVSpace(quantsearch.Space):
    """The OpenVINO search space: candidates are quantized ``ov.Model`` objects (nothing on disk)."""

    def __init__(self, model, source, cal_items: list, opts, sample: Feeds, info: dict[str, Any]) -> None:
        self.model, self.source, self.cal_items, self.opts = model, source, cal_items, opts
        self.sample = sample  # one batch of the model's inputs, for the timers
        self.info = info
        self.transformer = is_transformer(model)
        self._recipes = recipes(opts, self.transformer is not None and opts.model_type != "transformer")
        self.plain = None
        self.plain_error: EdgepackError | None = None

    def recipes(self) -> list[quantsearch.Recipe]:
        return self._recipes

    def build(self, recipe: quantsearch.Recipe, float_layers: tuple[str, ...]):
        # a ranked NNCF quantizer group names all the operations it reverts, joined by GROUP_SEP
        names = tuple(n for f in float_layers for n in f.split(GROUP_SEP))
        kw = nncf_kwargs(recipe.settings, self.opts.ignored_scope, names)
        try:
            cand = run_nncf(self.model, self.cal_items, kw, self.info if recipe.name == "plain" else None)
        except EdgepackError as e:
            if recipe.name == "plain" and not float_layers:
                self.plain_error = e  # the profile's own settings fail: the user's error, with its hint
            raise
        if self.plain is None and recipe.name == "plain" and not float_layers:
            self.plain = cand
        return cand

    def ranking(self, recipe: quantsearch.Recipe, candidate, tuning: quantsearch.Tuning):
        """NNCF's own sensitivity units: the quantizer groups its accuracy control ranks
        (``Ranker.find_groups_of_quantizers_to_rank``), each reverted alone to float with NNCF's
        ``revert_operations_to_floating_point_precision`` (original weights and biases restored) on a copy of the
        recipe's model quantized without weight compression, and scored with edgepack's parity score on the tuning
        split (error = score gained by reverting the group). One calibration, no re-quantization per layer."""
        from copy import deepcopy

        from nncf.common.factory import build_graph
        from nncf.common.quantization.quantizer_removal import revert_operations_to_floating_point_precision
        from nncf.common.utils.backend import get_backend
        from nncf.openvino.quantization.backend_parameters import BackendParameters
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, RestoreMode
        from nncf.quantization.algorithms.accuracy_control.algorithm import (QuantizationAccuracyRestorer,
                                                                             get_algo_backend)
        from nncf.quantization.algorithms.accuracy_control.ranker import Ranker

        kw = nncf_kwargs(recipe.settings, self.opts.ignored_scope)
        adv = deepcopy(kw.pop("advanced_parameters", None) or AdvancedQuantizationParameters())
        adv.backend_params[BackendParameters.COMPRESS_WEIGHTS] = False
        quantized = run_nncf(self.model, self.cal_items, {**kw, "advanced_parameters": adv})
        algo = get_algo_backend(get_backend(self.model))
        graph = build_graph(quantized)
        QuantizationAccuracyRestorer._collect_original_biases_and_weights(build_graph(self.model), graph,
                                                                          self.model, algo)
        groups = Ranker(1, None, algo, None).find_groups_of_quantizers_to_rank(graph)
        # SmoothQuant (the transformer scheme) rescales weights against a Multiply on the activations: restoring the
        # original weights would break that product, so only the activation quantizers are reverted there
        mode = RestoreMode.ONLY_ACTIVATIONS if smooth_quant(recipe.settings) else RestoreMode.ACTIVATIONS_AND_WEIGHTS
        self.info.setdefault("ranking_restore_mode", {})[recipe.name] = mode.value
        base = quantsearch.score(quantsearch.evaluate(self.run(quantized, tuning.feeds), tuning))
        log.info("ranking base score %s", base)
        ranked: list[tuple[str, float]] = []
        by_name = {op.get_friendly_name(): op for op in quantized.get_ordered_ops()}
        compute = set(self.layers(quantized))
        for group in groups:
            ops = sorted(_compute_ops_fed_by([n.node_name for n in group.operations], by_name, compute))
            if not ops:
                continue
            reverted = revert_operations_to_floating_point_precision(
                group.operations, group.quantizers, quantized, graph, mode,
                algo.get_op_with_weights_metatypes(), algo.is_node_with_weight, algo.get_weight_tensor_port_ids)
            gained = quantsearch.score(quantsearch.evaluate(self.run(reverted, tuning.feeds), tuning)) - base
            ranked.append((GROUP_SEP.join(ops), float(gained)))
        ranked.sort(key=lambda x: (-x[1], x[0]))
        seen: set[str] = set()  # several quantizer groups can feed the same layer: keep its best gain
        ranked = [r for r in ranked if not (r[0] in seen or seen.add(r[0]))]
        self.info.setdefault("group_ranking", {})[recipe.name] = [(n, round(e, 6)) for n, e in ranked[:20]]
        return [r for r in ranked if r[1] > 0] or ranked[:1]

    def run(self, candidate, feeds: Feeds) -> Feeds:
        return ir.run_compiled(ir.compile_f32(candidate), self.source.inputs, self.source.outputs, feeds)

    def layers(self, candidate) -> list[str]:
        return [n for n, q in ir.compute_ops(candidate).items() if q]

    def size(self, candidate) -> int | None:
        import openvino as ov

        with tempfile.TemporaryDirectory() as d:
            ov.save_model(candidate, str(Path(d) / "m.xml"), compress_to_fp16=False)
            return sum(p.stat().st_size for p in Path(d).iterdir())

    def _timer(self, model, config: dict[str, Any]):
        import openvino as ov

        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                          **config})
        request = compiled.create_infer_request()
        feed = dict(self.sample)
        return lambda: request.infer(feed)

    def timer(self, candidate):
        """One batch-1 call as deployed on the host CPU: 1 thread, latency hint, the plugin's own precision."""
        return self._timer(candidate, {})

    def float_timer(self):
        """The fp32 IR the int8 build started from, same runtime and settings, f32 inference precision."""
        return self._timer(self.model, {"INFERENCE_PRECISION_HINT": "f32"})

    def int8_share(self, candidate) -> float | None:
        """Share of the weighted compute ops' weights (a MAC proxy) that are int8."""
        total = q8 = 0
        for op in candidate.get_ordered_ops():
            if op.get_type_name() in ir.COMPUTE_TYPES and op.get_input_size() > 1:
                w = int(np.prod([d.get_length() if d.is_static else 1 for d in op.get_input_partial_shape(1)]))
                total += w
                q8 += w if ir.weight_is_int8(op.input_value(1).get_node()) else 0
        return q8 / total if total else None


def _compute_ops_fed_by(names: list[str], by_name: dict[str, Any], compute: set[str]) -> set[str]:
    """The weighted compute ops among ``names``, or (for a group of layout/shape ops only, e.g. the Transposes of a
    Keras NHWC graph) the compute ops they feed through at most four layout/shape ops; else ``names`` themselves.
    What an IgnoredScope must name to keep the group's arithmetic in float."""
    found = {n for n in names if n in compute}
    if found:
        return found
    frontier = [by_name[n] for n in names if n in by_name]
    for _ in range(4):
        nxt = []
        for op in frontier:
            for out in op.outputs():
                for target in out.get_target_inputs():
                    node = target.get_node()
                    name = node.get_friendly_name()
                    if name in compute:
                        found.add(name)
                    elif node.get_type_name() in ("Transpose", "Reshape", "Convert", "Squeeze", "Unsqueeze",
                                                  "FakeQuantize", "Concat", "Split", "VariadicSplit"):
                        nxt.append(node)
        frontier = nxt
    return found or set(names)


def _sample(feeds: Feeds, inputs, batch: int | None) -> Feeds:
    return _items(take(feeds, np.arange(min(num_samples(feeds), batch or 1))), inputs, batch)[0][1]


def quantize(model, source, data, opts) -> tuple[Any, dict[str, Any]]:
    """The int8 ov.Model (FakeQuantize + int8 weights) and facts for the artifact details; ``data`` is the
    build's ConvertData (``calibration``; ``tuning``/``tuning_reference``/``limits`` for the accuracy search and
    accuracy control)."""
    import nncf

    if data is None or not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    batch = _batch(source)
    cal_items = [feed for _, feed in _items(data.calibration, source.inputs, batch)]
    info: dict[str, Any] = {
        "quantization": "nncf.quantize (post-training, FakeQuantize + int8 weights)",
        "nncf": nncf.__version__,
        "preset": opts.preset, "target_device": opts.target_device, "fast_bias_correction": opts.fast_bias_correction,
        "model_type": opts.model_type, "subset_size": min(opts.subset_size, len(cal_items) * (batch or 1)),
        "ignored_scope": opts.ignored_scope.model_dump(mode="json"),
    }
    space = OVSpace(model, source, cal_items, opts, _sample(data.calibration, source.inputs, batch), info)
    if space.transformer:
        info["transformer_patterns"] = space.transformer
    tuning = data.search_tuning() if data.tuning else None
    search_opts = opts.accuracy_search
    if opts.accuracy_control is not None:  # NNCF's accuracy control is the mixed-precision stage (below)
        search_opts = search_opts.model_copy(update={"max_float_layers": 0})
    try:
        result = quantsearch.search(space, tuning, search_opts, progress=log.info)
    except ConversionFailed:
        if space.plain_error is not None:
            raise space.plain_error from None
        raise
    if opts.accuracy_control is not None:
        result = _controlled(model, result, space, source, data, opts, cal_items, batch, tuning, info)
    chosen = result.recipe.settings
    info.update({k: chosen[k] for k in ("preset", "fast_bias_correction", "model_type") if k in chosen})
    if "fast_bias_correction" in info and info.get("bias_correction"):
        info["fast_bias_correction"] = True
    info["accuracy_search"] = result.to_dict()
    return result.candidate, info


def _controlled(model, result, space: OVSpace, source, data, opts, cal_items, batch, tuning, info):
    """Accuracy control on the search's chosen recipe, on the tuning split; the restored model becomes the search's
    mixed-precision trial (judged against the parity budget on the same split)."""
    import time

    kw = nncf_kwargs(result.recipe.settings, opts.ignored_scope)
    t0 = time.monotonic()
    restored, ac = _accuracy_control(model, result.candidate, source, data, opts, kw, cal_items, batch,
                                     smooth_quant(result.recipe.settings))
    ac["int8_recipe"] = result.recipe.name  # the search's recipe the controller started from
    info["accuracy_control"] = ac
    floats = tuple(ac["reverted_to_float"])
    if not floats:
        result.reason += "; accuracy control kept every layer in int8"
        return result
    trial = quantsearch.Trial(result.recipe.name, floats, "mixed")
    if tuning is not None:
        outcome = quantsearch.evaluate(space.run(restored, tuning.feeds), tuning)
        trial.passed, trial.score, trial.figures = bool(outcome), quantsearch.score(outcome), \
            quantsearch.summary(outcome)
    trial.seconds = time.monotonic() - t0
    trial.figures["accuracy_control"] = f"nncf.quantize_with_accuracy_control ({ac['metric']}, max_drop " \
                                        f"{ac['max_drop']}) reverted {len(floats)} layer(s)"
    result.trials.append(trial)
    before = next((t for t in result.trials if t.recipe == result.recipe.name and t.float_layers == ()
                   and t.error is None), None)
    if ac["int8_layers_left"] == 0:
        # every compute layer back in float is no INT8 bundle: INT8 cannot meet the budget. The bundle is the best
        # INT8 build (its figures on the holdout judge it) and the search's row fails, naming both
        ac["not_kept"] = {"reverted_by_nncf": list(floats), "final_metric": ac["final_metric"],
                          "why": "NNCF accuracy control reverted every compute layer to float: no INT8 left"}
        best = (f"score {before.score:.3f}, failing {', '.join(before.figures.get('failing', [])) or 'none'}"
                if before is not None else "not measured")
        ac.update(reverted_to_float=[], final_metric=ac["plain_int8_metric"], reached=False)
        result.met = False
        result.reason += (f"; INT8 cannot meet the budget: NNCF accuracy control ({ac['metric']}, max_drop "
                          f"{ac['max_drop']}) reverted every compute layer to float ({len(floats)}: "
                          f"{', '.join(floats[:12])}{' …' if len(floats) > 12 else ''}); the bundle is the best "
                          f"INT8 build, recipe '{result.recipe.name}' (tuning: {best}); use an fp16/fp32 target or "
                          "loosen the budget")
        space.release(restored)
        return result
    if tuning is not None and before is not None and not trial.passed and trial.score <= before.score:
        ac["not_kept"] = {"reverted_by_nncf": list(floats), "final_metric": ac["final_metric"],
                          "why": "the reverted model scores worse against the parity budget on the tuning split "
                                 "than the search's int8 build"}
        drop = ac["fp32_metric"] - ac["plain_int8_metric"]
        if ac["drop_type"] == "relative":
            drop /= abs(ac["fp32_metric"]) or 1.0
        ac.update(reverted_to_float=[], final_metric=ac["plain_int8_metric"], final_drop=drop,
                  reached=bool(drop <= ac["max_drop"] + 1e-12))
        result.reason += (f"; NNCF accuracy control reverted {len(floats)} layer(s) but scored worse on the tuning "
                          f"split ({trial.score:.3f} vs {before.score:.3f}): not kept")
        return result
    result.candidate, result.float_layers, result.searched = restored, floats, True
    result.met = trial.passed if tuning is not None else result.met
    result.sensitivity_method = "toolkit (nncf.quantize_with_accuracy_control ranking, on the tuning split)"
    result.reason = (f"recipe '{result.recipe.name}' with {len(floats)} layer(s) reverted to float by NNCF "
                     f"accuracy control ({ac['metric']} drop {ac['final_drop']:.4f}, max {ac['max_drop']}) "
                     + ("meets" if trial.passed else "misses") + " the parity budget on the tuning split")
    result.cost = quantsearch._cost(space, restored, trial, space.size(space.plain) if space.plain is not None
                                    else None, (space.timer(space.plain) if space.plain is not None else None,
                                                space.float_timer()))
    return result


# ------------------------------------------------------------------------------------------ accuracy control


class _LogTap(logging.Handler):
    """Keeps NNCF's INFO lines (accuracy drops, reverted operations) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if any(k in msg for k in ("Accuracy drop", "Reverted", "Algorithm completed", "could not achieve",
                                  "were reverted", "Maximum number")):
            self.lines.append(msg.strip())


METRIC_GROUP = "edgepack.metrics"


def _import_metric(spec: str) -> Callable[..., float]:
    """A user metric: an installed ``edgepack.metrics`` entry point the user enabled with ``--allow-metric NAME``.

    Profiles never name code (a file or module path); only installed packages provide metrics."""
    from importlib import metadata

    allowed = [n for n in os.environ.get("EDGEPACK_ALLOW_METRICS", "").split(",") if n]
    found = {ep.name: ep for ep in metadata.entry_points(group=METRIC_GROUP)}
    if spec not in found:
        raise ConfigError(f"options.accuracy_control.metric '{spec}' is not top1_agreement, accuracy or an installed "
                          f"'{METRIC_GROUP}' entry point", hint=f"installed metrics: {', '.join(found) or 'none'}")
    if spec not in allowed:
        raise ConfigError(f"metric '{spec}' runs code from an installed package and is not enabled",
                          hint=f"pass --allow-metric {spec} if you trust the package that provides it")
    try:
        func = found[spec].load()
    except Exception as e:  # noqa: BLE001 - a third-party package's import error
        raise InputError(f"cannot load metric '{spec}': {type(e).__name__}: {str(e)[:200]}") from None
    if not callable(func):
        raise InputError(f"metric entry point '{spec}' is not a function")
    return func


def class_output(outputs) -> str | None:
    """The first class-score output (N, C) with C > 1, or None."""
    return next((t.name for t in outputs if len(t.shape) == 2 and (t.shape[1] or 0) > 1), None)


def resolve_metric(spec: str, outputs) -> str:
    """``auto`` → ``top1_agreement`` for a model with a class-score output, else ``parity``; other names as given.
    Refuses a class metric on a model without class scores (plan time and worker both call this)."""
    cls = class_output(outputs)
    if spec == "auto":
        return "top1_agreement" if cls is not None else "parity"
    if spec in ("top1_agreement", "accuracy") and cls is None:
        raise ConfigError(f"accuracy control metric '{spec}' needs a class-score output (N, C); this model has "
                          + ", ".join(f"{t.name}={t.shape_str()}" for t in outputs),
                          hint="use options.accuracy_control.metric = 'parity' (edgepack's parity score on the "
                               "tuning split, any output kind) or 'auto'")
    return spec


def _parity_metric(tuning: quantsearch.Tuning) -> Callable[[Feeds, np.ndarray], float]:
    """min(1, 1 + quantsearch.score): 1.0 when the profile's parity budget holds on these tuning samples."""
    def whole(outs: Feeds, idx: np.ndarray) -> float:
        sub = quantsearch.Tuning(feeds={}, reference={k: v[idx] for k, v in tuning.reference.items()},
                                 labels=None if tuning.labels is None else tuning.labels[idx],
                                 limits=tuning.limits, kinds=tuning.kinds)
        return float(min(1.0, 1.0 + quantsearch.score(quantsearch.evaluate(outs, sub))))

    return whole


def _metric(spec: str, reference: Feeds, labels: np.ndarray | None, class_out: str | None,
            tuning: quantsearch.Tuning | None):
    """(per-sample score or None, whole-set metric) for the chosen metric, over sample indices."""
    if spec == "top1_agreement":
        ref_top1 = reference[class_out].argmax(-1)
        return (lambda outs, idx: (outs[class_out].argmax(-1) == ref_top1[idx]).astype(float)), None
    if spec == "accuracy":
        return (lambda outs, idx: (outs[class_out].argmax(-1) == labels[idx]).astype(float)), None
    if spec == "parity":
        if tuning is None:
            raise InputError("accuracy control metric 'parity' needs the reference outputs and parity limits on the "
                             "tuning split, which this build did not pass")
        return None, _parity_metric(tuning)
    func = _import_metric(spec)

    def whole(outs: Feeds, idx: np.ndarray) -> float:
        return float(func(outs, {k: v[idx] for k, v in reference.items()}, None if labels is None else labels[idx]))

    return None, whole


def activation_quantized(model) -> dict[str, bool]:
    """Friendly name of every weighted compute op → whether its activation input (port 0) comes from a
    FakeQuantize (through layout/shape ops)."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ir.COMPUTE_TYPES and op.get_input_size() > 1:
            node, hops = op.input_value(0).get_node(), 0
            while node.get_type_name() in ("Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze") and hops < 8:
                node, hops = node.input_value(0).get_node(), hops + 1
            out[op.get_friendly_name()] = node.get_type_name() == "FakeQuantize"
    return out


def smooth_quant(settings: dict[str, Any]) -> bool:
    """Whether a recipe runs SmoothQuant (NNCF's transformer scheme unless alpha < 0)."""
    alpha = settings.get("smooth_quant_alpha")
    return settings.get("model_type") == "transformer" and (alpha is None or alpha >= 0)


def control_kwargs(kw: dict[str, Any], func: Callable[..., Any]) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments renamed for ``nncf.quantize_with_accuracy_control``, checked against its
    real signature: the quantizer's ``advanced_parameters`` is ``advanced_quantization_parameters`` there (NNCF
    2.x–3.x); ``mode`` has no counterpart. Anything else the installed NNCF does not take is a bug here, not the
    user's: it raises with the names."""
    import inspect

    params = inspect.signature(func).parameters
    out = dict(kw)
    if "advanced_parameters" in out and "advanced_parameters" not in params:
        out["advanced_quantization_parameters"] = out.pop("advanced_parameters")
    unknown = sorted(k for k in out if k not in params)
    if unknown:
        raise TypeError(f"{func.__name__} of the installed NNCF takes no {', '.join(unknown)}")
    return out


def _accuracy_control(model, plain, source, data, opts, kw, cal_items, batch,
                      smoothed: bool = False) -> tuple[Any, dict[str, Any]]:
    """nncf.quantize_with_accuracy_control measured on the tuning split only (``data.tuning``; the holdout never
    reaches a backend)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters, RestoreMode
    from nncf.quantization.algorithms.accuracy_control.algorithm import calculate_accuracy_drop

    ac = opts.accuracy_control
    names = [t.name for t in source.outputs]
    metric = resolve_metric(ac.metric, source.outputs)
    class_out = class_output(source.outputs)
    if not data.tuning:
        raise InputError("accuracy control needs the tuning split, which this build did not pass",
                         hint="the backend's tunes_on_data() must be true for this profile")
    labels = data.tuning_labels
    if metric == "accuracy" and labels is None:
        raise InputError("accuracy control metric 'accuracy' needs labelled tuning data",
                         hint="use a recipe with labels, or metric = 'top1_agreement' / 'parity'")
    tuning = data.search_tuning()
    reference = ir.run_compiled(ir.compile_f32(model), source.inputs, source.outputs, data.tuning)
    per_sample, whole = _metric(metric, reference, labels, class_out, tuning)
    val_items = _items(data.tuning, source.inputs, batch)
    seen: set[int] = set()

    def validate(compiled, items) -> tuple[float, list[float] | None]:
        outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        index: list[np.ndarray] = []
        scores: list[float] = []
        for idx, feed in items:
            seen.update(int(i) for i in idx)
            res = compiled(feed)
            got = {n: np.asarray(res[compiled.output(n)])[:len(idx)] for n in names}
            if per_sample is not None:
                scores.append(float(per_sample(got, idx).mean()))
            else:
                for n in names:
                    outs[n].append(got[n])
                index.append(idx)
        if per_sample is not None:
            return float(np.mean(scores)) if scores else 0.0, scores
        return whole({n: np.concatenate(v) for n, v in outs.items()}, np.concatenate(index)), None

    def measure(m) -> float:
        return validate(ir.compile_f32(m), val_items)[0]

    fp32_metric, plain_metric = measure(model), measure(plain)
    drop_type = getattr(nncf.DropType, ac.drop_type.upper())
    # under SmoothQuant the weights were rescaled against a Multiply on the activations: NNCF's default restore
    # (original weights back) breaks that product, so only activation quantizers are removed
    restore_mode = RestoreMode.ONLY_ACTIVATIONS if smoothed else RestoreMode.ACTIVATIONS_AND_WEIGHTS
    tap = _LogTap()
    within, _ = calculate_accuracy_drop(fp32_metric, plain_metric, ac.max_drop, drop_type)
    logger = logging.getLogger("nncf")
    logger.addHandler(tap)
    try:
        if within:  # NNCF's own termination test, on the search's int8 build: re-quantizing would change nothing
            restored = plain
            tap.lines.append(f"the int8 build is within max_drop on the tuning split ({metric} {plain_metric:.6g}, "
                             f"fp32 {fp32_metric:.6g}): no layer reverted, NNCF accuracy control not re-run")
        else:
            restored = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(cal_items), nncf.Dataset(val_items, lambda item: item[1]), validate,
                max_drop=ac.max_drop, drop_type=drop_type,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=ac.max_iterations, ranking_subset_size=ac.ranking_subset_size,
                    tune_hyperparams=ac.tune_hyperparams, restore_mode=restore_mode),
                **control_kwargs(kw, nncf.quantize_with_accuracy_control))
    except nncf.ValidationError as e:
        raise converter_error("NNCF accuracy control failed", e) from None
    except ZeroDivisionError:  # NNCF divides by the fp32 metric (relative drop) even for absolute drops
        raise ConfigError(f"accuracy control metric '{metric}' is 0 for the fp32 model; NNCF needs a non-zero "
                          "reference value", hint="shift the metric, e.g. return 1 - error instead of -error") from None
    finally:
        logger.removeHandler(tap)
    final_metric = measure(restored)
    before, after = ir.compute_ops(plain), ir.compute_ops(restored)
    # a layer is back in float when its weights are no longer int8 or (restore mode only_activations, under
    # SmoothQuant) its activation input lost its quantizer
    act_before, act_after = activation_quantized(plain), activation_quantized(restored)
    reverted = sorted(n for n in after if (before.get(n, False) and not after[n])
                      or (act_before.get(n, False) and not act_after.get(n, False)))
    drop = fp32_metric - final_metric
    if ac.drop_type == "relative":
        drop /= abs(fp32_metric) or 1.0
    return restored, {
        "metric": metric, "metric_option": ac.metric, "max_drop": ac.max_drop, "drop_type": ac.drop_type,
        "restore_mode": restore_mode.value,
        "measured_on": f"tuning split ({num_samples(data.tuning)} samples, disjoint from the holdout, which "
                       "judges the bundle independently)",
        "samples": len(seen),
        "reference": {"accuracy": "labels", "parity": "the reference model's outputs, judged by the profile's "
                      "parity budget"}.get(metric, "fp32 IR on the CPU plugin, f32 inference precision"),
        "fp32_metric": fp32_metric, "plain_int8_metric": plain_metric, "final_metric": final_metric,
        "final_drop": drop, "reached": bool(drop <= ac.max_drop + 1e-12),
        "reverted_to_float": reverted,
        "int8_layers_left": sum(1 for n, q in after.items() if q and act_after.get(n, True)),
        "quantized_compute_ops": f"{sum(after.values())}/{len(after)} "
                                 f"(plain int8: {sum(before.values())}/{len(before)})",
        "nncf_log": tap.lines[-12:],
    }

"""Worker side: NNCF post-training int8 quantization, optionally with accuracy control.

Plain int8 runs ``nncf.quantize`` on the recipe's calibration split (``data.calibration``) with the profile's
settings. Accuracy control (``nncf.quantize_with_accuracy_control``) measures a parity metric on the tuning split
(``data.tuning``, given because the backend's ``tunes_on_data`` is true for such profiles) and reverts the most
harmful layers to float until the drop from the fp32 IR is within ``max_drop``. The metric is one of:

* ``top1_agreement`` (default): share of tuning samples whose arg-max matches the fp32 IR's (computed here, forced
  f32 on the CPU plugin). The fp32 value is 1.0 by definition, so ``max_drop = 0.005`` means ≥ 99.5 % agreement.
* ``accuracy``: top-1 accuracy against the tuning labels (``data.tuning_labels``; needs a labelled recipe).
* ``"package.module:function"`` or ``"path/to/file.py:function"``: ``fn(outputs, reference, labels) -> float``
  (higher is better) over ``{output name: array}`` dicts for the same samples; ``labels`` may be None. Its value
  for the fp32 model must not be 0 (NNCF divides by it).

The pipeline passes the holdout split as the tuning split, so it serves both the controller and the parity report
and the report's figures on it are not an independent estimate; the artifact details say so.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import numpy as np

from edgepack.backends.openvino import ir
from edgepack.errors import ConfigError, ConversionFailed, InputError, converter_error, explain
from edgepack.feeds import Feeds, num_samples, take


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


def _settings(opts) -> dict[str, Any]:
    import nncf

    kw: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.MIXED if opts.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "target_device": getattr(nncf.TargetDevice, opts.target_device.upper()),
        "subset_size": opts.subset_size,
        "fast_bias_correction": opts.fast_bias_correction,
        "model_type": nncf.ModelType.TRANSFORMER if opts.model_type == "transformer" else None,
    }
    scope = opts.ignored_scope
    if scope.names or scope.types or scope.patterns:
        kw["ignored_scope"] = nncf.IgnoredScope(names=list(scope.names), types=list(scope.types),
                                                patterns=list(scope.patterns), validate=True)
    return kw


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


def quantize(model, source, data, opts) -> tuple[Any, dict[str, Any]]:
    """The int8 ov.Model (FakeQuantize + int8 weights) and facts for the artifact details; ``data`` is the
    build's ConvertData (``calibration``; ``tuning``/``tuning_labels`` for accuracy control)."""
    import nncf

    if data is None or not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    batch = _batch(source)
    cal_items = [feed for _, feed in _items(data.calibration, source.inputs, batch)]
    kw = _settings(opts)
    info: dict[str, Any] = {
        "quantization": "nncf.quantize (post-training, FakeQuantize + int8 weights)",
        "nncf": nncf.__version__,
        "preset": opts.preset, "target_device": opts.target_device, "fast_bias_correction": opts.fast_bias_correction,
        "model_type": opts.model_type, "subset_size": min(opts.subset_size, len(cal_items) * (batch or 1)),
        "ignored_scope": opts.ignored_scope.model_dump(mode="json"),
    }
    control = sorted({op.get_type_name() for op in model.get_ordered_ops()} & {"If", "Loop", "TensorIterator"})
    try:
        try:
            quantized = nncf.quantize(model, nncf.Dataset(cal_items), **kw)
        except nncf.ValidationError:
            raise
        except Exception as e:  # noqa: BLE001 - NNCF's (slow) BiasCorrection cannot walk control flow
            if not control or kw.get("fast_bias_correction"):
                raise converter_error("nncf.quantize failed", e) from None
            kw["fast_bias_correction"] = True  # FastBiasCorrection handles If bodies
            info["fast_bias_correction"] = True
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
            info["bias_correction"] = (f"fast: NNCF's BiasCorrection refuses control flow ({', '.join(control)}): "
                                       f"{explain(str(e))}")
    except nncf.ValidationError as e:
        raise ConfigError(f"options.ignored_scope: {str(e).splitlines()[0][:300]}",
                          hint="names are the IR's operation names (artifact.compute_op_names in a report)"
                          ) from None
    if opts.accuracy_control is None:
        return quantized, info
    acc_model, acc_info = _accuracy_control(model, quantized, source, data, opts, kw, cal_items, batch)
    info["accuracy_control"] = acc_info
    return acc_model, info


# ------------------------------------------------------------------------------------------ accuracy control


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


def _metric(spec: str, reference: Feeds, labels: np.ndarray | None, class_output: str | None):
    """(per-sample score or None, whole-set metric) for the chosen metric, over sample indices."""
    if spec == "top1_agreement":
        ref_top1 = reference[class_output].argmax(-1)
        return (lambda outs, idx: (outs[class_output].argmax(-1) == ref_top1[idx]).astype(float)), None
    if spec == "accuracy":
        return (lambda outs, idx: (outs[class_output].argmax(-1) == labels[idx]).astype(float)), None
    func = _import_metric(spec)

    def whole(outs: Feeds, idx: np.ndarray) -> float:
        return float(func(outs, {k: v[idx] for k, v in reference.items()}, None if labels is None else labels[idx]))

    return None, whole


def _accuracy_control(model, plain, source, data, opts, kw, cal_items, batch) -> tuple[Any, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    ac = opts.accuracy_control
    names = [t.name for t in source.outputs]
    class_output = next((t.name for t in source.outputs if len(t.shape) == 2 and (t.shape[1] or 0) > 1), None)
    if ac.metric in ("top1_agreement", "accuracy") and class_output is None:
        raise ConfigError(f"accuracy control metric '{ac.metric}' needs a class-score output (N, C); this model has "
                          + ", ".join(f"{t.name}={t.shape_str()}" for t in source.outputs),
                          hint="give options.accuracy_control.metric = 'module:function'")
    if not data.tuning:
        raise InputError("accuracy control needs the tuning split, which this build did not pass",
                         hint="the backend's tunes_on_data() must be true for this profile")
    labels = data.tuning_labels
    if ac.metric == "accuracy" and labels is None:
        raise InputError("accuracy control metric 'accuracy' needs labelled holdout data",
                         hint="use a recipe with labels, or metric = 'top1_agreement'")
    reference = ir.run_compiled(ir.compile_f32(model), source.inputs, source.outputs, data.tuning)
    per_sample, whole = _metric(ac.metric, reference, labels, class_output)
    val_items = _items(data.tuning, source.inputs, batch)

    def validate(compiled, items) -> tuple[float, list[float] | None]:
        outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        index: list[np.ndarray] = []
        scores: list[float] = []
        for idx, feed in items:
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
    tap = _LogTap()
    logger = logging.getLogger("nncf")
    logger.addHandler(tap)
    try:
        restored = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(cal_items), nncf.Dataset(val_items, lambda item: item[1]), validate,
            max_drop=ac.max_drop, drop_type=getattr(nncf.DropType, ac.drop_type.upper()),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=ac.max_iterations, ranking_subset_size=ac.ranking_subset_size,
                tune_hyperparams=ac.tune_hyperparams),
            **kw)
    except nncf.ValidationError as e:
        raise converter_error("NNCF accuracy control failed", e) from None
    except ZeroDivisionError:  # NNCF divides by the fp32 metric (relative drop) even for absolute drops
        raise ConfigError(f"accuracy control metric '{ac.metric}' is 0 for the fp32 model; NNCF needs a non-zero "
                          "reference value", hint="shift the metric, e.g. return 1 - error instead of -error") from None
    finally:
        logger.removeHandler(tap)
    final_metric = measure(restored)
    before, after = ir.compute_ops(plain), ir.compute_ops(restored)
    reverted = sorted(n for n, q in after.items() if not q and before.get(n, False))
    drop = fp32_metric - final_metric
    if ac.drop_type == "relative":
        drop /= abs(fp32_metric) or 1.0
    return restored, {
        "metric": ac.metric, "max_drop": ac.max_drop, "drop_type": ac.drop_type,
        "measured_on": "holdout split (also used for the parity report, which is therefore not independent)",
        "reference": "fp32 IR on the CPU plugin, f32 inference precision" if ac.metric != "accuracy" else "labels",
        "fp32_metric": fp32_metric, "plain_int8_metric": plain_metric, "final_metric": final_metric,
        "final_drop": drop, "reached": bool(drop <= ac.max_drop + 1e-12),
        "reverted_to_float": reverted,
        "quantized_compute_ops": f"{sum(after.values())}/{len(after)} "
                                 f"(plain int8: {sum(before.values())}/{len(before)})",
        "nncf_log": tap.lines[-12:],
    }

"""The worker side: ONNX → TensorRT-ready ONNX (+ Q/DQ ONNX and calibration cache for INT8) + the device's build
scripts, with every host check a named row in ``details["host_checks"]``.

Order: the op check against the profile's TensorRT table runs first, on the source graph, before any conversion
work (a refusal names op, node and TensorRT version); then opset/IR, onnxslim (constant folding and shape
inference, no fusions: a fused op could be one the device's parser lacks), the optimization profile, activation
ranges on the calibration split (FP16 overflow scan), Q/DQ + lint, cache + lint, scripts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.tensorrt import buildscript, cache, qdq, tables
from edgepack.backends.tensorrt.spec import (
    CACHE,
    MODEL,
    QDQ_MODEL,
    TensorRTOptions,
    TensorRTRuntime,
)
from edgepack.core.batching import axes_of, first_batch, per_sample
from edgepack.errors import (
    ConfigError,
    ConversionFailed,
    InputError,
    UnsupportedConversion,
)

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

FP16_MAX = 65504.0
MAX_IR = {8: 8, 10: 10}  # IR version the bundled ONNX parser of each TensorRT major reads


def _row(name: str, measured: float | None, limit: float, passed: bool, op: str = "<=", note: str = "") -> dict:
    return {"name": name, "limit": limit, "measured": measured, "passed": bool(passed), "op": op, "note": note}


def graph_nodes(model) -> list[tuple[str, str, str]]:
    """(op_type, node name, domain) of every node, subgraphs included."""
    out: list[tuple[str, str, str]] = []

    def walk(g, prefix: str = "") -> None:
        for n in g.node:
            out.append((n.op_type, prefix + (n.name or n.output[0]), n.domain))
            for a in n.attribute:
                if a.g and a.g.node:
                    walk(a.g, f"{prefix}{n.name}/")
                for sub in a.graphs:
                    walk(sub, f"{prefix}{n.name}/")

    walk(model.graph)
    return out


def opset_of(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_ops_or_refuse(model, options: TensorRTOptions) -> tables.OpCheck:
    result = tables.check_ops(graph_nodes(model), options.tensorrt)
    if not result.passed:
        raise UnsupportedConversion(
            result.message(),
            hint=f"JetPack {options.jetpack} ships TensorRT {options.tensorrt} ({result.table.describe()}); "
                 "target a newer JetPack line or replace the op before export")
    return result


def check_source_ops(source: Source, options: TensorRTOptions) -> tables.OpCheck:
    """The op check on the source graph alone (weights not loaded): the backend's preflight."""
    import onnx

    model = onnx.load(str(source.path), load_external_data=False)
    _shapes(model, options, tuple(source.inputs))  # a dynamic axis nobody gave a range for: refused up front
    return check_ops_or_refuse(model, options)


QDQ_OPSET = 13  # per-channel DequantizeLinear (the `axis` attribute) needs opset 13


def _run_outputs(model, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Output name → shape of one ONNX Runtime CPU run of ``model`` on ``feed``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # a wrongly declared output shape is a warning there; we report it ourselves
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return {n: tuple(np.shape(v)) for n, v in zip(names, sess.run(names, {k: v for k, v in feed.items()
                                                                          if k in wanted}))}


def _declared(vi) -> list[int | str | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _disagrees(declared: list[int | str | None] | None, real: tuple[int, ...]) -> bool:
    return declared is not None and (len(declared) != len(real) or
                                     any(isinstance(d, int) and d > 0 and d != r for d, r in zip(declared, real)))


def drop_wrong_output_shapes(model, real: dict[str, tuple[int, ...]]) -> list[str]:
    """Graph outputs whose declared shape disagrees with the reference run (rank, or a fixed dimension) lose that
    declaration before any folding: onnxslim folds a Shape-derived Reshape feeding a graph output to the declared
    shape (a CTC recognizer's (T, B, C) became (1, T·C)). Shape inference then derives them from the graph."""
    fixed = []
    for o in model.graph.output:
        if o.name in real and _disagrees(_declared(o), real[o.name]):
            fixed.append(f"{o.name}: declared {_declared(o)}, runs as {list(real[o.name])}")
            o.type.tensor_type.ClearField("shape")
    return fixed


def _ready(model_in, options: TensorRTOptions, table: tables.OpTable,
           min_opset: int = 0, sample: dict[str, np.ndarray] | None = None) -> tuple[Any, dict[str, Any]]:
    """Opset within the limit (at least ``min_opset``: 13 for per-channel Q/DQ), IR within the parser's, constants
    folded and shapes inferred (onnxslim). With ``sample`` (one model call's inputs), the source's output shapes
    are kept: declared output shapes that disagree with a run of the source are dropped before folding, and the
    ready model must give the source's output shapes on the same inputs (else ConversionFailed)."""
    import onnx
    import onnxslim
    from onnx import version_converter
    from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

    facts: dict[str, Any] = {"opset_in": opset_of(model_in), "ir_in": model_in.ir_version}
    try:
        real = _run_outputs(model_in, sample) if sample else {}
    except Exception as e:  # noqa: BLE001 - the source does not run in ONNX Runtime CPU here: nothing to keep
        real = {}
        facts["output_shapes"] = f"not checked: the source does not run in ONNX Runtime CPU ({str(e)[:120]})"
    if real:
        copy = onnx.ModelProto()
        copy.CopyFrom(model_in)
        dropped = drop_wrong_output_shapes(copy, real)
        if dropped:
            facts["declared_output_shapes_dropped"] = dropped
            model_in = copy
    model = model_in
    want = min(max(opset_of(model), table.opset_min, min_opset), options.max_opset)
    if want != opset_of(model):
        try:
            model = version_converter.convert_version(model, want)
        except Exception as e:  # noqa: BLE001 - the converter's message names the op it cannot adapt
            raise ConversionFailed(f"ONNX opset {opset_of(model)} → {want} failed: {str(e).splitlines()[0][:200]}",
                                   hint=f"export the model at opset <= {options.max_opset}") from None
    try:
        model = onnxslim.slim(model, skip_fusion_patterns=list(DEFAULT_FUSION_PATTERNS))
    except Exception as e:  # noqa: BLE001
        raise ConversionFailed(f"onnxslim (constant folding, shape inference) failed: {str(e)[:200]}") from None
    max_ir = MAX_IR[options.trt_major]
    model.ir_version = min(model.ir_version, max_ir)
    model = onnx.shape_inference.infer_shapes(model, check_type=True)
    onnx.checker.check_model(model)
    if real:
        after = _run_outputs(model, sample)
        changed = [f"{n}: {list(real[n])} → {list(after.get(n, ()))}" for n in real if after.get(n) != real[n]]
        if changed:
            raise ConversionFailed("the TensorRT-ready ONNX changes the source's output shapes ("
                                   + "; ".join(changed) + ")",
                                   hint="export the model with its real output shapes (or none declared)")
        facts["output_shapes"] = "kept: " + ", ".join(f"{n} {list(v)}" for n, v in real.items())
    facts.update(opset=opset_of(model), ir=model.ir_version, max_ir=max_ir,
                 constant_folding="onnxslim " + onnxslim.__version__ + " (no fusions)",
                 nodes_in=len(model_in.graph.node), nodes=len(model.graph.node))
    return model, facts


def _shapes(model, options: TensorRTOptions,
            declared: tuple = ()) -> tuple[dict[str, dict[str, list[int]]], list[str]]:
    """min/opt/max for every input with a dynamic dimension, and the shape lint's problems. The source's input
    declarations (``--input x=1x3x48x192``, ``dims=AXIS:MIN/OPT/MAX``, ``batch_axis``) fill what the ONNX file leaves
    dynamic; ``options.shapes`` in the profile overrides them."""
    init = {i.name for i in model.graph.initializer}
    specs = {t.name: t for t in declared}
    shapes: dict[str, dict[str, list[int]]] = {}
    problems: list[str] = []
    undeclared: dict[str, tuple[list, list[int]]] = {}  # input → (its dims, every dynamic axis nobody declared)
    for inp in model.graph.input:
        if inp.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in inp.type.tensor_type.shape.dim]
        if None not in dims:
            if inp.name in options.shapes:
                problems.append(f"input '{inp.name}' is static {dims}; options.shapes does not apply")
            continue
        given = options.shapes.get(inp.name)
        if given is None:
            spec = specs.get(inp.name)
            fixed = list(spec.shape) if spec is not None and len(spec.shape) == len(dims) else [None] * len(dims)
            ranges = {a: (lo, opt, hi) for a, lo, opt, hi in (spec.dims if spec is not None else ())}
            batch_axis = spec.batch_axis if spec is not None else 0
            lo_hi: list[tuple[int, int, int]] = []
            for axis, d in enumerate(dims):
                if d is not None:
                    lo_hi.append((d, d, d))
                elif axis in ranges:
                    lo_hi.append(ranges[axis])
                elif fixed[axis] is not None:
                    lo_hi.append((fixed[axis], fixed[axis], fixed[axis]))
                elif axis == batch_axis:
                    lo_hi.append((1, 1, options.max_batch))
                else:
                    undeclared.setdefault(inp.name, (dims, []))[1].append(axis)
            if inp.name in undeclared:
                continue
            shapes[inp.name] = {"min": [x[0] for x in lo_hi], "opt": [x[1] for x in lo_hi],
                                "max": [x[2] for x in lo_hi]}
        else:
            if len(given.min) != len(dims) or any(d is not None and d != m for d, m in zip(dims, given.min)) or \
                    any(d is not None and d != m for d, m in zip(dims, given.max)):
                raise ConfigError(f"options.shapes.{inp.name} ({list(given.min)}..{list(given.max)}) does not fit "
                                  f"the model's input {dims}", hint="keep the static dimensions as they are")
            shapes[inp.name] = {"min": list(given.min), "opt": list(given.opt), "max": list(given.max)}
    if undeclared:
        raise ConfigError("; ".join(f"input '{n}' has dynamic dimensions {d} beyond the batch (axes "
                                    f"{', '.join(map(str, axes))})" for n, (d, axes) in undeclared.items()),
                          hint="declare them all: " + " ".join(
                              f"--input '{n}=...," + ",".join(f"dims={a}:MIN/OPT/MAX" for a in axes) + "'"
                              for n, (_, axes) in undeclared.items())
                          + " (or fixed shapes), or [options.shapes.NAME] min/opt/max in the profile")
    if options.dla_core is not None:
        for name, s in shapes.items():
            if not (s["min"] == s["opt"] == s["max"]):
                problems.append(f"DLA takes static shapes only: input '{name}' has min {s['min']} / max {s['max']}; "
                                f"set options.shapes.{name} min = opt = max")
    for name in options.shapes:
        if name not in {i.name for i in model.graph.input}:
            problems.append(f"options.shapes names '{name}', which is not a model input")
    return shapes, problems


def _activation_ranges(model, calibration: dict[str, np.ndarray], batch: int | None,
                       axes: dict[str, int | None] | None = None) -> dict[str, float]:
    """max |x| of every float tensor over the calibration split (ONNX Runtime CPU, every tensor an output)."""
    import onnx
    import onnxruntime as ort

    if not calibration:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for vi in m.graph.value_info:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and vi.name not in have:
            m.graph.output.append(vi)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    from edgepack.core.batching import model_batches, per_sample

    amax: dict[str, float] = {}
    n = len(next(iter(calibration.values())))
    step = batch or min(n, 32)
    whole = (n // step) * step if not per_sample(axes) else n  # whole model batches only
    for part in model_batches({k: v[:whole] for k, v in calibration.items()}, step, axes):
        feed = {k: v for k, v in part.items() if k in inputs}
        for name, value in zip(names, sess.run(names, feed)):
            if value.dtype.kind == "f" and value.size:
                amax[name] = max(amax.get(name, 0.0), float(np.max(np.abs(value))))
    for k, v in calibration.items():
        if k in inputs and v.dtype.kind == "f":
            amax[k] = float(np.max(np.abs(v)))
    return amax


def _fp16_scan(model, amax: dict[str, float], margin: float) -> dict:
    from onnx import numpy_helper

    weights = {i.name: float(np.max(np.abs(numpy_helper.to_array(i)))) for i in model.graph.initializer
               if i.data_type == 1 and i.dims}
    over = sorted(((v, k) for k, v in {**amax, **weights}.items() if v > FP16_MAX), reverse=True)
    near = sorted(((v, k) for k, v in amax.items() if margin * FP16_MAX < v <= FP16_MAX), reverse=True)
    top = max(amax.items(), key=lambda kv: kv[1]) if amax else ("—", 0.0)
    note = f"{len(amax)} activations + {len(weights)} weights scanned; largest activation '{top[0]}' |x| ≤ {top[1]:.4g}"
    if over:
        note += "; over 65504: " + ", ".join(f"'{k}' {v:.4g}" for v, k in over[:5])
    if near:
        note += f"; within {margin:.0%} of 65504: " + ", ".join(f"'{k}' {v:.4g}" for v, k in near[:5])
    if not amax:
        note = "no calibration data: activations not scanned; " + note
    return _row("trt: fp16 overflow scan (calibration activation ranges)", float(len(over)), 0.0, not over and
                bool(amax), "<=", note)


def convert(source: Source, profile: TargetProfile, options: TensorRTOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_in = onnx.load(str(source.path))
    opcheck = check_ops_or_refuse(model_in, options)  # before any conversion work
    table = opcheck.table
    if profile.precision == "int8" and not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    rows: list[dict] = []
    first = source.inputs[0].shape if source.inputs else ()
    batch = None if (not first or first[0] is None) else first[0]
    axes = axes_of(source.inputs)
    sample = first_batch(data.calibration, batch, axes) if data.calibration else None
    model, facts = _ready(model_in, options, table, QDQ_OPSET if profile.precision == "int8" else 0, sample)
    opcheck = check_ops_or_refuse(model, options)  # the folded graph too (it only loses nodes)
    rows.append(_row("trt: opset/IR within the profile", float(facts["opset"]), float(options.max_opset),
                     facts["opset"] <= options.max_opset and facts["ir"] <= facts["max_ir"], "<=",
                     f"opset {facts['opset_in']} → {facts['opset']} (TensorRT {options.tensorrt} parses "
                     f"{table.opset_min}..{options.max_opset}), IR {facts['ir_in']} → {facts['ir']} "
                     f"(≤ {facts['max_ir']})"))
    restricted = "; ".join(f"{op}: {why}" for op, why in sorted(opcheck.restricted.items()))
    rows.append(_row(f"trt: ops in the TensorRT {options.tensorrt} table", float(len(opcheck.rejected)), 0.0,
                     opcheck.passed, "<=", f"{len({op for op, _, _ in graph_nodes(model)})} op types, "
                     f"{len(model.graph.node)} nodes; table {table.describe()}"
                     + (f"; restrictions to respect: {restricted}" if restricted else "")))
    shapes, shape_problems = _shapes(model, options, tuple(source.inputs))
    rows.append(_row("trt: dynamic-shape/profile lint" + (" (DLA: static only)" if options.dla_core is not None
                                                           else ""), float(len(shape_problems)), 0.0,
                     not shape_problems, "<=", "; ".join(shape_problems) or (
                         "profiles: " + ", ".join(f"{n} {s['min']}/{s['opt']}/{s['max']}" for n, s in shapes.items())
                         if shapes else "all inputs static")))
    onnx.save(model, str(out_dir / MODEL))
    if profile.precision == "int8" and per_sample(axes):
        odd = ", ".join(f"{t.name} (batch_axis {t.batch_axis})" for t in source.inputs if t.batch_axis != 0)
        raise UnsupportedConversion(f"TensorRT INT8 calibration here feeds batch-first inputs only; {odd} is not",
                                    hint="build this model's fp16 Jetson target, or its INT8 on ort_mobile/openvino")
    if profile.precision in ("fp16", "int8"):
        amax = _activation_ranges(model, data.calibration, batch, axes)
        rows.append(_fp16_scan(model, amax, options.fp16_margin))
    details: dict[str, Any] = {"tensorrt": options.tensorrt, "jetpack": options.jetpack, "l4t": options.l4t,
                               "sm": options.sm, "dla_core": options.dla_core, "op_table": table.describe(),
                               "parity": "host-proxy: the TensorRT-ready ONNX run by ONNX Runtime on the build "
                                         "host's CPU, never engine numbers", **facts}
    runtime: dict[str, Any] = {"model": MODEL, "precision": profile.precision, "tensorrt": options.tensorrt,
                               "l4t": options.l4t, "sm": options.sm, "dla_core": options.dla_core,
                               "proxy_fp16": profile.precision == "fp16"}
    if profile.precision == "int8":
        quant = {"method": options.calibration_method, "percentile": options.percentile,
                 "exclude_nodes": options.exclude_nodes, "exclude_op_types": options.exclude_op_types}
        ac = options.accuracy_control
        tuning = data.search_tuning()
        if ac is not None and data.tuning:
            details["int8"] = qdq.search(out_dir / MODEL, out_dir / QDQ_MODEL, data.calibration, data.tuning, batch,
                                         max_drop=ac.max_drop, max_iterations=ac.max_iterations, **quant)
            details["int8"]["accuracy_control"]["note"] = ("steered by the tuning split, disjoint from the holdout "
                                                           "split the parity report is computed on")
        elif tuning is not None and options.accuracy_search.enabled:
            from edgepack import quantsearch
            from edgepack.backends.tensorrt.search import TrtSpace

            space = TrtSpace(out_dir / MODEL, out_dir / ".search", data.calibration, batch, options)
            # one search per distinct problem in a build: the Jetson INT8 profiles quantize the same graph with the
            # same data, settings and budget (the IR version and the device are not part of it)
            key = quantsearch.problem_key("tensorrt", profile.precision, model.graph.SerializeToString(),
                                          opset_of(model), batch, data.calibration, data.tuning,
                                          data.tuning_reference, data.tuning_labels, data.limits, data.kinds,
                                          data.output_specs, quant,
                                          options.accuracy_search.model_dump(mode="json"))
            earlier = data.searches.get(key)
            result = None
            if earlier is not None:
                try:
                    result = quantsearch.replay(space, tuning, earlier["search"], earlier["target"])
                except Exception:  # noqa: BLE001 - the earlier choice cannot be rebuilt here: search afresh
                    result = None
            if result is None:
                # scarce data (tuning overlaps calibration): recipes are compared out of sample
                folds = quantsearch.crossfit(lambda cal, j: TrtSpace(out_dir / MODEL, out_dir / f".search-fold{j}",
                                                                     cal, batch, options), data.calibration, tuning)
                try:
                    result = quantsearch.search(space, tuning, options.accuracy_search, folds=folds)
                finally:
                    quantsearch.close_folds(folds)
            shutil.move(str(result.candidate), str(out_dir / QDQ_MODEL))
            shutil.rmtree(out_dir / ".search", ignore_errors=True)
            details["accuracy_search"] = {**result.to_dict(), "problem": key}
            details["accuracy_search"]["where"] = ("host-proxy: candidates judged in ONNX Runtime CPU on the tuning "
                                                   "split, never engine numbers")
            details["int8"] = {"quantizer": "onnxruntime quantize_static (QDQ)", "activations": "int8 symmetric "
                               "per-tensor", "weights": "int8 symmetric per-channel", "bias": "float (not quantized)",
                               "calibration_method": result.recipe.settings["method"],
                               "excluded_nodes": list(options.exclude_nodes) + list(result.float_layers)}
        else:
            details["int8"] = qdq.quantize(out_dir / MODEL, out_dir / QDQ_MODEL, data.calibration, batch, **quant)
        qmodel = onnx.load(str(out_dir / QDQ_MODEL))
        lint = qdq.lint(qmodel)
        if lint.quantized_weighted_ops == 0:
            raise ConversionFailed("int8 was asked for but no Conv/Gemm/MatMul came out quantized",
                                   hint="check options.exclude_nodes / exclude_op_types in the target profile")
        adds = ", ".join(f"{k}: {v}/2" for k, v in list(lint.residual_adds.items())[:6])
        rows.append(_row("trt: Q/DQ lint (INT8 signed, zero-point 0, per-tensor activations, per-channel weights, "
                         "float bias)", float(len(lint.problems)), 0.0, lint.passed, "<=",
                         "; ".join(lint.problems[:5]) or
                         f"{lint.quantize_nodes} Q / {lint.dequantize_nodes} DQ; {lint.quantized_weighted_ops}/"
                         f"{lint.weighted_ops} weighted ops quantized" + (f"; residual Add inputs via DQ: {adds}"
                                                                          if adds else "")))
        scales = qdq.float_names(qmodel, model, lint.activation_scales)
        cache.write(out_dir / CACHE, options.tensorrt, scales)
        tensors = {t for n in model.graph.node for t in (*n.input, *n.output)} | {i.name for i in model.graph.input}
        clint = cache.lint(out_dir / CACHE, options.tensorrt, tensors, scales)
        rows.append(_row("trt: calibration cache lint (header, version, tensors, scale = Q/DQ scale)",
                         float(len(clint.problems)), 0.0, clint.passed, "<=",
                         "; ".join(clint.problems[:5]) or f"{cache.header(options.tensorrt)}, {clint.tensors} tensors"))
        details.update(quantized_weighted_ops=lint.quantized_weighted_ops, weighted_ops=lint.weighted_ops,
                       calibration_cache=cache.header(options.tensorrt),
                       cache_coverage=f"{len(scales)}/{len(lint.activation_scales)} Q/DQ activation scales")
        runtime.update(qdq_model=QDQ_MODEL, calibration_cache=CACHE, proxy_model=QDQ_MODEL)
    cfg = buildscript.plan(options, profile.precision, shapes, profile.name)
    buildscript.write(out_dir, cfg)
    details["build"] = {"trtexec": cfg["command"], "onnx": cfg["onnx"], "calib": cfg["calib"] or None,
                        "strongly_typed": cfg["strongly_typed"], "shapes": shapes}
    details["host_checks"] = rows
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    primary = QDQ_MODEL if profile.precision == "int8" and options.dla_core is None else MODEL
    return Artifact(
        backend="tensorrt", precision=profile.precision, primary=primary, files=files,
        model_files=[primary] + ([CACHE] if profile.precision == "int8" and options.dla_core is not None else []),
        inputs=list(source.inputs), outputs=list(source.outputs), layout="nchw",
        runtime=TensorRTRuntime(**runtime).model_dump(mode="json"), details=details,
        notes=[f"engine built on the device by build_engine.sh / build_engine.py (TensorRT {options.tensorrt}, "
               f"sm_{options.sm}); host parity is host-proxy (ONNX Runtime CPU), not engine numbers"],
        warnings=[r["name"] + ": " + r["note"] for r in rows if not r["passed"]],
    )

"""Core ML conversion (worker side): a PyTorch or Keras/TensorFlow source → ``model.mlpackage``.

Routes
    torch  ``torch.export`` (ATen dialect) → ``coremltools.convert(convert_to="mlprogram")``; if export or its
           conversion fails, the TorchScript trace is converted instead and the artifact says so.
    tf     one explicit concrete function (batch 1, the source's input names; see ``sources.keras.tf_function``) →
           coremltools' TF2 frontend. Works with the pinned TF 2.21 although coremltools only tests up to TF 2.12
           (the artifact records the versions). Passing a SavedModel folder instead fails ("Only a single concrete
           function is supported": Keras exports carry two endpoints). Inputs stay channel-last (NHWC);
           ``input_type = "image"`` is PyTorch-only for now.
coremltools imports every framework it finds; the worker hides the one it does not need (TensorFlow and torch in one
process have crashed here). Frameworks are imported inside the functions, never at module import.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.coreml.compression import compress
from edgepack.backends.coreml.overrides import explain_unsupported, register_overrides
from edgepack.backends.coreml.spec import (ACCEPTS, COMPRESSED, PRIMARY, REFUSALS, CoreMLClassifier, CoreMLImage,
                                           CoreMLInput, CoreMLOptions, CoreMLRuntime)
from edgepack.errors import ConfigError, ConversionFailed, UnsupportedConversion

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source


def convert(source: "Source", profile: "TargetProfile", options: CoreMLOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    """Convert in this (worker) process; writes ``out_dir/model.mlpackage``. ``data`` is not used (data-free)."""
    del data
    refuse_unsupported(source, profile, options)
    if source.kind == "tf":
        return _convert_tf(source, profile, options, Path(out_dir))
    with _hidden("tensorflow", "keras"):  # coremltools imports every framework it finds; TF + torch segfault here
        return _convert_torch(source, profile, options, Path(out_dir))


def refuse_unsupported(source: "Source", profile: "TargetProfile", opts: CoreMLOptions) -> None:
    """Source kinds, layouts and option combinations Core ML cannot take, refused before any framework loads."""
    if source.kind not in ACCEPTS:
        raise UnsupportedConversion(
            f"the coreml backend converts PyTorch and Keras/TensorFlow sources, not {source.kind}",
            hint=REFUSALS.get(source.kind))
    if source.kind == "tf" and opts.input_type == "image":
        raise ConfigError(f"{profile.name}: input_type 'image' is supported for PyTorch (NCHW) sources only",
                          hint="use input_type = 'tensor' for Keras/TensorFlow models")
    if source.kind == "tf" and profile.layout == "nchw":
        raise UnsupportedConversion("Keras/TensorFlow models are channel-last (NHWC); Core ML keeps their layout",
                                    hint='drop layout = "nchw" from the target profile')
    ios = int(re.sub(r"\D", "", opts.minimum_deployment_target))
    ios = ios + 3 if opts.minimum_deployment_target.startswith("macOS") else ios  # macOS12 ≙ iOS15
    if profile.precision in COMPRESSED and ios < 16:
        raise ConfigError(f"{profile.name}: compressed weights ({profile.precision}) need minimum_deployment_target "
                          f"iOS16 or later, not {opts.minimum_deployment_target}", hint="set it to iOS16")
    if profile.dynamic_batch or any(d is None for t in source.inputs for d in t.shape):
        raise UnsupportedConversion("coreml bundles are built for a fixed input shape",
                                    hint="give concrete --input shapes and set dynamic_batch = false")
    if opts.input_type == "image":
        if len(source.inputs) != 1 or len(source.inputs[0].shape) != 4:
            raise ConfigError(f"{profile.name}: input_type 'image' needs one NCHW input",
                              hint="use input_type = 'tensor' for other models")
        channels = source.inputs[0].shape[1]
        if (opts.color_layout == "GRAYSCALE") != (channels == 1) or channels not in (1, 3):
            raise ConfigError(f"{profile.name}: color_layout {opts.color_layout} does not fit {channels} channels",
                              hint="GRAYSCALE for 1 channel, RGB or BGR for 3")
        if len(opts.image_bias) not in (1, channels):
            raise ConfigError(f"{profile.name}: image_bias needs 1 or {channels} values")
    if opts.class_labels is not None and (len(source.outputs) != 1 or len(source.outputs[0].shape) != 2):
        raise ConfigError(f"{profile.name}: class_labels need a model with one (batch, classes) output")
    if opts.class_labels is not None and source.outputs[0].shape[1] != len(opts.class_labels):
        raise ConfigError(f"{profile.name}: {len(opts.class_labels)} class_labels for "
                          f"{source.outputs[0].shape[1]} model outputs")


@contextlib.contextmanager
def _hidden(*packages: str):
    """Make packages unimportable (only those not imported yet) while coremltools loads and converts.

    A ``None`` entry in sys.modules makes ``import`` raise ModuleNotFoundError and ``importlib.util.find_spec``
    return None (torch._dynamo probes optional packages that way), so coremltools skips that framework.
    """
    hidden = [p for p in packages if p not in sys.modules]
    for p in hidden:
        sys.modules[p] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for p in hidden:
            if sys.modules.get(p, 0) is None:
                del sys.modules[p]


def _source_output_names(ct: Any, mlmodel: Any, source: "Source", opts: CoreMLOptions) -> Any:
    """The source's output names back on the program when coremltools made them identifiers (an ONNX model's
    ``softmax_11.tmp_0`` or ``name/0`` reached through the onnx → torch bridge); order is the source's."""
    if opts.class_labels:
        return mlmodel
    spec = mlmodel.get_spec()
    got, want = [o.name for o in spec.description.output], [t.name for t in source.outputs]
    if got == want or len(got) != len(want):
        return mlmodel
    _rename(spec, dict(zip(got, want)))
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def _rename(spec: Any, names: dict[str, str]) -> None:
    """Rename I/O features and the program variables behind them in one pass (so swaps and classifiers work)."""
    taken = {o.name for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
             for op in b.operations for o in op.outputs} - set(names)
    clash = sorted(set(names.values()) & taken)
    if clash:
        raise ConversionFailed(f"Core ML program already has variable(s) named {', '.join(clash)}",
                               hint="rename those model outputs")
    for f in list(spec.description.input) + list(spec.description.output):
        f.name = names.get(f.name, f.name)
    spec.description.predictedProbabilitiesName = names.get(spec.description.predictedProbabilitiesName,
                                                            spec.description.predictedProbabilitiesName)
    for fn in spec.mlProgram.functions.values():
        for nvt in fn.inputs:
            nvt.name = names.get(nvt.name, nvt.name)
        for block in fn.block_specializations.values():
            block.outputs[:] = [names.get(n, n) for n in block.outputs]
            for op in block.operations:
                for arg in op.inputs.values():
                    for binding in arg.arguments:
                        if binding.HasField("name"):
                            binding.name = names.get(binding.name, binding.name)
                for nvt in op.outputs:
                    nvt.name = names.get(nvt.name, nvt.name)


def _convert_tf(source: "Source", profile: "TargetProfile", opts: CoreMLOptions, out_dir: Path) -> Artifact:
    """Keras model or SavedModel signature → one concrete function → coremltools' TF2 frontend (worker side)."""
    import tensorflow as tf

    from edgepack.sources.keras import tf_function

    started = time.perf_counter()
    fn, _model = tf_function(source, batch=1)  # named inputs, dict of named outputs; keeps the model alive
    in_names = [t.name for t in source.inputs]

    @tf.function(input_signature=fn.input_signature)
    def serve(*args):  # noqa: ANN002 - a list in the source's output order (a dict would flatten sorted)
        out = fn(*args)
        return [out[t.name] for t in source.outputs]

    concrete = serve.get_concrete_function()
    graph_in = [t.name.split(":")[0] for t in concrete.inputs[:len(source.inputs)]]  # then captured variables
    graph_out = [t.name.split(":")[0] for t in concrete.outputs]  # "Identity", "Identity_1", …
    fp32 = profile.precision == "fp32"
    io_dtype = np.float32 if (fp32 or opts.fp32_io) else None
    with _hidden("torch"):
        import coremltools as ct

        kwargs = dict(
            inputs=[ct.TensorType(name=g, shape=t.concrete_shape(1), dtype=io_dtype)
                    for g, t in zip(graph_in, source.inputs)],
            outputs=[ct.TensorType(name=g, dtype=io_dtype) for g in graph_out],
            source="tensorflow", convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, opts.minimum_deployment_target),
            compute_units=ct.ComputeUnit[opts.compute_units],
            classifier_config=ct.ClassifierConfig(list(opts.class_labels)) if opts.class_labels else None,
            skip_model_load=True)
        try:
            mlmodel = ct.convert([concrete], **kwargs)
        except Exception as e:  # noqa: BLE001 - converter errors are arbitrary
            explained = explain_unsupported(e, None)
            if explained is not None:
                raise explained from None
            line = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise ConversionFailed(f"Core ML conversion of the TensorFlow function failed ({type(e).__name__}: {line})",
                                   hint="coremltools tests its TF2 frontend up to TF 2.12 only; if an op is the "
                                        "problem, export the PyTorch original or use the tflite target") from None
        spec = mlmodel.get_spec()
        _rename(spec, dict(zip(graph_in + graph_out, in_names + [t.name for t in source.outputs])))
        mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        compression: dict[str, Any] = {}
        if profile.precision in COMPRESSED:
            mlmodel, compression = compress(mlmodel, profile.precision, opts.weight_threshold)
        route = "tf.function"
        _describe(mlmodel, source, profile, opts, route)
        out_dir.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(out_dir / PRIMARY))
    seconds = time.perf_counter() - started
    return _artifact(source, profile, opts, out_dir, route, compression, [], seconds,
                     versions={"coremltools": ct.__version__, "tensorflow": tf.__version__})


def _convert_torch(source: "Source", profile: "TargetProfile", opts: CoreMLOptions, out_dir: Path) -> Artifact:
    import coremltools as ct
    import torch

    from edgepack.sources.torch import build_module, example_args

    started = time.perf_counter()
    register_overrides()
    module = build_module(source)
    args = example_args(source)
    fp32 = profile.precision == "fp32"
    io_dtype = np.float32 if (fp32 or opts.fp32_io) else None

    if opts.input_type == "image":
        t = source.inputs[0]
        bias = list(opts.image_bias) * (t.shape[1] if len(opts.image_bias) == 1 else 1)
        layout = {"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR}.get(opts.color_layout)
        if layout is None:
            fp16_gray = not fp32 and not opts.fp32_io
            layout = ct.colorlayout.GRAYSCALE_FLOAT16 if fp16_gray else ct.colorlayout.GRAYSCALE
            bias = bias[:1]
        ct_inputs = [ct.ImageType(name=t.name, shape=t.concrete_shape(1), scale=opts.image_scale,
                                  bias=bias if len(bias) > 1 else bias[0], color_layout=layout)]
    else:
        ct_inputs = [ct.TensorType(name=t.name, shape=t.concrete_shape(1), dtype=io_dtype) for t in source.inputs]
    ct_outputs = [ct.TensorType(name=t.name, dtype=io_dtype) for t in source.outputs]
    classifier = ct.ClassifierConfig(list(opts.class_labels)) if opts.class_labels else None

    kwargs = dict(inputs=ct_inputs, outputs=ct_outputs, convert_to="mlprogram",
                  compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
                  minimum_deployment_target=getattr(ct.target, opts.minimum_deployment_target),
                  compute_units=ct.ComputeUnit[opts.compute_units], classifier_config=classifier,
                  skip_model_load=True)
    warnings: list[str] = []
    failures: list[tuple[str, Exception, Any]] = []
    mlmodel, route = None, None
    with torch.no_grad():
        if opts.route in ("auto", "export"):
            ep = None
            try:
                ep = torch.export.export(module, args).run_decompositions({})
                mlmodel, route = ct.convert(ep, **kwargs), "torch.export"
            except Exception as e:  # noqa: BLE001 - try the trace route, and say so
                failures.append(("torch.export", e, ep))
        if mlmodel is None and opts.route in ("auto", "trace"):
            traced = None
            try:
                traced = torch.jit.trace(module, args, check_trace=False)
                mlmodel, route = ct.convert(traced, **kwargs), "trace"
            except Exception as e:  # noqa: BLE001
                failures.append(("trace", e, traced))
    if mlmodel is None:
        for _, err, prog in failures:
            explained = explain_unsupported(err, prog)
            if explained is not None:
                raise explained
        detail = "; ".join(f"{r}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                           for r, e, _ in failures)
        raise ConversionFailed(f"Core ML conversion failed ({detail})")
    if failures:
        r, e, _ = failures[0]
        warnings.append(f"{r} route failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                        f"converted via {route}")
    mlmodel = _source_output_names(ct, mlmodel, source, opts)

    compression: dict[str, Any] = {}
    if profile.precision in COMPRESSED:
        mlmodel, compression = compress(mlmodel, profile.precision, opts.weight_threshold)

    _describe(mlmodel, source, profile, opts, route)
    out_dir.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out_dir / PRIMARY))
    seconds = time.perf_counter() - started
    return _artifact(source, profile, opts, out_dir, route, compression, warnings, seconds,
                     versions={"coremltools": ct.__version__, "torch": torch.__version__})


def _describe(mlmodel: Any, source: "Source", profile: "TargetProfile", opts: CoreMLOptions, route: str) -> None:
    """App-facing metadata: author, license, version, description, per-feature descriptions."""
    md = profile.metadata
    mlmodel.author = md.author or "edgepack"
    mlmodel.license = md.license
    mlmodel.version = md.version
    mlmodel.short_description = md.description or profile.description or f"{source.name}, converted by edgepack"
    mlmodel.user_defined_metadata.update({"edgepack.target": profile.name, "edgepack.precision": profile.precision,
                                          "edgepack.route": route})
    names_in = {f.name for f in mlmodel.get_spec().description.input}
    for t in source.inputs:
        if t.name in names_in:
            default = (f"image {t.shape[-1]}x{t.shape[-2]} {opts.color_layout}" if opts.input_type == "image"
                       else f"{t.dtype} tensor {t.shape_str()}")
            mlmodel.input_description[t.name] = opts.input_descriptions.get(t.name, default)
    for f in mlmodel.get_spec().description.output:
        default = {"classLabel": "most likely class"}.get(f.name, f"model output '{f.name}'")
        mlmodel.output_description[f.name] = opts.output_descriptions.get(f.name, default)


def _artifact(source: "Source", profile: "TargetProfile", opts: CoreMLOptions, out_dir: Path, route: str,
              compression: dict[str, Any], warnings: list[str], seconds: float, versions: dict[str, str]) -> Artifact:
    """Check the saved program's I/O against the source, then describe it: runtime spec for runners, details."""
    from edgepack.backends.coreml.mil import Evaluator, proto

    pkg = out_dir / PRIMARY
    files = sorted(p.relative_to(out_dir).as_posix() for p in pkg.rglob("*") if p.is_file())
    ev = Evaluator(pkg)
    prog = ev.program
    names_in = [n for n, _ in prog.inputs]
    if sorted(names_in) != sorted(t.name for t in source.inputs):
        raise ConversionFailed(f"Core ML inputs {names_in} do not match the source's {[t.name for t in source.inputs]}")
    layout = "nhwc" if source.kind == "tf" else "nchw"
    image = None
    if opts.input_type == "image":
        channels = source.inputs[0].shape[1]
        bias = list(opts.image_bias) * (channels if len(opts.image_bias) == 1 else 1)
        model_pb2, _ = proto.modules()
        feature = next(f for f in prog.description.input if f.name == source.inputs[0].name)
        space = model_pb2.ImageFeatureType.ColorSpace.Name(feature.type.imageType.colorSpace)  # as saved
        image = CoreMLImage(scale=opts.image_scale, bias=bias[:channels], color_layout=space)
    classifier = None
    if opts.class_labels:
        classifier = CoreMLClassifier(labels=list(opts.class_labels), scores=source.outputs[0].name,
                                      output=prog.description.predictedProbabilitiesName)
    elif sorted(prog.outputs) != sorted(t.name for t in source.outputs):
        raise ConversionFailed(f"Core ML outputs {prog.outputs} do not match the source's "
                               f"{[t.name for t in source.outputs]}")
    runtime = CoreMLRuntime(package=PRIMARY, compute_units=opts.compute_units,
                            compute_precision="fp32" if profile.precision == "fp32" else "fp16",
                            inputs=[CoreMLInput(name=t.name, layout=layout, image=image) for t in source.inputs],
                            classifier=classifier)
    details: dict[str, Any] = {
        "route": route, "converter": versions, "minimum_deployment_target": opts.minimum_deployment_target,
        "opset": prog.opset, "ops": _op_counts(prog), "convert_seconds": round(seconds, 3),
        "package_bytes": sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file()),
        "io_dtypes": {n: t.dtype for n, t in prog.inputs}
        | {n: getattr(prog.output_types.get(n), "dtype", "dictionary") for n in prog.outputs},
    }
    if compression:
        details["compression"] = compression
    if ev.unsupported:
        missing = sorted({t for t, _ in ev.unsupported})
        warnings.append(f"edgepack's Core ML evaluator lacks op(s) {', '.join(missing)}: host parity will be "
                        "deferred to a device")
    return Artifact(backend="coreml", precision=profile.precision, primary=PRIMARY, files=files,
                    inputs=list(source.inputs), outputs=list(source.outputs), layout=layout,
                    runtime=runtime.model_dump(mode="json"), details=details, warnings=warnings)


def _op_counts(prog: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in prog.ops:
        if o.type != "const":
            counts[o.type] = counts.get(o.type, 0) + 1
    return dict(sorted(counts.items()))

"""Core ML backend: PyTorch or Keras/TensorFlow → ``.mlpackage`` (ML program), checked on any OS by our evaluator.

Precisions
    ``fp32``       fp32 weights and compute.
    ``fp16``       fp16 weights and compute (Core ML's default for ML programs).
    ``w8``         fp16 program whose weights are 8-bit linear-quantized (symmetric, per output channel).
    ``palette6``   fp16 program whose weights are 6-bit palettized (k-means look-up table per tensor).
    ``palette4``   the same with 4-bit tables.
Compression is data-free (``coremltools.optimize.coreml``); calibration data is not used. Compressed weights need
``minimum_deployment_target`` iOS16 or later.

Routes
    torch  ``torch.export`` (ATen dialect) → ``coremltools.convert(convert_to="mlprogram")``; if export or its
           conversion fails, the TorchScript trace is converted instead and the artifact says so.
    tf     one explicit concrete function (batch 1, the source's input names; see ``sources.keras.tf_function``) →
           coremltools' TF2 frontend. Works with the pinned TF 2.21 although coremltools only tests up to TF 2.12
           (the artifact records the versions). Passing a SavedModel folder instead fails ("Only a single concrete
           function is supported": Keras exports carry two endpoints). Inputs stay channel-last (NHWC);
           ``input_type = "image"`` is PyTorch-only for now.
coremltools imports every framework it finds; the worker hides the one it does not need (TensorFlow and torch in one
process have crashed here).

Parity: coremltools cannot predict off macOS, so the host runner executes the saved program with
``edgepack.backends.coreml_eval`` (numpy; fp16 emulated op by op). On macOS, ``MLModel.predict`` is used.
"""

from __future__ import annotations

import contextlib
import platform
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgepack.backends.base import Artifact, Backend, Runner
from edgepack.errors import ConfigError, ConversionFailed, UnsupportedConversion

if TYPE_CHECKING:
    from edgepack.calibration import CalibrationData
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

PRIMARY = "model.mlpackage"
COMPRESSED = {"w8": "8-bit linear (symmetric, per-channel)", "palette6": "6-bit palette (k-means)",
              "palette4": "4-bit palette (k-means)"}


class CoreMLOptions(BaseModel):
    """``[options]`` of a coreml target profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum_deployment_target: Literal["iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14",
                                       "macOS15"] = "iOS16"
    compute_units: Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"] = "ALL"
    input_type: Literal["tensor", "image"] = "tensor"
    image_scale: float = Field(1.0, description="pixel → model input: x = pixel * scale + bias (image inputs)")
    image_bias: tuple[float, ...] = Field((0.0,), description="one value, or one per channel")
    color_layout: Literal["RGB", "BGR", "GRAYSCALE"] = "RGB"
    fp32_io: bool = Field(False, description="keep fp32 inputs/outputs on fp16 programs (casts inside the model)")
    class_labels: list[str] | None = Field(None, description="makes the model a classifier with these labels")
    input_descriptions: dict[str, str] = Field(default_factory=dict)
    output_descriptions: dict[str, str] = Field(default_factory=dict)
    weight_threshold: int = Field(2048, ge=0, description="compress only weights with more elements than this")
    route: Literal["auto", "export", "trace"] = "auto"


# ------------------------------------------------------------------------------------------ runner


class CoreMLRunner(Runner):
    """Runs the saved package: ``MLModel.predict`` on macOS, edgepack's numpy evaluator elsewhere."""

    def activate_impl(self) -> None:
        info = self.artifact.info
        self._pixel = info.get("image")  # {"scale":…, "bias":[…]} when the model takes images
        self._probs = info.get("classifier_probabilities")  # program var holding class scores
        self._mlmodel = None
        if platform.system() == "Darwin" and not info.get("force_evaluator"):
            try:
                import coremltools as ct

                self._mlmodel = ct.models.MLModel(str(self.bundle_dir / self.artifact.primary),
                                                  compute_units=ct.ComputeUnit[info.get("compute_units", "ALL")])
                self.facts.update({"runtime": "MLModel.predict", "compute_units": info.get("compute_units", "ALL")})
                return
            except Exception:  # noqa: BLE001 - fall back to the evaluator, and say so
                self.facts["mlmodel_unavailable"] = True
        from edgepack.backends.coreml_eval import Evaluator

        self._eval = Evaluator(self.bundle_dir / self.artifact.primary)
        self._eval.ensure_supported()  # RuntimeUnavailable naming the op → parity "deferred to device"
        self.facts.update({"runtime": "edgepack Core ML evaluator (numpy)",
                           "precision": "fp16 emulated per op" if info.get("compute_precision") == "fp16" else "fp32"})

    def _to_model(self, name: str, x: np.ndarray) -> np.ndarray:
        if self._pixel:  # the program scales pixels itself: feed the pixels that give this input
            bias = np.asarray(self._pixel["bias"], np.float32).reshape((1, -1) + (1,) * (x.ndim - 2))
            x = (x.astype(np.float32) - bias) / np.float32(self._pixel["scale"])
        return x

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {t.name: self._to_model(t.name, np.asarray(feed[t.name])) for t in self.artifact.inputs}
        want = [t.name for t in self.artifact.outputs]
        if self._mlmodel is not None:
            return self._predict(feed, want)
        extra = [self._probs] if self._probs else []
        out = self._eval.run(feed, extra=extra)
        if self._probs:
            out = {want[0]: out[self._probs]}
        return {t.name: np.asarray(out[t.name]).astype(t.dtype) for t in self.artifact.outputs}

    def _predict(self, feed: dict[str, np.ndarray], want: list[str]) -> dict[str, np.ndarray]:
        from PIL import Image

        args: dict[str, Any] = {}
        for t in self.artifact.inputs:
            x = feed[t.name]
            if self._pixel:
                hwc = np.clip(np.round(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
                args[t.name] = Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc)
            else:
                args[t.name] = x
        out = self._mlmodel.predict(args)
        if self._probs:
            labels = self.artifact.info["class_labels"]
            scores = out[self.artifact.info["classifier_output"]]
            return {want[0]: np.array([[scores[c] for c in labels]], np.float32)}
        return {t.name: np.asarray(out[t.name]).astype(t.dtype) for t in self.artifact.outputs}


# ------------------------------------------------------------------------------------------ backend


class CoreMLBackend(Backend):
    name: ClassVar[str] = "coreml"
    requires: ClassVar[tuple[str, ...]] = ("coremltools",)
    extra: ClassVar[str] = "coreml"
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "tf"})
    refusals: ClassVar[dict[str, str]] = {
        "onnx": "Core ML converts PyTorch and Keras/TensorFlow models: give the original model, not its ONNX export"}
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32", "fp16", *COMPRESSED})
    Options: ClassVar[type[BaseModel]] = CoreMLOptions
    description: ClassVar[str] = "Core ML ML programs (.mlpackage) for iOS/macOS; parity checked on any OS"

    def convert(self, source: "Source", target: "TargetProfile", calib: "CalibrationData | None",
                out_dir: Path) -> Artifact:
        """Convert in this (worker) process; writes ``out_dir/model.mlpackage``. Calibration data is not used."""
        opts = CoreMLOptions.model_validate(target.options)
        _refuse_unsupported(source, target, opts)
        if source.kind == "tf":
            return _convert_tf(source, target, opts, Path(out_dir))
        with _hidden("tensorflow", "keras"):  # coremltools imports every framework it finds; TF + torch segfault here
            return _convert_torch(source, target, opts, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        return CoreMLRunner(artifact, bundle_dir, threads)


# ------------------------------------------------------------------------------------------ conversion (worker side)


def _refuse_unsupported(source: "Source", target: "TargetProfile", opts: CoreMLOptions) -> None:
    if source.kind not in CoreMLBackend.accepts:
        raise UnsupportedConversion(
            f"the coreml backend converts PyTorch and Keras/TensorFlow sources, not {source.kind}",
            hint=CoreMLBackend.refusals.get(source.kind))
    if source.kind == "tf" and opts.input_type == "image":
        raise ConfigError(f"{target.name}: input_type 'image' is supported for PyTorch (NCHW) sources only",
                          hint="use input_type = 'tensor' for Keras/TensorFlow models")
    if source.kind == "tf" and target.layout == "nchw":
        raise UnsupportedConversion("Keras/TensorFlow models are channel-last (NHWC); Core ML keeps their layout",
                                    hint='drop layout = "nchw" from the target profile')
    ios = int(re.sub(r"\D", "", opts.minimum_deployment_target))
    ios = ios + 3 if opts.minimum_deployment_target.startswith("macOS") else ios  # macOS12 ≙ iOS15
    if target.precision in COMPRESSED and ios < 16:
        raise ConfigError(f"{target.name}: compressed weights ({target.precision}) need minimum_deployment_target "
                          f"iOS16 or later, not {opts.minimum_deployment_target}", hint="set it to iOS16")
    if target.dynamic_batch or any(d is None for t in source.inputs for d in t.shape):
        raise UnsupportedConversion("coreml bundles are built for a fixed input shape",
                                    hint="give concrete --input shapes and set dynamic_batch = false")
    if opts.input_type == "image":
        if len(source.inputs) != 1 or len(source.inputs[0].shape) != 4:
            raise ConfigError(f"{target.name}: input_type 'image' needs one NCHW input",
                              hint="use input_type = 'tensor' for other models")
        channels = source.inputs[0].shape[1]
        if (opts.color_layout == "GRAYSCALE") != (channels == 1) or channels not in (1, 3):
            raise ConfigError(f"{target.name}: color_layout {opts.color_layout} does not fit {channels} channels",
                              hint="GRAYSCALE for 1 channel, RGB or BGR for 3")
        if len(opts.image_bias) not in (1, channels):
            raise ConfigError(f"{target.name}: image_bias needs 1 or {channels} values")
    if opts.class_labels is not None and (len(source.outputs) != 1 or len(source.outputs[0].shape) != 2):
        raise ConfigError(f"{target.name}: class_labels need a model with one (batch, classes) output")
    if opts.class_labels is not None and source.outputs[0].shape[1] != len(opts.class_labels):
        raise ConfigError(f"{target.name}: {len(opts.class_labels)} class_labels for "
                          f"{source.outputs[0].shape[1]} model outputs")


def _register_overrides() -> None:
    """Converter fixes for the pinned coremltools 9.0 (process-wide; conversion runs in its own worker).

    * ``gelu(approximate="tanh")``: through torch.export the approximation arrives as a keyword argument, which
      coremltools ignores, silently producing exact GELU. The override reads it.
    * ``prelu`` with per-channel slopes on inputs that are not rank 4 (e.g. after a Linear layer): Core ML's
      ``prelu`` op refuses them; the override writes ``relu(x) + alpha * min(x, 0)`` with alpha on axis 1.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, _get_kwinputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    @register_torch_op(override=True)
    def gelu(context, node):  # noqa: ANN001
        inputs = _get_inputs(context, node, min_expected=1)
        approx = inputs[1] if len(inputs) > 1 else (_get_kwinputs(context, node, "approximate", default=["none"])[0])
        approx = getattr(approx, "val", approx)
        mode = "TANH_APPROXIMATION" if approx == "tanh" else "EXACT"
        context.add(mb.gelu(x=inputs[0], mode=mode, name=node.name))

    from coremltools.converters.mil.frontend.torch import ops as torch_ops

    original_prelu = torch_ops.prelu

    @register_torch_op(override=True)
    def prelu(context, node):  # noqa: ANN001
        inputs = _get_inputs(context, node, expected=2)
        x, alpha = inputs
        slopes = np.asarray(alpha.val, np.float32).ravel() if alpha.val is not None else None
        if slopes is None or slopes.size == 1 or x.rank == 4:
            return original_prelu(context, node)
        shape = (1, slopes.size) + (1,) * max(x.rank - 2, 0)
        neg = mb.mul(x=mb.minimum(x=x, y=np.float32(0.0)), y=slopes.reshape(shape))
        context.add(mb.add(x=mb.relu(x=x), y=neg, name=node.name))


_UNSUPPORTED = [re.compile(r"Unsupported fx node (?P<node>\S+), kind (?P<op>[^\s,]+)"),
                re.compile(r"convert function for op '(?P<op>[^']+)' not implemented"),
                re.compile(r"Conversion for TF op '(?P<op>[^']+)' not implemented\.\s*(?:name: \"(?P<node>[^\"]+)\")?")]


def _explain_unsupported(err: Exception, program: Any) -> UnsupportedConversion | None:
    """coremltools names the op only; add the source node and where it comes from in the user's code."""
    text = str(err)
    for pat in _UNSUPPORTED:
        m = pat.search(text)
        if not m:
            continue
        op_name = m.group("op")
        node_name = m.groupdict().get("node")
        where = ""
        graph = getattr(program, "graph", None)
        nodes = getattr(graph, "nodes", [])
        for node in nodes() if callable(nodes) else nodes:
            if not hasattr(node, "meta"):  # TorchScript nodes (trace route) carry no names to report
                continue
            target = str(getattr(node, "target", ""))
            if node.name == node_name or (node_name is None and op_name in (node.name, target.split(".")[-1])):
                node_name = node.name
                stack = node.meta.get("nn_module_stack") or {}
                module = list(stack.values())[-1][0] if stack else ""
                trace = [ln.strip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip()]
                frame = next((ln for ln in reversed(trace) if ln.startswith("File")), "")
                where = ", ".join(p for p in (f"module '{module}'" if module else "", frame) if p)
                break
        node_part = f" at node '{node_name}'" if node_name else ""
        return UnsupportedConversion(
            f"Core ML has no conversion for op '{op_name}'{node_part}" + (f" ({where})" if where else ""),
            hint="rewrite that part of the model with supported ops, or use another target (e.g. ort_mobile)",
        )
    return None


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


def _convert_tf(source: "Source", target: "TargetProfile", opts: CoreMLOptions, out_dir: Path) -> Artifact:
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
    fp32 = target.precision == "fp32"
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
            explained = _explain_unsupported(e, None)
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
        if target.precision in COMPRESSED:
            mlmodel, compression = _compress(mlmodel, target.precision, opts.weight_threshold)
        route = "tf.function"
        _describe(mlmodel, source, target, opts, route)
        out_dir.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(out_dir / PRIMARY))
    seconds = time.perf_counter() - started
    return _artifact(source, target, opts, out_dir, route, compression, [], seconds,
                     versions={"coremltools": ct.__version__, "tensorflow": tf.__version__})


def _convert_torch(source: "Source", target: "TargetProfile", opts: CoreMLOptions, out_dir: Path) -> Artifact:
    import coremltools as ct
    import torch

    from edgepack.sources.torch import build_module, example_args

    started = time.perf_counter()
    _register_overrides()
    module = build_module(source)
    args = example_args(source)
    fp32 = target.precision == "fp32"
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

    ios_name = opts.minimum_deployment_target
    kwargs = dict(inputs=ct_inputs, outputs=ct_outputs, convert_to="mlprogram",
                  compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
                  minimum_deployment_target=getattr(ct.target, ios_name),
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
            explained = _explain_unsupported(err, prog)
            if explained is not None:
                raise explained
        detail = "; ".join(f"{r}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                           for r, e, _ in failures)
        raise ConversionFailed(f"Core ML conversion failed ({detail})")
    if failures:
        r, e, _ = failures[0]
        warnings.append(f"{r} route failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                        f"converted via {route}")

    compression: dict[str, Any] = {}
    if target.precision in COMPRESSED:
        mlmodel, compression = _compress(mlmodel, target.precision, opts.weight_threshold)

    _describe(mlmodel, source, target, opts, route)
    out_dir.mkdir(parents=True, exist_ok=True)
    pkg = out_dir / PRIMARY
    mlmodel.save(str(pkg))
    seconds = time.perf_counter() - started
    return _artifact(source, target, opts, out_dir, route, compression, warnings, seconds,
                     versions={"coremltools": ct.__version__, "torch": torch.__version__})


def _compress(mlmodel: Any, precision: str, threshold: int) -> tuple[Any, dict[str, Any]]:
    import coremltools.optimize.coreml as cto

    if precision == "w8":
        cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                          weight_threshold=threshold)
        out = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
        return out, {"method": "linear_quantize_weights", "dtype": "int8", "mode": "linear_symmetric",
                     "granularity": "per_channel", "weight_threshold": threshold}
    nbits = int(precision.removeprefix("palette"))
    cfg = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_tensor", weight_threshold=threshold)
    out = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
    return out, {"method": "palettize_weights", "nbits": nbits, "mode": "kmeans", "granularity": "per_tensor",
                 "weight_threshold": threshold}


def _describe(mlmodel: Any, source: "Source", target: "TargetProfile", opts: CoreMLOptions, route: str) -> None:
    """App-facing metadata: author, license, version, description, per-feature descriptions."""
    md = target.metadata
    mlmodel.author = md.author or "edgepack"
    mlmodel.license = md.license
    mlmodel.version = md.version
    mlmodel.short_description = md.description or target.description or f"{source.name}, converted by edgepack"
    mlmodel.user_defined_metadata.update({"edgepack.target": target.name, "edgepack.precision": target.precision,
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


def _artifact(source: "Source", target: "TargetProfile", opts: CoreMLOptions, out_dir: Path, route: str,
              compression: dict[str, Any], warnings: list[str], seconds: float, versions: dict[str, str]) -> Artifact:
    from edgepack.backends.coreml_eval import Evaluator

    pkg = out_dir / PRIMARY
    files = sorted(p.relative_to(out_dir).as_posix() for p in pkg.rglob("*") if p.is_file())
    ev = Evaluator(pkg)
    prog = ev.program
    names_in = [n for n, _ in prog.inputs]
    if sorted(names_in) != sorted(t.name for t in source.inputs):
        raise ConversionFailed(f"Core ML inputs {names_in} do not match the source's {[t.name for t in source.inputs]}")
    info: dict[str, Any] = {
        "route": route, "converter": versions, "minimum_deployment_target": opts.minimum_deployment_target,
        "compute_precision": "fp32" if target.precision == "fp32" else "fp16", "compute_units": opts.compute_units,
        "opset": prog.opset, "ops": _op_counts(prog), "convert_seconds": round(seconds, 3),
        "package_bytes": sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file()),
        "io_dtypes": {n: t.dtype for n, t in prog.inputs}
        | {n: getattr(prog.output_types.get(n), "dtype", "dictionary") for n in prog.outputs},
    }
    if compression:
        info["compression"] = compression
    if opts.input_type == "image":
        channels = source.inputs[0].shape[1]
        bias = list(opts.image_bias) * (channels if len(opts.image_bias) == 1 else 1)
        info["image"] = {"scale": opts.image_scale, "bias": bias[:channels], "color_layout": opts.color_layout}
    if opts.class_labels:
        info["class_labels"] = list(opts.class_labels)
        info["classifier_probabilities"] = source.outputs[0].name
        info["classifier_output"] = prog.description.predictedProbabilitiesName
    elif sorted(prog.outputs) != sorted(t.name for t in source.outputs):
        raise ConversionFailed(f"Core ML outputs {prog.outputs} do not match the source's "
                               f"{[t.name for t in source.outputs]}")
    if ev.unsupported:
        missing = sorted({t for t, _ in ev.unsupported})
        warnings.append(f"edgepack's Core ML evaluator lacks op(s) {', '.join(missing)}: host parity will be "
                        "deferred to a device")
    return Artifact(backend="coreml", precision=target.precision, primary=PRIMARY, files=files,
                    inputs=list(source.inputs), outputs=list(source.outputs),
                    layout="nhwc" if source.kind == "tf" else "nchw", info=info,
                    warnings=warnings)


def _op_counts(prog: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in prog.ops:
        if o.type != "const":
            counts[o.type] = counts.get(o.type, 0) + 1
    return dict(sorted(counts.items()))


__all__ = ["CoreMLBackend", "CoreMLOptions", "CoreMLRunner"]

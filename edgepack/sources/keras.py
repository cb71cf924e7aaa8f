"""TensorFlow/Keras sources (kind ``tf``).

* ``.keras`` files, loaded with ``safe_mode=True`` (``Lambda`` layers and other code need ``--trust-model-code``).
* SavedModel folders: one signature, chosen by name (default ``serving_default``). No Python code runs.
* ``.h5`` (legacy HDF5) only with ``--trust-model-code``: its loader has no safe mode.

Tensor names are the ones the model uses: Keras ``Input`` names and ``output_names``, or the signature's
argument and output keys. Everything that imports TensorFlow runs in a worker process (``edgepack.isolation``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError, ConversionFailed, InputError, MissingDependency
from edgepack.feeds import Feeds, run_batched, sha256_file, sha256_tree
from edgepack.isolation import run_isolated
from edgepack.signature import TensorSpec
from edgepack.sources import Source

DEFAULT_SIGNATURE = "serving_default"
REFERENCE_BATCH = 64


def _format(path: Path) -> str:
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputError(f"{path} is a folder without saved_model.pb: not a SavedModel")
        return "savedmodel"
    if path.suffix == ".keras":
        return "keras"
    if path.suffix in (".h5", ".hdf5"):
        return "h5"
    raise InputError(f"{path}: not a .keras/.h5 file or SavedModel folder")


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None) -> Source:
    """Describe a Keras/TensorFlow model; its signature is read in a worker process."""
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingDependency("TensorFlow/Keras sources need tensorflow", hint="pip install -c constraints.txt -e '.[tf]'")
    path = Path(model)
    if not path.exists():
        raise InputError(f"model not found: {model}")
    fmt = _format(path)
    if weights is not None:
        raise ConfigError("--weights goes with a PyTorch module:factory model",
                          hint="Keras and SavedModel files carry their own weights; drop --weights")
    if fmt == "h5" and not trust_code:
        raise ConfigError(f"{model}: legacy .h5 models are loaded without Keras' safe mode",
                          hint="pass --trust-model-code if you trust this file, or re-save it as .keras")
    if signature is not None and fmt != "savedmodel":
        raise ConfigError("--signature applies to SavedModel folders only", hint=f"drop --signature for {fmt} files")
    sig = (signature or DEFAULT_SIGNATURE) if fmt == "savedmodel" else None
    digest = sha256_tree(path) if path.is_dir() else sha256_file(path)
    src = Source(kind="tf", format=fmt, path=str(path.resolve()), name=path.stem if path.is_file() else path.name,
                 inputs=(), trust_code=trust_code, signature=sig, sha256=digest)
    ins, outs = run_isolated(probe, src, what=f"loading TensorFlow model '{model}'")
    if inputs:
        from edgepack.sources.onnx import merge_inputs

        ins = merge_inputs(ins, tuple(inputs), str(path))
    return Source(kind="tf", format=fmt, path=src.path, name=src.name, inputs=ins, outputs=outs,
                  trust_code=trust_code, signature=sig, sha256=digest)


# ------------------------------------------------------------------------------------------ worker side

_KEEP_ALIVE: list = []  # loaded SavedModels must outlive the signature functions taken from them


def _dtype(tf_dtype) -> str:
    return getattr(tf_dtype, "name", str(tf_dtype))


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def build_model(source: Source):
    """The loaded Keras model, or the SavedModel signature function (worker side; imports TensorFlow)."""
    if source.format == "savedmodel":
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(source.path)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{source.path}: cannot load SavedModel ({_short(e)})") from None
        _KEEP_ALIVE.append(loaded)
        sig = source.signature or DEFAULT_SIGNATURE
        if sig not in loaded.signatures:
            names = ", ".join(sorted(loaded.signatures)) or "none"
            raise ConfigError(f"{source.path} has no signature '{sig}'", hint=f"signatures: {names}; use --signature NAME")
        return loaded.signatures[sig]
    import keras

    try:
        return keras.saving.load_model(source.path, compile=False, safe_mode=not source.trust_code)
    except ValueError as e:
        text = str(e)
        if "safe_mode" in text or "lambda" in text.lower():
            raise ConfigError(f"{source.path} holds code (a Lambda layer or custom object) that safe mode refuses",
                              hint="pass --trust-model-code if you trust this file") from None
        raise InputError(f"{source.path}: cannot load Keras model ({_short(e)})") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{source.path}: cannot load Keras model ({_short(e)})",
                         hint="custom layers need their code registered (keras.saving.register_keras_serializable)"
                         " and --trust-model-code") from None


def _keras_names(model) -> tuple[list[str], list[str]]:
    ins = [t.name for t in model.inputs]
    outs = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    return ins, outs


def signature_specs(source: Source, model=None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs as the model declares them (worker side)."""
    model = build_model(source) if model is None else model
    if source.format == "savedmodel":
        args, kwargs = model.structured_input_signature
        if args:
            raise InputError(f"signature '{source.signature}' takes positional arguments; edgepack needs named ones")
        ins = tuple(TensorSpec(k, tuple(s.shape.as_list()), _dtype(s.dtype)) for k, s in sorted(kwargs.items()))
        outs_struct = model.structured_outputs
        if not isinstance(outs_struct, dict):
            outs_struct = {"output_0": outs_struct}
        # the signature's outputs are a map: sorted by name, as TensorFlow flattens them (the same order every load)
        outs = tuple(TensorSpec(k, tuple(s.shape.as_list()), _dtype(s.dtype)) for k, s in sorted(outs_struct.items()))
        return ins, outs
    in_names, out_names = _keras_names(model)
    ins = tuple(TensorSpec(n, tuple(t.shape), _dtype(t.dtype)) for n, t in zip(in_names, model.inputs))
    struct = getattr(model, "_outputs_struct", None)  # a functional model's outputs as declared (dict/list/tensor)
    pairs = sorted(struct.items()) if isinstance(struct, dict) else list(zip(out_names, model.outputs))
    outs = tuple(TensorSpec(n, tuple(t.shape), _dtype(t.dtype)) for n, t in pairs)
    return ins, outs


def probe(source: Source) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return signature_specs(source)


def callable_model(source: Source, model=None):
    """``fn(dict of tensors) -> dict of tensors`` keyed by the source's names (worker side, any TF tensors)."""
    model = build_model(source) if model is None else model
    in_names = [t.name for t in source.inputs]
    out_names = [t.name for t in source.outputs]
    if source.format == "savedmodel":
        def call(feed):
            out = model(**{n: feed[n] for n in in_names})
            return out if isinstance(out, dict) else {out_names[0]: out}
        return call

    def call(feed):
        args = [feed[n] for n in in_names]
        out = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(out, dict):
            return dict(out)
        if isinstance(out, (list, tuple)):
            return dict(zip(out_names, out))
        return {out_names[0]: out}
    return call


def tf_function(source: Source, batch: int | None = 1, model=None):
    """A ``tf.function`` with named inputs and a dict of named outputs (what converters take), plus its owner."""
    import tensorflow as tf

    model = build_model(source) if model is None else model
    call = callable_model(source, model)
    specs = [tf.TensorSpec((batch,) + tuple(t.shape[1:]) if t.shape else (), tf.as_dtype(t.dtype), name=t.name)
             for t in source.inputs]
    names = [t.name for t in source.inputs]

    @tf.function(input_signature=specs)
    def serve(*args):
        return call(dict(zip(names, args)))

    return serve, model


def stage_savedmodel(source: Source, path: Path, batch: int | None = 1) -> Path:
    """Write a SavedModel whose ``serving_default`` signature takes and returns the source's names (worker side).

    Converters read it (variables frozen the standard way); Keras models go through ``keras.export.ExportArchive``.
    """
    import tensorflow as tf

    path = Path(path)
    model = build_model(source)
    fn, _ = tf_function(source, batch=batch, model=model)
    if source.format == "savedmodel":
        tf.saved_model.save(_KEEP_ALIVE[-1], str(path), signatures={DEFAULT_SIGNATURE: fn.get_concrete_function()})
        return path
    import keras

    call = callable_model(source, model)
    names = [t.name for t in source.inputs]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(DEFAULT_SIGNATURE, lambda *args: call(dict(zip(names, args))), input_signature=fn.input_signature)
    archive.write_out(str(path), verbose=False)
    return path


def _run(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    import tensorflow as tf

    from edgepack.core.batching import axes_of

    call = callable_model(source)
    first = source.inputs[0].shape if source.inputs else ()
    fixed = first[0] if first and first[0] is not None else None

    def infer(feed: Feeds) -> Feeds:
        out = call({k: tf.constant(np.ascontiguousarray(v)) for k, v in feed.items()})
        return {k: np.asarray(v) for k, v in out.items()}

    return run_batched(infer, feeds, fixed or REFERENCE_BATCH, axes_of(source.inputs), links, out_axes)


def reference(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    """Golden outputs from TensorFlow (in a worker process)."""
    return run_isolated(_run, source, feeds, links, out_axes, what="TensorFlow reference run")


def _export(source: Source, path: str, opset: int) -> list[str]:
    import onnx
    import tf2onnx

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn, _ = tf_function(source, batch=None if source.inputs and source.inputs[0].dynamic_batch else 1)
    # Freeze every capture first: tf2onnx's from_function leaves some captures of a loaded SavedModel (e.g. the
    # constant kernels of custom layers) as graph inputs nobody feeds ("17390:0"), found only at the host run.
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    in_names = [t.name for t in frozen.inputs]
    if len(in_names) != len(source.inputs):
        raise ConversionFailed(f"TensorFlow → ONNX: freezing left {len(in_names)} graph inputs ({', '.join(in_names)}) "
                               f"for the source's {len(source.inputs)} ({', '.join(t.name for t in source.inputs)})")
    model_proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=in_names,
                                                    output_names=[t.name for t in frozen.outputs], opset=opset)
    # tf2onnx names graph I/O after TensorFlow tensors ("image:0", "Identity:0"); restore the source's names
    rename = {}
    for vi, t in zip(model_proto.graph.input, source.inputs):
        rename[vi.name] = t.name
    for vi, name in zip(model_proto.graph.output, sorted(t.name for t in source.outputs)):  # dicts flatten sorted
        rename[vi.name] = name
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        vi.name = rename.get(vi.name, vi.name)
    for node in model_proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    inits = {i.name for i in model_proto.graph.initializer}
    extra = [i.name for i in model_proto.graph.input if i.name not in inits and i.name not in {t.name for t in
                                                                                            source.inputs}]
    if extra:  # unfrozen variables or captured resources became graph inputs: nobody could feed them
        raise ConversionFailed(f"the TensorFlow → ONNX export has input(s) the model does not have: "
                               f"{', '.join(extra[:8])}{' …' if len(extra) > 8 else ''} (variables or resources "
                               "tf2onnx could not freeze)",
                               hint="targets that take TensorFlow directly (tflite, openvino, coreml) do not need "
                                    "this bridge; for ONNX targets, re-export the model with its variables frozen")
    onnx.save(model_proto, path)
    return [f"tf2onnx {tf2onnx.__version__}, opset {opset}"]


def to_onnx(source: Source, path: Path, opset: int = 17) -> list[str]:
    """Export to ONNX with tf2onnx in a worker; returns notes for the report."""
    return run_isolated(_export, source, str(path), opset, what="TensorFlow → ONNX export (tf2onnx)")

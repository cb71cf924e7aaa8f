"""Worker side: sources → ``ov.Model``, what an IR holds (which compute ops are quantized, which run in int8 on the
CPU plugin), and app metadata in the IR's ``rt_info``.

Only ``openvino`` is imported here at call time. TensorFlow sources are converted in a nested worker process:
``import nncf`` imports torch, and TensorFlow and torch must never share a process. PyTorch sources never get here:
the pipeline hands this backend the build's shared torch → ONNX export instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.openvino import device
from edgepack.errors import ConversionFailed, InputError, UnsupportedConversion, converter_error
from edgepack.feeds import Feeds, run_batched
from edgepack.isolation import run_isolated
from edgepack.signature import TensorSpec

# ov.Model op types that carry weights (what quantization is about)
COMPUTE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                 "MatMul")
# CPU plugin execution-graph layer types of the same ops
RUNTIME_COMPUTE = ("Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution")
INT8_PRECISIONS = ("i8", "u8")
_PASS_THROUGH = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze", "Squeeze")


def partial_shape(spec: TensorSpec):
    import openvino as ov

    return ov.PartialShape([-1 if d is None else d for d in spec.shape])


# ------------------------------------------------------------------------------------------- conversion


def _tf_to_ir(source, xml_path: str) -> str:
    """TensorFlow/Keras source → IR file (runs in its own worker: TensorFlow must not meet torch/nncf).

    Converts edgepack's own ``tf.function`` over the model (named inputs, dict of named outputs), so Keras models
    and SavedModel signatures take one route and keep their tensor names.
    """
    import openvino as ov

    from edgepack.sources import keras as keras_src

    first = source.inputs[0].shape if source.inputs else ()
    fn, _owner = keras_src.tf_function(source, batch=None if (not first or first[0] is None) else first[0])
    ov.save_model(ov.convert_model(fn), xml_path, compress_to_fp16=False)
    return xml_path


def read_source(source, work: Path) -> tuple[Any, str]:
    """The source as an ``ov.Model`` whose input/output tensors carry the source's names, and the route taken."""
    import openvino as ov

    try:
        if source.kind == "onnx":
            model = ov.convert_model(source.path, input=[(t.name, partial_shape(t)) for t in source.inputs])
            route = "onnx → openvino.convert_model"
        elif source.kind == "tf":
            xml = run_isolated(_tf_to_ir, source, str(work / "from_tf.xml"), what="TensorFlow → OpenVINO conversion")
            model = ov.Core().read_model(xml)
            route = f"tf ({source.format}) → openvino.convert_model"
        else:
            raise UnsupportedConversion(f"OpenVINO cannot take {source.kind} sources",
                                        hint="the pipeline bridges other sources to ONNX first")
    except (UnsupportedConversion, ConversionFailed, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - frontends raise assorted errors; the cause line first, all in details
        raise _ov_error(source.kind, e) from None
    name_tensors(model, source.inputs, source.outputs)
    return model, route


def _ov_error(kind: str, e: BaseException) -> ConversionFailed:
    """OpenVINO puts a ``Check '…' failed at <file>.cpp:<line>`` location first; the op list comes later."""
    text = str(e)
    named = re.findall(r"(?:does not support the following \w+ operations?|No conversion rule found for "
                       r"operations?|unconverted operations?)\s*:\s*([^\n]+)", text, re.IGNORECASE)
    if named:
        return ConversionFailed(f"openvino.convert_model cannot convert op(s) of the {kind} source: "
                                f"{named[-1].strip()[:250]}",
                                hint="OpenVINO's frontend has no conversion for these ops; build this model for "
                                     "another backend (`edgepack plan MODEL -t all` shows which can take it)",
                                details=text)
    return converter_error(f"openvino.convert_model failed on the {kind} source", e)


def name_tensors(model, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    """Give the IR's inputs/outputs exactly the source's tensor names: a port that already carries a source name
    keeps its place, the others are named in order (the Keras frontend invents its own names)."""
    if len(model.inputs) != len(inputs) or len(model.outputs) != len(outputs):
        raise ConversionFailed(
            f"the converted model has {len(model.inputs)} inputs/{len(model.outputs)} outputs; the source has "
            f"{len(inputs)}/{len(outputs)}")
    for ports, specs in ((model.inputs, inputs), (model.outputs, outputs)):
        wanted = [t.name for t in specs]
        owner = {}
        for i, port in enumerate(ports):
            for n in port.get_names():
                if n in wanted and n not in owner:
                    owner[n] = i
        free = iter(i for i in range(len(ports)) if i not in owner.values())
        for n in wanted:
            i = owner[n] if n in owner else next(free)
            ports[i].get_tensor().set_names({n})


# ------------------------------------------------------------------------------------------- inspection


def weight_is_int8(node) -> bool:
    """Whether a compute op's weights come from an int8 constant (compressed) or a FakeQuantize."""
    seen = 0
    while seen < 8:
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant":
            return node.get_element_type().get_type_name() in INT8_PRECISIONS
        if t not in _PASS_THROUGH:
            return False
        node = node.input_value(0).get_node()
        seen += 1
    return False


def compute_ops(model) -> dict[str, bool]:
    """Friendly name of every weighted compute op → whether its weights are int8 (quantized)."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in COMPUTE_TYPES and op.get_input_size() > 1:
            out[op.get_friendly_name()] = weight_is_int8(op.input_value(1).get_node())
    return out


def runtime_census(compiled) -> dict[str, Any]:
    """What the CPU plugin actually runs: compute kernels chosen (e.g. ``brgconv_avx512_I8``) and how many compute
    ops run in int8 (runtime precision i8/u8). fp16-stored weights show as runtime precision f16 with f32 kernels."""
    kernels: dict[str, int] = {}
    int8_ops = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if layer not in RUNTIME_COMPUTE:
            continue
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        kernel = rt["primitiveType"].astype(str) if "primitiveType" in rt else prec
        kernels[kernel] = kernels.get(kernel, 0) + 1
        int8_ops += prec in INT8_PRECISIONS
    return {"compute_kernels": dict(sorted(kernels.items())), "int8_runtime_ops": int8_ops}


def compile_f32(model, threads: int = 1):
    """Compile on the CPU plugin exactly as the device loader's parity compile does (f32 inference precision: no
    silent bf16/f16)."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", device.parity_config({"parity_precision": "f32"}, "CPU", threads))


def run_compiled(compiled, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], feeds: Feeds) -> Feeds:
    """Outputs by name for all samples of ``feeds``, in chunks of the model's batch."""
    first = inputs[0].shape if inputs else ()
    batch = None if (not first or first[0] is None) else first[0]
    request = compiled.create_infer_request()

    def infer(feed: Feeds) -> Feeds:
        res = request.infer({t.name: feed[t.name] for t in inputs})
        return {t.name: np.array(res[compiled.output(t.name)]) for t in outputs}

    from edgepack.core.batching import axes_of

    return run_batched(infer, feeds, batch, axes_of(inputs))


# ------------------------------------------------------------------------------------------- app metadata


def app_metadata(preprocess: dict[str, Any], class_names: list[str] | None, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], extra: dict[str, str]) -> dict[tuple[str, ...], str]:
    """rt_info entries: the OpenVINO Model API ``model_info`` section plus edgepack's own, all strings.

    Model API applies ``(pixel - mean_values) / scale_values`` to raw 0-255 pixels; edgepack recipes apply
    ``(pixel * scale - mean) / std``, i.e. mean_values = mean / scale and scale_values = std / scale.
    """
    md: dict[tuple[str, ...], str] = {("edgepack", k): v for k, v in extra.items()}
    if preprocess:
        md[("edgepack", "preprocess")] = json.dumps(preprocess, sort_keys=True)
        scale = float(preprocess.get("scale", 1.0)) or 1.0
        fmt = lambda vals: " ".join(f"{float(v) / scale:g}" for v in vals)  # noqa: E731
        md[("model_info", "mean_values")] = fmt(preprocess.get("mean", (0.0,)))
        md[("model_info", "scale_values")] = fmt(preprocess.get("std", (1.0,)))
        md[("model_info", "reverse_input_channels")] = str(preprocess.get("color") == "bgr")
        if inputs:
            md[("model_info", "layout")] = f"{inputs[0].name}:{str(preprocess.get('layout', 'nchw')).upper()}"
        if preprocess.get("resize"):
            md[("model_info", "resize_type")] = "standard"
    if class_names:
        md[("edgepack", "labels")] = json.dumps(list(class_names))
        if all(" " not in c for c in class_names):
            md[("model_info", "labels")] = " ".join(class_names)
        if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[1] == len(class_names):
            md[("model_info", "model_type")] = "Classification"
    return md


def set_rt_info(model, entries: dict[tuple[str, ...], str]) -> None:
    for path, value in entries.items():
        model.set_rt_info(value, list(path))


def read_rt_info(xml: Path) -> dict[str, dict[str, str]]:
    """The ``model_info`` and ``edgepack`` sections of an IR's rt_info (used by tests and tools)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    out: dict[str, dict[str, str]] = {}
    for section in ("model_info", "edgepack"):
        if model.has_rt_info([section]):
            out[section] = {k: v.astype(str) for k, v in model.get_rt_info([section]).astype(dict).items()}
    return out

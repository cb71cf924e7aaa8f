"""PyTorch sources.

* ``package.module:factory`` or ``path/to/file.py:factory`` (+ optional ``--weights``, a state dict read with
  ``torch.load(..., weights_only=True)``): the user's own code, named explicitly on the command line.
* ``.pt2`` (``torch.export``) and TorchScript files carry code: refused without ``--trust-model-code``.
* format ``onnx-bridged``: the ``.pt2`` the onnx → torch bridge made from an ONNX source (never a user file).

Everything that imports torch runs in a worker process (see ``edgepack.isolation``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError, ConversionFailed, InputError, MissingDependency
from edgepack.feeds import Feeds, sha256_file
from edgepack.isolation import run_isolated
from edgepack.signature import MODEL_SHAPE, TensorSpec
from edgepack.sources import Source

CODE_FORMATS = {".pt2": "exported", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript",
                ".pth": "torchscript"}


def _split_factory(spec: str) -> tuple[str, str]:
    target, _, fn = spec.rpartition(":")
    if not target or not fn.isidentifier():
        raise ConfigError(f"cannot read PyTorch factory '{spec}'",
                          hint="use package.module:function or path/to/file.py:function")
    return target, fn


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None) -> Source:  # noqa: ARG001
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency("PyTorch sources need torch", hint="pip install -c constraints.txt -e '.[torch]'")
    p = Path(model)
    if p.suffix in CODE_FORMATS:
        if not p.is_file():
            raise InputError(f"model not found: {model}")
        if not trust_code:
            raise ConfigError(f"{model}: {CODE_FORMATS[p.suffix]} files carry code that runs when loaded",
                              hint="pass --trust-model-code if you trust this file, or give module:factory + --weights")
        fmt, path, name, digest = CODE_FORMATS[p.suffix], str(p.resolve()), p.stem, sha256_file(p)
    else:
        target, fn = _split_factory(model)
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise InputError(f"model file not found: {target}")
            path = f"{Path(target).resolve()}:{fn}"
            digest = sha256_file(Path(target))
        else:
            path, digest = model, ""
        fmt, name = "factory", fn
    if weights is not None:
        if not Path(weights).is_file():
            raise InputError(f"weights file not found: {weights}")
        if fmt != "factory":
            raise ConfigError("--weights goes with a module:factory model", hint="drop --weights for .pt2/TorchScript")
        weights = str(Path(weights).resolve())
        digest = digest + ":" + sha256_file(Path(weights))
        name = f"{name}-{Path(weights).stem}"  # one factory, many trained weights: one folder each
    shapeless = [t.name for t in inputs if t.shape == MODEL_SHAPE]
    if fmt == "exported":  # the program knows its shapes; declarations are applied by name later
        inputs = tuple(t for t in inputs if t.shape != MODEL_SHAPE)
    elif shapeless:
        raise ConfigError(f"PyTorch model '{model}' needs a shape for input {', '.join(shapeless)}",
                          hint=f"give it, e.g. --input {shapeless[0]}=1x3x224x224 (dtype defaults to float32)")
    if not inputs and fmt != "exported":
        raise ConfigError(f"PyTorch model '{model}' needs its input shapes",
                          hint="add --input NAME=1x3x224x224 for each input (dtype defaults to float32)")
    src = Source(kind="torch", format=fmt, path=path, name=name, inputs=tuple(inputs), weights=weights,
                 trust_code=trust_code, sha256=digest)
    ins, outs = run_isolated(probe, src, what=f"loading PyTorch model '{model}'")
    return Source(kind="torch", format=fmt, path=path, name=name, inputs=ins, outputs=outs, weights=weights,
                  trust_code=trust_code, sha256=digest)


# ------------------------------------------------------------------------------------------ worker side


def _import_factory(path: str):
    target, fn = path.rsplit(":", 1)
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"edgepack_user_{Path(target).stem}", target)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        sys.path.insert(0, str(Path(target).parent))
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise InputError(f"cannot import module '{target}': {e}", hint="check PYTHONPATH or use path/to/file.py:function") from None
    factory = getattr(module, fn, None)
    if factory is None:
        raise InputError(f"'{target}' has no attribute '{fn}'")
    return factory


def build_module(source: Source):
    """Instantiate the nn.Module (worker side), weights loaded with weights_only=True."""
    import torch

    if source.format == "exported":
        return torch.export.load(source.path).module()
    if source.format == BRIDGED:  # the onnx → torch bridge's program: a plain GraphModule (eval(), re-export)
        unlifted = torch.export.load(source.path).module()
        return torch.fx.GraphModule(unlifted, unlifted.graph).eval()
    if source.format == "torchscript":
        return torch.jit.load(source.path, map_location="cpu").eval()
    module = _import_factory(source.path)()
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"factory '{source.path}' returned {type(module).__name__}, not a torch.nn.Module")
    if source.weights:
        try:
            state = torch.load(source.weights, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read weights {source.weights}: {str(e).splitlines()[0][:200]}",
                             hint="weights must be a state dict saved with torch.save(model.state_dict(), path)") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"weights {source.weights} do not fit the model: {str(e).splitlines()[1:2] or e}") from None
    return module.eval()


BRIDGED = "onnx-bridged"  # format of the torch source edgepack.sources.onnx_torch makes from an ONNX model

_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "uint8": "uint8",
                 "int8": "int8", "bool": "bool"}


def example_args(source: Source, batch: int = 1):
    import torch

    return tuple(
        torch.zeros(t.concrete_shape(batch), dtype=getattr(torch, _TORCH_DTYPES.get(t.dtype, "float32")))
        for t in source.inputs
    )


def _flatten(out) -> list[tuple[str, object]]:
    import torch

    if isinstance(out, torch.Tensor):
        return [("output", out)]
    if isinstance(out, dict):
        return list(out.items())
    if isinstance(out, (list, tuple)):
        return [(f"output_{i}", o) for i, o in enumerate(out)]
    raise ConversionFailed(f"model returned {type(out).__name__}; edgepack needs tensors, tuples or dicts of tensors")


def probe(source: Source) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import torch

    module = build_module(source)
    inputs = source.inputs
    if not inputs and source.format == "exported":
        ep = torch.export.load(source.path)
        inputs = tuple(TensorSpec(f"input_{i}" if len(ep.example_inputs[0]) > 1 else "input", tuple(a.shape),
                                  str(a.dtype).replace("torch.", "")) for i, a in enumerate(ep.example_inputs[0]))
        source = Source(**{**source.__dict__, "inputs": inputs})
    with torch.no_grad():
        try:
            out = module(*example_args(source))
        except Exception as e:  # noqa: BLE001
            shapes = ", ".join(f"{t.name}={t.shape_str()}" for t in inputs)
            raise ConfigError(f"the model does not run on inputs {shapes}: {type(e).__name__}: {str(e)[:200]}",
                              hint="check --input shapes and dtypes") from None
    outs = tuple(TensorSpec(n, tuple(o.shape), str(o.dtype).replace("torch.", "")) for n, o in _flatten(out))
    return inputs, outs


def _run(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    import torch

    from edgepack.core.batching import axes_of, run_batched

    torch.set_num_threads(2)
    module = build_module(source)
    first = source.inputs[0].shape

    def infer(feed: Feeds) -> Feeds:
        args = tuple(torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in source.inputs)
        with torch.no_grad():
            out = module(*args)
        return {n: o.detach().cpu().numpy() for n, o in _flatten(out)}

    return run_batched(infer, feeds, None if first[0] is None else first[0], axes_of(source.inputs), links, out_axes)


def reference(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    return run_isolated(_run, source, feeds, links, out_axes, what="PyTorch reference run")


def _export(source: Source, path: str, opset: int) -> list[str]:
    import torch

    notes = []
    module = build_module(source)
    args = example_args(source)
    names_in = [t.name for t in source.inputs]
    names_out = [t.name for t in source.outputs]
    dynamic = {t.name: {t.batch_axis: torch.export.Dim("batch")} for t in source.inputs if t.dynamic_batch}
    try:
        # outputs are named afterwards: an output name that is also the name of a tensor inside the graph (a BERT
        # "embedding") would otherwise be used twice, which is invalid ONNX
        prog = torch.onnx.export(module, args, dynamo=True, input_names=names_in,
                                 opset_version=opset, dynamic_shapes=dynamic or None, external_data=False,
                                 verbose=False)
        prog.save(path, external_data=False)
    except Exception as e:  # noqa: BLE001 - fall back to the TorchScript-based exporter, and say so
        notes.append(f"torch.export-based ONNX export failed ({type(e).__name__}); used the TorchScript exporter")
        axes = {t.name: {t.batch_axis: "batch"} for t in source.inputs if t.dynamic_batch}
        torch.onnx.export(module, args, path, dynamo=False, input_names=names_in,
                          opset_version=opset, dynamic_axes=axes or None)
    from edgepack.sources.onnx import name_outputs

    name_outputs(path, names_out)
    return notes


def to_onnx(source: Source, path: Path, opset: int = 18) -> list[str]:
    """Export to ONNX in a worker; returns notes for the report."""
    return run_isolated(_export, source, str(path), opset, what="PyTorch → ONNX export")

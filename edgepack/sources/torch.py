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


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None,  # noqa: ARG001
         weights_key: str | None = None, weights_strict: bool = True) -> Source:
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
    else:
        weights_key, weights_strict = None, True
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
                 weights_key=weights_key, weights_strict=weights_strict, trust_code=trust_code, sha256=digest)
    ins, outs = run_isolated(probe, src, what=f"loading PyTorch model '{model}'")
    return Source(kind="torch", format=fmt, path=path, name=name, inputs=ins, outputs=outs, weights=weights,
                  weights_key=weights_key, weights_strict=weights_strict, trust_code=trust_code, sha256=digest)


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
        load_weights(module, state_dict_of(state, source.weights, source.weights_key, set(module.state_dict())),
                     source)
    return module.eval()


STATE_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "net", "module", "ema", "weights")


def _is_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _listing(keys, n: int = 8) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:n]) + (f" … ({len(keys)} in all)" if len(keys) > n else "")


def state_dict_of(obj, file: str, key: str | None, own: set[str] = frozenset()):
    """The state dict in a loaded weights file: the one nested under ``key`` (``--weights FILE:KEY``), the file
    itself (all tensors, or sharing keys with the model's own state dict ``own``), or a checkpoint's
    ``state_dict``. Anything else is refused saying what the file holds and which nested state dicts it has."""
    where = f"{file}:{key}" if key else file
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            held = _listing(obj) if isinstance(obj, dict) else type(obj).__name__
            raise InputError(f"weights {file} has no key '{key}' (it holds: {held})",
                             hint="name one of its keys: --weights FILE:KEY")
        obj = obj[key]
        if not _is_state_dict(obj):
            raise InputError(f"weights {where} is not a state dict (a {type(obj).__name__}"
                             + (f" with keys {_listing(obj)})" if isinstance(obj, dict) else ")"),
                             hint="name the key that holds the model's state dict (name → tensor)")
        return obj
    if _is_state_dict(obj) or (isinstance(obj, dict) and own & set(obj)):
        return obj
    if not isinstance(obj, dict):
        raise InputError(f"weights {file} holds a {type(obj).__name__}, not a state dict",
                         hint="save it with torch.save(model.state_dict(), path)")
    if isinstance(obj.get("state_dict"), dict) and _is_state_dict(obj["state_dict"]):
        return obj["state_dict"]
    nested = [k for k, v in obj.items() if _is_state_dict(v)]
    nested.sort(key=lambda k: (k not in STATE_KEYS, STATE_KEYS.index(k) if k in STATE_KEYS else 0))
    hint = (f"select the model's state dict: --weights {file}:{nested[0]}" if nested
            else "save the model's state dict with torch.save(model.state_dict(), path)")
    if len(nested) > 1:
        hint += f" (state dicts in it: {', '.join(map(str, nested))})"
    raise InputError(f"weights {file} is a checkpoint, not a state dict: it holds {_listing(obj)}"
                     + (f"; state dicts under {', '.join(map(str, nested))}" if nested else ""), hint=hint)


def load_weights(module, state, source: Source) -> None:
    """Load ``state`` into ``module``; missing and unexpected keys named as such (unexpected ones ignored when the
    load is not strict), mismatched shapes named with both shapes."""
    where = f"{source.weights}:{source.weights_key}" if source.weights_key else source.weights
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {tuple(getattr(state[k], 'shape', ()))}, model {tuple(own[k].shape)})" for k in own
              if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if missing or shapes or (unexpected and source.weights_strict):
        parts = ([f"missing keys (the model has, the file lacks): {_listing(missing)}"] if missing else []) + \
                ([f"unexpected keys (the file has, the model lacks): {_listing(unexpected)}"] if unexpected else []) + \
                ([f"shape mismatch: {_listing(shapes, 4)}"] if shapes else [])
        if missing or shapes:
            hint = ("these weights are for another model (or another version of it): check the factory and the file"
                    + ("; a checkpoint's nested state dict is selected with --weights FILE:KEY"
                       if not source.weights_key else ""))
        else:
            hint = ("if the extra keys are not the model's (a training loss's parameters, an EMA copy), pass "
                    "--weights-non-strict to ignore them (recorded in the manifest)")
        raise InputError(f"weights {where} do not fit the model: " + "; ".join(parts), hint=hint)
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


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


def tensor_outputs(module):
    """``module`` with its outputs as one tensor or a flat tuple, in the order edgepack names them (``_flatten``):
    for converters that take tensors and tuples only (litert-torch's channel-last wrapper refuses a dict)."""
    import torch

    class FlatOutputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(*args)
            return out if isinstance(out, torch.Tensor) else tuple(o for _, o in _flatten(out))

    return FlatOutputs(module).eval()


def _dynamic_batch(ep) -> list[bool]:
    """For each user input of an exported program, whether its first axis was exported as dynamic (a symbolic
    size); other axes keep the example's sizes."""
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    out = []
    for name in ep.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val") if name in placeholders else None
        shape = getattr(val, "shape", ())
        out.append(bool(len(shape)) and not isinstance(shape[0], int))
    return out


def probe(source: Source) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import torch

    module = build_module(source)
    inputs = source.inputs
    if not inputs and source.format == "exported":
        ep = torch.export.load(source.path)
        dynamic = _dynamic_batch(ep)
        inputs = tuple(TensorSpec(f"input_{i}" if len(ep.example_inputs[0]) > 1 else "input",
                                  ((None,) + tuple(a.shape)[1:]) if dynamic[i] else tuple(a.shape),
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

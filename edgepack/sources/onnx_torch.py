"""The ONNX → PyTorch bridge: an ONNX model as a ``torch.export`` program, for backends that take torch sources
(tflite through litert-torch, coreml, and any later backend whose ``accepts`` holds ``torch`` but not ``onnx``).

Route: onnx2torch (its converter registry, plus :mod:`edgepack.sources.onnx_torch_ops`) builds a
``torch.fx.GraphModule``; values that depend only on constants and the (static) input shapes — ``Shape`` chains,
reshape targets, axes, pads, sizes — are folded into literals so ``torch.export`` sees static sizes instead of
data-dependent ones; the exported program is saved as a ``.pt2`` and handed to the backends as a torch source of
format ``exported``. Everything here runs in the bridge's own worker (family :data:`FAMILY`); this process imports
no framework.

torchvision: onnx2torch imports it at import time (``NonMaxSuppression`` and ``RoiAlign`` converters), and the
torchvision wheel that pairs with torch 2.13 on PyPI is a CUDA build that does not import beside ``torch+cpu``; the
PyTorch CPU index is not reachable from the build hosts. Inside the bridge worker only, :func:`_guard_torchvision`
puts a stand-in ``torchvision`` module in ``sys.modules`` exposing just what onnx2torch touches
(``torchvision.ops.nms``, ``roi_align``, ``box_convert``); each raises a one-line error naming the op if a model
really needs it. The plan's op census (:func:`census`) reports ``NonMaxSuppression``/``RoiAlign`` as not converted,
so no build gets that far.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from edgepack.core.checks import Check, judge
from edgepack.errors import ConversionFailed
from edgepack.feeds import Feeds
from edgepack.isolation import run_isolated
from edgepack.sources import Source

FAMILY = "bridge:onnx-torch"
NEEDS = ("torch", "onnx2torch")  # import names (find_spec) the bridge needs
ROUTE = "onnx → torch bridge"
GUARDED_OPS = ("NonMaxSuppression", "RoiAlign")  # converters that would call torchvision: reported as gaps
FOLD_MAX_NUMEL = 4096  # constants up to this size (ints: shapes, axes; small floats: scales) become literals


# ------------------------------------------------------------------------------------------ worker side


def _guard_torchvision() -> None:
    """A stand-in torchvision for onnx2torch's imports, in this worker only (see the module docstring)."""
    try:
        import torchvision  # noqa: F401 - a working install (e.g. a CPU build) is used as it is
        return
    except Exception:  # noqa: BLE001 - absent, or the CUDA build failing beside torch+cpu
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    def needed(op: str):
        def fail(*_args, **_kwargs):
            raise ConversionFailed(f"this model needs torchvision.ops.{op}, which the onnx → torch bridge does not "
                                   "provide (torchvision is not installed)",
                                   hint="build the ort_mobile/openvino targets, which take the ONNX model directly")
        return fail

    import importlib.machinery

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for mod in (tv, ops):
        mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None)
        mod.__edgepack_stub__ = True
    ops.nms, ops.roi_align, ops.box_convert = needed("nms"), needed("roi_align"), needed("box_convert")
    tv.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops


def _onnx2torch():
    _guard_torchvision()
    import onnx2torch

    from edgepack.sources import onnx_torch_ops

    onnx_torch_ops.register()
    return onnx2torch


def _census(path: str) -> list[str]:
    """Ops of the model's main graph that no registered converter takes, as ``domain::Op (opset N)``."""
    import onnx

    _onnx2torch()
    from onnx2torch.node_converters.registry import get_converter

    model = onnx.load(path, load_external_data=False)
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    missing: dict[str, None] = {}
    for node in model.graph.node:
        domain = node.domain if node.domain != "ai.onnx" else ""
        version = opsets.get(domain, 0)
        shown = f"{node.op_type} (opset {version})" if not domain else f"{domain}::{node.op_type} (opset {version})"
        if node.op_type in GUARDED_OPS:
            missing[shown] = None
            continue
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing[shown] = None
    return list(missing)


def _example_args(source: Source):
    from edgepack.sources.torch import example_args

    return example_args(source)


def _fold_constants(gm, args):
    """Fold every value that depends only on constants and the static input shapes into a literal
    (``torch.tensor([...])`` in the graph), so ``torch.export`` reads shapes, axes and pads as numbers."""
    import torch
    from torch import fx

    env: dict[fx.Node, object] = {}
    static: dict[fx.Node, bool] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            env[n] = out
            if n.op == "placeholder":
                static[n] = False
            elif n.op == "get_attr":
                static[n] = True
            elif n.op == "call_module" and type(self.module.get_submodule(n.target)).__name__ == "OnnxShape":
                static[n] = True  # the shape of a tensor is fixed once the input shapes are
            else:
                static[n] = all(static.get(a, True) for a in n.all_input_nodes)
            return out

    with torch.no_grad():
        Recorder(gm).run(*args)
    folded = _static_slices(gm, env, static)
    for n in list(gm.graph.nodes):
        if n.op in ("placeholder", "output") or not static.get(n) or not n.users:
            continue
        v = env.get(n)
        if not isinstance(v, torch.Tensor) or v.numel() > FOLD_MAX_NUMEL:
            continue
        if v.is_floating_point() and v.numel() > 16:
            continue  # float weights stay buffers
        with gm.graph.inserting_after(n):
            lit = gm.graph.call_function(torch.tensor, (v.tolist(),), {"dtype": v.dtype})
        n.replace_all_uses_with(lit)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded


def _slice(x, flip_dims: list, pos: list, neg: list):
    """onnx2torch's Slice with its starts/ends/axes/steps already read (python slices, not tensors)."""
    from onnx2torch.node_converters.slice import _do_slice

    return _do_slice(x, flip_dims, pos, neg)


def _static_slices(gm, env: dict, static: dict) -> int:
    """``Slice`` nodes whose starts/ends/axes/steps are constants become python slices (onnx2torch reads them with
    ``.numpy()``, which ``torch.export`` cannot trace)."""
    from onnx2torch.node_converters.slice import _get_slices

    done = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_module" or type(gm.get_submodule(n.target)).__name__ != "OnnxSlice":
            continue
        params = ["starts", "ends", "axes", "steps"]
        given = dict(zip(params, n.args[1:]))
        given.update({k: v for k, v in n.kwargs.items() if k in params})
        if not all(static.get(v, False) for v in given.values() if v is not None):
            continue
        vals = {k: (env[v] if v is not None else None) for k, v in given.items()}
        flip, pos, neg = _get_slices(vals["starts"], vals["ends"], vals.get("axes"), vals.get("steps"))

        def py(x):
            return slice(*(None if v is None else int(v) for v in (x.start, x.stop, x.step))) \
                if isinstance(x, slice) else x

        with gm.graph.inserting_after(n):
            new = gm.graph.call_function(_slice, (n.args[0], [int(d) for d in flip], [py(x) for x in pos],
                                                  [py(x) for x in neg]))
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        static[new] = False
        done += 1
    return done


def _named_outputs(gm, names: list[str]) -> None:
    """Make the graph return the ONNX outputs as a flat tuple in the model's order (onnx2torch returns whole
    multi-output nodes)."""
    import operator

    produced: dict[str, tuple] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            mapping = getattr(gm.get_submodule(n.target), "onnx_mapping", None)
            if mapping is not None:
                for i, value in enumerate(mapping.outputs):
                    produced[value] = (n, i, len(mapping.outputs))
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    results = []
    with gm.graph.inserting_before(out_node):
        for name in names:
            if name not in produced:
                raise ConversionFailed(f"the onnx → torch bridge cannot find the node producing output '{name}'")
            node, i, count = produced[name]
            results.append(gm.graph.call_function(operator.getitem, (node, i)) if count > 1 else node)
    out_node.args = (tuple(results),)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _constants_as_initializers(model):
    """Tensor ``Constant`` nodes of the main graph as initializers (exporters such as Paddle's store every weight
    that way; onnx2torch's Conv/Gemm converters read weights from initializers only), and trailing empty optional
    inputs dropped (onnx2torch's Clip reads ``""`` as a dynamic max). Same values, same names."""
    keep, lifted = [], []
    for node in model.graph.node:
        while len(node.input) and node.input[-1] == "":  # a trailing "" is an omitted optional input
            node.input.pop()
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and set(attrs) == {"value"} and node.domain in ("", "ai.onnx"):
            t = type(attrs["value"].t)()
            t.CopyFrom(attrs["value"].t)
            t.name = node.output[0]
            lifted.append(t)
        else:
            keep.append(node)
    if lifted:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        model.graph.initializer.extend(lifted)
    return model


def _static_inputs(model, source: Source):
    """The graph inputs with the shapes the program is exported for (batch 1, declared dims at their opt): shape
    inference then knows every rank (onnx2torch reads ranks from it, e.g. for BatchNormalization)."""
    shapes = {t.name: t.concrete_shape(1) for t in source.inputs}
    for value in model.graph.input:
        if value.name in shapes and value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[value.name]:
                dims.add().dim_value = int(d)
    del model.graph.value_info[:]
    return _measured_value_info(model, source)


def _measured_value_info(model, source: Source):
    """Every intermediate value's shape and type, measured by one ONNX Runtime run on the static example inputs
    (ONNX shape inference stops at ops whose output shape depends on values, and onnx2torch reads ranks from it)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = type(model)()
    probe.CopyFrom(model)
    known = {v.name for v in (*probe.graph.input, *probe.graph.output)} | {i.name for i in probe.graph.initializer}
    inner = [o for n in probe.graph.node for o in n.output if o and o not in known]
    for name in inner:
        probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {t.name: np.zeros(t.concrete_shape(1), dtype=t.dtype) for t in source.inputs}
        values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    except Exception:  # noqa: BLE001 - fall back on ONNX shape inference alone (onnx2torch runs it)
        return model
    for name in inner:
        v = values.get(name)
        if isinstance(v, np.ndarray):
            model.graph.value_info.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
    return model


def _own_storage(gm) -> None:
    """Every tensor the module holds as a dense copy of its own (onnx2torch can leave expanded or shared views,
    which the ``.pt2`` writer cannot package)."""
    import torch

    for m in gm.modules():
        for store in (m._parameters, m._buffers):  # noqa: SLF001
            for k, v in list(store.items()):
                if isinstance(v, torch.Tensor):
                    fresh = v.detach().contiguous().clone()
                    store[k] = torch.nn.Parameter(fresh, requires_grad=False) if isinstance(v, torch.nn.Parameter) \
                        else fresh
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and not k.startswith("_"):
                setattr(m, k, v.detach().contiguous().clone())


def _drop_dead_reads(ep) -> None:
    """Remove the unused scalar reads (``aten.item`` of a folded literal, from onnx2torch's ``if torch.any(...)``)
    and what fed only them: the program serializes and loads without them."""
    import torch

    g = ep.graph_module.graph
    changed = True
    while changed:
        changed = False
        for n in reversed(list(g.nodes)):
            if n.op == "call_function" and not n.users and n.target is not torch.ops.aten._assert_scalar.default:
                g.erase_node(n)
                changed = True
    ep.graph_module.recompile()


def _to_torch(source: Source, pt2: str) -> list[str]:
    import onnx
    import torch
    import torch._subclasses.fake_tensor as fake_tensor

    o2t = _onnx2torch()
    model = _static_inputs(_constants_as_initializers(onnx.load(source.path)), source)
    try:
        gm = o2t.convert(model, attach_onnx_mapping=True)
    except NotImplementedError as e:
        raise ConversionFailed(f"onnx2torch cannot convert {source.name}: {str(e)[:300]}",
                               hint="build the ort_mobile/openvino targets, which take the ONNX model directly") from None
    args = _example_args(source)
    _named_outputs(gm, [t.name for t in source.outputs])
    folded = _fold_constants(gm.eval(), args)
    _own_storage(gm)
    # literals the folding made (shapes, axes) are known values to torch.export up to this size
    old = fake_tensor.CONSTANT_NUMEL_LIMIT
    fake_tensor.CONSTANT_NUMEL_LIMIT = FOLD_MAX_NUMEL
    try:
        with torch.no_grad():
            ep = torch.export.export(gm, args, strict=False)
    except Exception as e:  # noqa: BLE001 - one line, the export's first line
        raise ConversionFailed(f"torch.export of the bridged {source.name} failed: {type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}",
                               hint="build the ort_mobile/openvino targets, which take the ONNX model directly") from None
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = old
    _drop_dead_reads(ep)
    torch.export.save(ep, pt2)
    import onnx2torch

    return [f"onnx2torch {getattr(onnx2torch, '__version__', '1.5.15')}, torch {torch.__version__}: "
            f"{len(model.graph.node)} ONNX nodes, {folded} shape/axis values folded for torch.export"]


def _run(bridged: Source, feeds: Feeds, out_axes: dict[str, int | None] | None = None) -> Feeds:
    import torch

    from edgepack.core.batching import axes_of, run_batched
    from edgepack.sources.torch import build_module

    torch.set_num_threads(2)
    module = build_module(bridged)
    first = bridged.inputs[0]
    axis = first.batch_axis
    batch = None if axis is None else (1 if first.shape[axis] is None else first.shape[axis])  # as exported
    names = [t.name for t in bridged.outputs]

    def infer(feed: Feeds) -> Feeds:
        ins = tuple(torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in bridged.inputs)
        with torch.no_grad():
            out = module(*ins)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(names, out)}

    return run_batched(infer, feeds, batch, axes_of(bridged.inputs), out_axes=out_axes or None)


# ------------------------------------------------------------------------------------------ host side


def census(source: Source) -> list[str]:
    """The ONNX ops the bridge cannot convert (empty: every op has a converter), in the bridge worker."""
    return run_isolated(_census, source.path, what="onnx → torch bridge op census", family=FAMILY)


def to_torch(source: Source, pt2: Path) -> tuple[Source, list[str]]:
    """The ONNX source as a torch source (a ``torch.export`` program saved at ``pt2``), and notes for the report."""
    notes = run_isolated(_to_torch, source, str(pt2), what="onnx → torch bridge", family=FAMILY)
    from dataclasses import replace

    from edgepack.sources.torch import BRIDGED

    # the program is exported for one batch (batch 1 where the ONNX batch is dynamic): its inputs say so
    inputs = tuple(replace(t, shape=t.concrete_shape(1), dims=()) for t in source.inputs)
    bridged = Source(kind="torch", format=BRIDGED, path=str(pt2), name=source.name, inputs=inputs,
                     outputs=source.outputs, trust_code=True, sha256=source.sha256,
                     notes=("bridged onnx → torch",))
    return bridged, [f"bridged onnx → torch: {notes[0]}"] if notes else ["bridged onnx → torch"]


def run(bridged: Source, feeds: Feeds, out_axes: dict[str, int | None] | None = None) -> Feeds:
    """The bridged program's outputs on ``feeds`` (samples first), for the bridge fidelity row."""
    return run_isolated(_run, bridged, feeds, out_axes, what="onnx → torch bridge fidelity run", family=FAMILY)


FIDELITY_ROW = "bridge fidelity (onnx → torch)"
FIDELITY_LIMIT = 1e-4  # max |Δ| relative to the output's largest |value|: fp32 arithmetic reordered, nothing more


def fidelity(reference: Feeds, bridged: Feeds, samples: int) -> Check:
    """One report row: the bridged program against the ONNX model, per output max |Δ|, cosine and max |Δ| relative
    to the output's largest magnitude; passes when every output's relative error is within :data:`FIDELITY_LIMIT`."""
    parts, worst = [], 0.0
    for name, ref in reference.items():
        r = np.asarray(ref, dtype=np.float64)
        if name not in bridged:
            return judge(FIDELITY_ROW, None, FIDELITY_LIMIT, "<=", f"the bridged model has no output '{name}'")
        b = np.asarray(bridged[name], dtype=np.float64)
        if b.shape != r.shape:
            return judge(FIDELITY_ROW, None, FIDELITY_LIMIT, "<=",
                         f"output '{name}': bridged shape {b.shape}, ONNX shape {r.shape}")
        if not np.issubdtype(np.asarray(ref).dtype, np.floating):
            diff = float(np.count_nonzero(b != r))
            parts.append(f"{name}: {int(diff)} values differ")
            worst = max(worst, float("inf") if diff else 0.0)
            continue
        d = float(np.max(np.abs(b - r))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        rel = d / scale if scale > 0 else d
        denom = float(np.linalg.norm(r) * np.linalg.norm(b))
        cos = float(np.dot(r.ravel(), b.ravel()) / denom) if denom > 0 else (1.0 if d == 0 else 0.0)
        parts.append(f"{name}: max|Δ| {d:.3g}, cosine {cos:.6f}, relative {rel:.3g}")
        worst = max(worst, rel if np.isfinite(rel) else float("inf"))
    return judge(FIDELITY_ROW, worst, FIDELITY_LIMIT, "<=",
                 f"on {samples} calibration samples, before any target is converted: " + "; ".join(parts))


__all__ = ["FAMILY", "FIDELITY_LIMIT", "FIDELITY_ROW", "NEEDS", "ROUTE", "census", "fidelity", "run", "to_torch"]

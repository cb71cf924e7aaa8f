"""ONNX sources: read the signature with ``onnx`` (checked, external data kept inside the model's folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack import safety
from edgepack.errors import ConfigError, InputError, MissingDependency
from edgepack.feeds import Feeds, run_batched, sha256_file
from edgepack.signature import MODEL_SHAPE, TensorSpec
from edgepack.sources import Source

ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 9: "bool"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependency("reading ONNX models needs the 'onnx' package", hint="pip install onnx") from None
    return onnx


def read_model(path: Path, load_weights: bool = True):
    """Load and check an ONNX model; external data must live inside the model's folder."""
    onnx = _onnx()
    path = safety.regular_file(path, "model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises assorted errors on bad bytes
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})",
                         hint="the file may be truncated or not ONNX; re-export it") from None
    base = path.parent.resolve()
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                try:
                    loc = safety.inside(base, kv.value, f"{path}: external data")
                except InputError:
                    raise InputError(f"{safety.shown(path)}: external data '{safety.shown(kv.value, 120)}' points "
                                     "outside the model's folder",
                                     hint="keep external data files next to the model") from None
                if not loc.exists():
                    raise InputError(f"{safety.shown(path)}: external data file '{safety.shown(kv.value, 120)}' "
                                     "is missing")
                safety.regular_file(loc, "external data file")
    if load_weights:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(base))
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: invalid ONNX model: {str(e).splitlines()[0][:200]}",
                         hint="the file may be truncated or corrupt") from None
    return model


def _spec(value_info) -> TensorSpec:
    tt = value_info.type.tensor_type
    dims: list[int | None] = []
    for d in tt.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
    return TensorSpec(value_info.name, tuple(dims), ONNX_DTYPES.get(tt.elem_type, f"onnx:{tt.elem_type}"))


def signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    init = {t.name for t in model.graph.initializer}
    ins = tuple(_spec(v) for v in model.graph.input if v.name not in init)
    outs = tuple(_spec(v) for v in model.graph.output)
    return ins, outs


_signature = signature  # ``load`` takes a ``signature`` argument (SavedModel API) that shadows the name


def op_census(model) -> dict[str, int]:
    """Op counts of the whole model, the bodies of If/Loop/Scan included (an LSTM inside an If counts)."""
    counts: dict[str, int] = {}

    def walk(graph) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Transpose", "Dropout")
BIAS_OPS = ("Add", "Sub")  # with one constant operand: a bias after MatMul


def output_ops(path: Path) -> dict[str, str]:
    """``{output: op type of the node that computes it}``, looking through shape-only ops (Reshape, Flatten,
    Identity, …): the graph's evidence of what an output is (``Gemm`` for a linear head, ``Softmax`` for class
    probabilities), read without weights. Outputs fed by a graph input or an initializer are left out."""
    model = read_model(Path(path), load_weights=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer} | \
        {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    out: dict[str, str] = {}
    for v in model.graph.output:
        name, node, hops = v.name, producer.get(v.name), 0
        while node is not None and node.input and hops < 32:
            if node.op_type in PASS_THROUGH:
                node, hops = producer.get(node.input[0]), hops + 1
            elif node.op_type in BIAS_OPS and len(node.input) == 2 and sum(i in constants for i in node.input) == 1:
                # a bias added to a MatMul (how exporters write a linear layer on ≥ 3-D inputs): look through it
                node, hops = producer.get(next(i for i in node.input if i not in constants)), hops + 1
            else:
                break
        if node is not None:
            out[name] = node.op_type
    return out


CONTROL_FLOW = ("If", "Loop", "Scan")


def merge_inputs(declared: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...], where: str) -> tuple[TensorSpec, ...]:
    """Apply --input overrides to a model's declared inputs (names must exist; ranks must agree)."""
    by_name = {t.name: t for t in given}
    unknown = set(by_name) - {t.name for t in declared}
    if unknown:
        raise ConfigError(f"--input names {sorted(unknown)} are not inputs of {where}",
                          hint=f"inputs are: {', '.join(t.name for t in declared)}")
    out = []
    for t in declared:
        g = by_name.get(t.name)
        if g is None or g.shape == MODEL_SHAPE:  # no shape given: the model's own
            out.append(t)
            continue
        if len(g.shape) != len(t.shape):
            raise ConfigError(f"--input {g.name}={g.shape_str()} has rank {len(g.shape)}, the model expects "
                              f"{t.shape_str()} (rank {len(t.shape)})",
                              hint=f"give all {len(t.shape)} dimensions (? for a dynamic one), or leave the shape "
                                   f"empty to keep the model's: --input {g.name}=,…")
        for gd, td in zip(g.shape, t.shape):
            if td is not None and gd is not None and gd != td:
                raise ConfigError(f"--input {g.name}={g.shape_str()} conflicts with the model's shape {t.shape_str()}",
                                  hint="only dynamic (?) dimensions of the model can be set")
        out.append(TensorSpec(t.name, g.shape, t.dtype))
    return tuple(out)


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None) -> Source:  # noqa: ARG001
    path = Path(model)
    m = read_model(path, load_weights=False)
    ins, outs = _signature(m)
    ins = merge_inputs(ins, tuple(inputs), str(path))
    return Source(kind="onnx", format="onnx", path=str(path.resolve()), name=path.stem, inputs=ins,
                  outputs=outs, sha256=sha256_file(path))


def name_outputs(path: str, names: list[str]) -> None:
    """Give the graph's outputs these names (in order), first renaming any other tensor that already uses one, so
    every name stays unique (valid ONNX)."""
    import onnx

    model = onnx.load(path)
    g = model.graph
    if len(g.output) != len(names):
        raise InputError(f"the exported graph has {len(g.output)} outputs, the model returned {len(names)}",
                         hint="the model's outputs must be tensors, or tuples/dicts of tensors")
    old = [o.name for o in g.output]
    if old == list(names):
        return
    taken = {n for node in g.node for n in (*node.input, *node.output)} | {i.name for i in g.initializer} | {
        i.name for i in g.input}
    mapping: dict[str, str] = {}
    for o, new in zip(old, names):
        if new != o and new in taken and new not in old:  # an inner tensor has the name: move it aside
            k = 1
            while f"{new}__{k}" in taken:
                k += 1
            mapping[new] = f"{new}__{k}"
            taken.add(mapping[new])
    mapping.update({o: n for o, n in zip(old, names) if o != n})
    if len(set(names)) != len(names):
        raise InputError(f"the model's output names repeat: {names}")

    def rename(graph) -> None:
        for node in graph.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
            for attr in node.attribute:  # control-flow bodies read outer tensors by name
                if attr.type == onnx.AttributeProto.GRAPH:
                    rename(attr.g)
                for sub in attr.graphs:
                    rename(sub)
        for coll in (graph.initializer, graph.input, graph.output, graph.value_info):
            for v in coll:
                v.name = mapping.get(v.name, v.name)

    rename(g)
    # an output that is also an input or another output needs an Identity of its own
    seen: set[str] = {i.name for i in g.input}
    for o in g.output:
        if o.name in seen:
            alias = f"{o.name}__out"
            g.node.append(onnx.helper.make_node("Identity", [o.name], [alias]))
            o.name = alias
        seen.add(o.name)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def session(path: str, threads: int = 1, optimize: bool = False):
    """A CPU onnxruntime session: ``optimize`` False for the literal reference, True for ORT's defaults."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def reference(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    """Golden outputs from onnxruntime with graph optimizations off, in the onnx worker."""
    from edgepack.isolation import run_isolated

    return run_isolated(_run, source, feeds, links, out_axes, what="ONNX reference run")


def _run(source: Source, feeds: Feeds, links: dict[str, str] | None = None, out_axes=None) -> Feeds:
    """Golden outputs from onnxruntime with graph optimizations off (the most literal reading of the graph)."""
    sess = session(source.path, threads=2)
    names = [o.name for o in sess.get_outputs()]
    first = source.inputs[0].shape
    max_batch = None if (not first or first[0] is None) else first[0]

    def infer(feed: Feeds) -> Feeds:
        return dict(zip(names, sess.run(names, feed)))

    from edgepack.core.batching import axes_of

    return run_batched(infer, {k: np.asarray(v) for k, v in feeds.items()}, max_batch, axes_of(source.inputs), links,
                       out_axes)


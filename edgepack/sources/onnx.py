"""ONNX sources: read the signature with ``onnx`` (checked, external data kept inside the model's folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack import safety
from edgepack.errors import ConfigError, InputError, MissingDependency
from edgepack.feeds import Feeds, run_batched, sha256_file
from edgepack.signature import TensorSpec
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
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
        if g is None:
            out.append(t)
            continue
        if len(g.shape) != len(t.shape):
            raise ConfigError(f"--input {g.name}={g.shape_str()} has rank {len(g.shape)}, the model expects "
                              f"{t.shape_str()} (rank {len(t.shape)})")
        for gd, td in zip(g.shape, t.shape):
            if td is not None and gd is not None and gd != td:
                raise ConfigError(f"--input {g.name}={g.shape_str()} conflicts with the model's shape {t.shape_str()}")
        out.append(TensorSpec(t.name, g.shape, t.dtype))
    return tuple(out)


def load(model: str, *, weights=None, inputs=(), trust_code=False, signature=None) -> Source:  # noqa: ARG001
    path = Path(model)
    m = read_model(path, load_weights=False)
    ins, outs = _signature(m)
    ins = merge_inputs(ins, tuple(inputs), str(path))
    return Source(kind="onnx", format="onnx", path=str(path.resolve()), name=path.stem, inputs=ins,
                  outputs=outs, sha256=sha256_file(path))


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


def reference(source: Source, feeds: Feeds) -> Feeds:
    """Golden outputs from onnxruntime with graph optimizations off, in the onnx worker."""
    from edgepack.isolation import run_isolated

    return run_isolated(_run, source, feeds, what="ONNX reference run")


def _run(source: Source, feeds: Feeds) -> Feeds:
    """Golden outputs from onnxruntime with graph optimizations off (the most literal reading of the graph)."""
    sess = session(source.path, threads=2)
    names = [o.name for o in sess.get_outputs()]
    first = source.inputs[0].shape
    max_batch = None if (not first or first[0] is None) else first[0]

    def infer(feed: Feeds) -> Feeds:
        return dict(zip(names, sess.run(names, feed)))

    return run_batched(infer, {k: np.asarray(v) for k, v in feeds.items()}, max_batch)


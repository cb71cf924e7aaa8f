"""Framework-free helpers over ONNX protobuf graphs (the objects are passed in; nothing is imported here), shared
by the backends that rewrite ONNX before a converter sees it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def subgraphs(node: Any) -> Iterator[Any]:
    """The graphs held by a node's attributes (If branches, Loop/Scan bodies)."""
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def unique_initializer_names(model) -> int:
    """Rename initializers of subgraphs whose names are already used elsewhere in the model (and the references
    to them inside that subgraph, where the local initializer shadows any outer one). Returns how many."""
    seen: set[str] = {i.name for i in model.graph.initializer}
    renamed = 0

    def rename_refs(graph, old: str, new: str) -> None:
        for n in graph.node:
            for k, name in enumerate(n.input):
                if name == old:
                    n.input[k] = new
            for sg in subgraphs(n):
                if old not in {i.name for i in sg.initializer}:  # an inner initializer of that name shadows it
                    rename_refs(sg, old, new)
        for o in graph.output:
            if o.name == old:
                o.name = new

    def walk(graph, top: bool) -> None:
        nonlocal renamed
        if not top:
            for init in graph.initializer:
                if init.name in seen:
                    old, k = init.name, 1
                    while f"{old}__sub{k}" in seen:
                        k += 1
                    new = f"{old}__sub{k}"
                    init.name = new
                    rename_refs(graph, old, new)
                    for vi in graph.value_info:
                        if vi.name == old:
                            vi.name = new
                    renamed += 1
                seen.add(init.name)
        for n in graph.node:
            for sg in subgraphs(n):
                walk(sg, False)

    walk(model.graph, True)
    return renamed


def drop_initializer_value_info(model: Any) -> int:
    """Remove ``value_info`` entries that describe initializers (a weight's shape is in the initializer itself).
    A quantizer that replaces a weight (ONNX Runtime's dynamic Gemm → MatMulInteger) leaves such an entry stale,
    and the next shape inference fails ("Inferred shape and existing shape differ"). Returns how many."""
    inits = {i.name for i in model.graph.initializer}
    keep = [vi for vi in model.graph.value_info if vi.name not in inits]
    dropped = len(model.graph.value_info) - len(keep)
    if dropped:
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)
    return dropped

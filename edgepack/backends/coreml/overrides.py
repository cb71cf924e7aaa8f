"""coremltools converter fixes (process-wide, worker side) and error messages that name the unsupported op.

Nothing here imports a framework at import time.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgepack.errors import UnsupportedConversion


def register_overrides() -> None:
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


def explain_unsupported(err: Exception, program: Any) -> UnsupportedConversion | None:
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

"""Converters added to onnx2torch's own registry (``add_converter``) for what its 1.5.15 release lacks: ``LSTM`` and
``GRU`` (→ ``torch.nn.LSTM`` / ``torch.nn.GRU``), ``Reshape`` with ``allowzero=1``, and ``Pad`` in reflect/edge
mode on inputs whose leading axes are not padded (onnx2torch's own refuses a 2-D input).

Used only inside the ONNX → torch bridge worker (:mod:`edgepack.sources.onnx_torch`), after its torchvision guard:
importing this module imports no framework; :func:`register` imports torch and onnx2torch, defines the torch modules
and adds the converters (once per process).

ONNX recurrent ops, and how they map:

* gate order: ONNX LSTM packs ``W``/``R``/``B`` as i, o, f, c; torch as i, f, g(=c), o. ONNX GRU packs z, r, h;
  torch r, z, n. The blocks are reordered when the weights are copied.
* ``B`` holds the input biases then the recurrent biases (``Wb``, ``Rb``) → ``bias_ih``, ``bias_hh``.
* ``direction``: forward; reverse (the sequence is flipped in and out around a forward torch RNN: ONNX's reverse
  RNN reads the last step first and writes ``Y[t]`` at step t); bidirectional (torch's ``_reverse`` weights).
* ``layout`` 0 (time first: ``X`` [T, N, I], states [D, N, H]) and 1 (batch first: ``X`` [N, T, I], states
  [N, D, H]); ``Y`` is [T, D, N, H] (layout 0) or [N, T, D, H] (layout 1).
* initial states ``initial_h`` / ``initial_c`` (zeros when absent).
* refused (``NotImplementedError``, reported by the bridge with the op's name): non-default ``activations``,
  ``clip``, ``input_forget``, peepholes ``P``, a ``sequence_lens`` input, and GRU with ``linear_before_reset=0``
  (torch's GRU only computes the ``linear_before_reset=1`` form, which is what PyTorch and Keras export).
"""

from __future__ import annotations

LSTM_GATES = [0, 2, 3, 1]  # ONNX i, o, f, c → torch i, f, g, o
GRU_GATES = [1, 0, 2]  # ONNX z, r, h → torch r, z, n
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
RESHAPE_VERSIONS = (5, 13, 14)
PAD_VERSIONS = (11, 13)  # the tensor-pads forms onnx2torch registers


def _dilated(node) -> str:
    d = node.attributes.get("dilations")
    return f"dilations {list(d)}" if d and any(int(v) != 1 for v in d) else ""


def _nothing(node) -> str:  # noqa: ARG001 - the newer schema only widened the types
    return ""


# Newer ONNX schema versions (what torch's exporter writes at opset 18-21) whose semantics are the registered
# version's for every case the check lets through: (op, newer since-versions, registered version, check)
NEWER_SCHEMAS = (("Reshape", (19, 21), 14, _nothing),  # 19/21: more tensor types (float8, int4)
                 ("AveragePool", (19,), 11, _dilated))  # 19: a dilations attribute (only 1s convert)

_DEFINED: dict = {}


def _define() -> dict:
    """The torch modules and converter functions (framework imports happen here, in the bridge worker)."""
    if _DEFINED:
        return _DEFINED
    import torch
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.onnx_node import OnnxNode
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
    from torch import nn

    class OnnxRecurrent(nn.Module):
        """An ONNX LSTM/GRU node as a torch RNN; returns (Y, Y_h[, Y_c]) in the node's layout."""

        def __init__(self, rnn: nn.Module, kind: str, reverse: bool, layout: int, directions: int, hidden: int) -> None:
            super().__init__()
            self.rnn, self.kind, self.reverse, self.layout = rnn, kind, reverse, layout
            self.directions, self.hidden = directions, hidden

        def _state(self, given: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
            if given is None:
                return x.new_zeros(self.directions, x.shape[1], self.hidden)
            return given.transpose(0, 1) if self.layout == 1 else given

        def forward(self, x: torch.Tensor, initial_h: torch.Tensor | None = None,
                    initial_c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
            if self.layout == 1:
                x = x.transpose(0, 1)
            h0 = self._state(initial_h, x)
            if self.reverse:
                x = x.flip(0)
            if self.kind == "LSTM":
                y, (hn, cn) = self.rnn(x, (h0, self._state(initial_c, x)))
            else:
                y, hn = self.rnn(x, h0)
                cn = None
            if self.reverse:
                y = y.flip(0)
            steps, batch = y.shape[0], y.shape[1]
            y = y.reshape(steps, batch, self.directions, self.hidden).permute(0, 2, 1, 3)  # [T, D, N, H]
            if self.layout == 1:
                y = y.permute(2, 0, 1, 3)  # [N, T, D, H]
                hn = hn.transpose(0, 1)
                cn = None if cn is None else cn.transpose(0, 1)
            return (y, hn) if cn is None else (y, hn, cn)


    def _present(node: OnnxNode, i: int) -> str:
        vals = node.input_values
        return vals[i] if len(vals) > i and vals[i] else ""


    def _recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        kind = node.operation_type
        a = node.attributes
        gates, order = (4, LSTM_GATES) if kind == "LSTM" else (3, GRU_GATES)
        acts = a.get("activations")
        if acts and [s.decode() if isinstance(s, bytes) else s for s in acts] != DEFAULT_ACTIVATIONS[kind] * (
                len(acts) // len(DEFAULT_ACTIVATIONS[kind])):
            raise NotImplementedError(f"{kind} with activations {acts} (only the defaults convert)")
        if a.get("clip") is not None:
            raise NotImplementedError(f"{kind} with clip")
        if a.get("input_forget", 0):
            raise NotImplementedError("LSTM with input_forget=1")
        if kind == "GRU" and not a.get("linear_before_reset", 0):
            raise NotImplementedError("GRU with linear_before_reset=0 (torch.nn.GRU computes the =1 form)")
        if _present(node, 4):
            raise NotImplementedError(f"{kind} with a sequence_lens input")
        if kind == "LSTM" and _present(node, 7):
            raise NotImplementedError("LSTM with peepholes (P)")
        direction = a.get("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        layout = int(a.get("layout", 0))
        w = get_const_value(node.input_values[1], graph).float()  # [D, G*H, I]
        r = get_const_value(node.input_values[2], graph).float()  # [D, G*H, H]
        directions, hidden = w.shape[0], int(a.get("hidden_size", r.shape[-1]))
        b = get_const_value(node.input_values[3], graph).float() if _present(node, 3) else \
            torch.zeros(directions, 2 * gates * hidden)

        def reorder(t: torch.Tensor) -> torch.Tensor:
            blocks = t.reshape(gates, hidden, *t.shape[1:])
            return blocks[order].reshape(gates * hidden, *t.shape[1:]).contiguous()

        cls = nn.LSTM if kind == "LSTM" else nn.GRU
        rnn = cls(w.shape[-1], hidden, bidirectional=direction == "bidirectional")
        with torch.no_grad():
            for d in range(directions):
                suffix = "_reverse" if d == 1 else ""
                getattr(rnn, f"weight_ih_l0{suffix}").copy_(reorder(w[d]))
                getattr(rnn, f"weight_hh_l0{suffix}").copy_(reorder(r[d]))
                getattr(rnn, f"bias_ih_l0{suffix}").copy_(reorder(b[d, :gates * hidden]))
                getattr(rnn, f"bias_hh_l0{suffix}").copy_(reorder(b[d, gates * hidden:]))
        module = OnnxRecurrent(rnn.eval(), kind, direction == "reverse", layout, directions, hidden)
        inputs = [node.input_values[0], _present(node, 5)] + ([_present(node, 6)] if kind == "LSTM" else [])
        while inputs and not inputs[-1]:
            inputs.pop()
        return OperationConverterResult(torch_module=module,
                                        onnx_mapping=OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))


    class OnnxReshapeAllowZero(nn.Module):
        """``Reshape(allowzero=1)``: a 0 in the shape is a zero-sized axis, never "copy the input's axis"."""

        def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
            return torch.reshape(x, torch.Size(shape))

    class OnnxPadEdges(nn.Module):
        """``Pad`` in reflect/edge mode: only the padded trailing axes go to torch (onnx2torch passes all but two
        axes' zero pads, which torch's reflect/replicate refuse on a 2-D input)."""

        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

        def forward(self, x: torch.Tensor, pads: torch.Tensor, constant_value: torch.Tensor | None = None,
                    axes: torch.Tensor | None = None) -> torch.Tensor:
            p = [int(v) for v in pads.tolist()]
            rank = x.dim()
            if axes is not None:
                full = [0] * (2 * rank)
                for i, a in enumerate(int(v) % rank for v in axes.tolist()):
                    full[a], full[a + rank] = p[i], p[i + len(p) // 2]
                p = full
            pairs = [(p[i], p[i + rank]) for i in range(rank)][::-1]  # last axis first, as torch takes them
            while pairs and pairs[-1] == (0, 0):
                pairs.pop()
            if not pairs:
                return x
            if len(pairs) >= rank:
                raise NotImplementedError(f"{self.mode} Pad of the first axis of a {rank}-D tensor")
            return torch.nn.functional.pad(x, [v for pair in pairs for v in pair], mode=self.mode)

    _DEFINED.update(OnnxRecurrent=OnnxRecurrent, OnnxReshapeAllowZero=OnnxReshapeAllowZero, recurrent=_recurrent,
                    OnnxPadEdges=OnnxPadEdges,
                    OnnxMapping=OnnxMapping, OperationConverterResult=OperationConverterResult)
    return _DEFINED


def register() -> None:
    """Add the converters (once per process). Reshape keeps onnx2torch's own converter for ``allowzero=0``."""
    from onnx2torch.node_converters import registry
    from onnx2torch.node_converters.registry import OperationDescription, add_converter

    d = _define()
    _recurrent, OnnxReshapeAllowZero = d["recurrent"], d["OnnxReshapeAllowZero"]
    OnnxMapping, OperationConverterResult = d["OnnxMapping"], d["OperationConverterResult"]
    if OperationDescription("", "LSTM", 7) in registry._CONVERTER_REGISTRY:  # noqa: SLF001
        return
    for kind in ("LSTM", "GRU"):
        for version in (7, 14):  # the opsets their schemas changed at (1 and GRU's 3 predate our models)
            add_converter(operation_type=kind, version=version)(_recurrent)
    for version in RESHAPE_VERSIONS:
        key = OperationDescription("", "Reshape", version)
        plain = registry._CONVERTER_REGISTRY.pop(key)  # noqa: SLF001 - re-registered through add_converter below

        def reshape(node, graph, plain=plain):  # (OnnxNode, OnnxGraph) -> OperationConverterResult
            if node.attributes.get("allowzero", 0) == 1:
                return OperationConverterResult(torch_module=OnnxReshapeAllowZero(),
                                                onnx_mapping=OnnxMapping(inputs=node.input_values,
                                                                         outputs=node.output_values))
            return plain(node, graph)

        add_converter(operation_type="Reshape", version=version)(reshape)
    for op, newer, known, check in NEWER_SCHEMAS:
        base = registry._CONVERTER_REGISTRY.get(OperationDescription("", op, known))  # noqa: SLF001
        for version in newer:
            if base is None or OperationDescription("", op, version) in registry._CONVERTER_REGISTRY:  # noqa: SLF001
                continue

            def alias(node, graph, base=base, check=check, op=op, version=version):
                problem = check(node)
                if problem:
                    raise NotImplementedError(f"{op}-{version} with {problem}")
                return base(node, graph)

            add_converter(operation_type=op, version=version)(alias)
    for version in PAD_VERSIONS:
        key = OperationDescription("", "Pad", version)
        plain = registry._CONVERTER_REGISTRY.pop(key, None)  # noqa: SLF001

        def pad(node, graph, plain=plain):  # (OnnxNode, OnnxGraph) -> OperationConverterResult
            mode = node.attributes.get("mode", "constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode in ("reflect", "edge") or plain is None:
                torch_mode = {"reflect": "reflect", "edge": "replicate"}.get(mode)
                if torch_mode is None:
                    raise NotImplementedError(f"Pad mode {mode}")
                return OperationConverterResult(torch_module=d["OnnxPadEdges"](torch_mode),
                                                onnx_mapping=OnnxMapping(inputs=node.input_values,
                                                                         outputs=node.output_values))
            return plain(node, graph)

        add_converter(operation_type="Pad", version=version)(pad)

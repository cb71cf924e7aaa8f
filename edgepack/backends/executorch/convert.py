"""The worker side: PyTorch → ``torch.export`` → (PT2E INT8) → XNNPACK-lowered ``model.pte``, with the share of the
graph XNNPACK took (by op count and by MACs) and the app-integration coordinates of the executorch version."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.executorch.spec import PROGRAM, ExecuTorchOptions, ExecuTorchRuntime, app_integration
from edgepack.core.checks import Check
from edgepack.errors import InputError, NotApplicable, UnsupportedConversion, converter_error, explain

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

OTHER_TARGETS = ("targets that take the model through the ONNX bridge (ort_mobile, openvino, tensorrt: its "
                 "TorchScript fallback traces one path) can build it; or make the branch tensor-free / use torch.cond")
SKIP = ("getitem", "executorch_call_delegate")


# ------------------------------------------------------------------------------------------------ capture


def capture(module, args: tuple):
    """``torch.export`` of the model; a model it cannot capture is an UnsupportedConversion naming the exporter's
    cause line (this target's ERROR; the other targets go on)."""
    import torch

    try:
        return torch.export.export(module, args)
    except Exception as e:  # noqa: BLE001 - the exporter's errors are free text
        import traceback

        cause = explain(str(e)) or type(e).__name__
        raise UnsupportedConversion(f"torch.export cannot capture the model: {type(e).__name__}: {cause}",
                                    hint=OTHER_TARGETS,
                                    details="".join(traceback.format_exception(type(e), e, e.__traceback__)))


# ------------------------------------------------------------------------------------------------ census


def _op(node) -> str:
    """The op's short name: ``aten.convolution.default`` (edge dialect) and ``convolution.default`` → convolution."""
    parts = str(getattr(node.target, "__name__", node.target)).split(".")
    return parts[1] if len(parts) > 2 and parts[0] in ("aten", "quantized_decomposed", "dim_order_ops") else parts[0]


def _macs(node) -> int:
    """Multiply-accumulates of a convolution or matrix product (0 for any other op)."""
    name = _op(node)
    try:
        out = node.meta["val"]
        if name.startswith("conv"):
            w = node.args[1].meta["val"]
            return int(out.numel()) * int(np.prod(w.shape[1:]))
        if name in ("addmm",):
            return int(out.numel()) * int(node.args[1].meta["val"].shape[-1])
        if name in ("mm", "bmm", "linear"):
            return int(out.numel()) * int(node.args[0].meta["val"].shape[-1])
    except (AttributeError, KeyError, IndexError, TypeError):
        return 0
    return 0


def _dequantized(arg) -> bool:
    return getattr(arg, "op", None) == "call_function" and "dequantize" in str(arg.target)


def census(gm) -> dict[str, Any]:
    """Delegated (XNNPACK) vs portable ops of a lowered program, by count and by MACs; int8 compute inside."""
    delegated: dict[str, int] = {}
    portable: dict[str, int] = {}
    macs = {"delegated": 0, "portable": 0, "int8": 0}
    for node in gm.graph.nodes:
        if node.op == "call_function" and _op(node) not in SKIP:
            portable[_op(node)] = portable.get(_op(node), 0) + 1
            macs["portable"] += _macs(node)
        elif node.op == "get_attr" and node.name.startswith("lowered_module_"):
            for inner in getattr(gm, node.name).original_module.graph.nodes:
                if inner.op == "call_function" and _op(inner) not in SKIP:
                    delegated[_op(inner)] = delegated.get(_op(inner), 0) + 1
                    m = _macs(inner)
                    macs["delegated"] += m
                    if m and len(inner.args) > 1 and _dequantized(inner.args[1]):
                        macs["int8"] += m
    n_del, n_por = sum(delegated.values()), sum(portable.values())
    total = macs["delegated"] + macs["portable"]
    return {"delegated_ops": n_del, "portable_ops": n_por,
            "delegated_op_share": round(n_del / max(n_del + n_por, 1), 4),
            "delegated_macs": macs["delegated"], "portable_macs": macs["portable"],
            "delegated_mac_share": round(macs["delegated"] / total, 4) if total else None,
            "int8_mac_share": round(macs["int8"] / total, 4) if total else None,
            "portable_op_types": dict(sorted(portable.items())),
            "delegated_op_types": dict(sorted(delegated.items()))}


def quantized_layers(ep) -> list[str]:
    """Module names of the convolutions/linear layers whose weights come out of a dequantize (int8), graph order."""
    out: list[str] = []
    for n in ep.graph.nodes:
        if n.op == "call_function" and _macs(n) and len(n.args) > 1 and _dequantized(n.args[1]):
            stack = n.meta.get("nn_module_stack") or {}
            if stack:
                name = list(stack.values())[-1][0].replace("L['self'].", "")
                if name and name not in out:
                    out.append(name)
    return out


def lower(ep) -> tuple[bytes, dict[str, Any]]:
    """XNNPACK-lowered .pte bytes of an exported program and its delegation census."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    layers = quantized_layers(ep)
    try:
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        facts = census(edge.exported_program().graph_module)
        buf = bytes(edge.to_executorch().buffer)
    except Exception as e:  # noqa: BLE001 - lowering errors are free text
        raise converter_error("ExecuTorch lowering (XNNPACK) failed", e) from None
    facts["quantized_layers"] = layers
    return buf, facts


# ------------------------------------------------------------------------------------------------ precisions


def _dynamic(module, args) -> Any:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(torch.export.export(module, args).module(), quantizer)
    with torch.no_grad():
        prepared(*args)
    return torch.export.export(convert_pt2e(prepared), args)


def _calibration(source: "Source", data: ConvertData) -> list[tuple]:
    import torch

    cal = data.calibration
    n = len(next(iter(cal.values())))
    return [tuple(torch.from_numpy(np.ascontiguousarray(cal[t.name][i:i + 1])) for t in source.inputs)
            for i in range(n)]


def _static(module, args, source: "Source", data: ConvertData, opts: ExecuTorchOptions, fp32: bytes,
            work: Path) -> tuple[bytes, dict[str, Any], list[str]]:
    """Static INT8 through the accuracy search (plain recipe first; judged on the tuning split)."""
    from edgepack import quantsearch
    from edgepack.backends.executorch.search import ETSpace

    cal = data.calibration
    names = [t.name for t in source.inputs]
    space = ETSpace(module, args, _calibration(source, data), names, [t.name for t in source.outputs],
                    work / "search", opts.per_channel, lower, {k: np.asarray(cal[k][:1]) for k in names}, fp32)
    result = quantsearch.search(space, data.search_tuning(), opts.accuracy_search)
    cand = result.candidate
    details: dict[str, Any] = {"accuracy_search": result.to_dict(), "float_layers": list(result.float_layers)}
    notes = [f"PT2E static int8 (XNNPACKQuantizer, {len(space.calibration)} calibration samples)"]
    if result.searched or result.float_layers:
        notes.append(f"accuracy search: recipe '{result.recipe.name}'"
                     + (f" with {len(result.float_layers)} layer(s) kept in float" if result.float_layers else "")
                     + f" ({result.reason})")
    buf, facts = cand.buf, cand.delegation
    space.release(cand)
    return buf, {**facts, **details}, notes


def _rows(facts: dict[str, Any], opts: ExecuTorchOptions, precision: str) -> tuple[list[dict], list[str]]:
    """The report rows: XNNPACK's share of the compute (a warning when most falls back), and for INT8 the int8 share."""
    share = facts.get("delegated_mac_share")
    if share is None:
        share = facts["delegated_op_share"]
    what = (f"{facts['delegated_ops']} ops delegated, {facts['portable_ops']} on portable kernels"
            + (f" ({', '.join(f'{k}×{v}' for k, v in facts['portable_op_types'].items())})"
               if facts["portable_op_types"] else ""))
    row = Check("executorch.xnnpack_compute_share", opts.min_delegated_share, float(share), True, ">=",
                what + ("" if share >= opts.min_delegated_share else "; WARNING: most of the compute falls back"),
                applied=False)
    warnings = []
    if share < opts.min_delegated_share:
        warnings.append(f"XNNPACK took only {share:.0%} of the compute ({what}); the rest runs on ExecuTorch's "
                        "portable reference kernels, which are slow on phones")
    rows = [row.to_dict()]
    if precision == "int8-dynamic" or precision == "int8":
        q = facts.get("int8_mac_share")
        rows.append(Check("executorch.int8_compute_share", 0.0, q, True, ">=",
                          "share of MACs in int8 convolutions/matrix products", applied=False).to_dict())
    return rows, warnings


# ------------------------------------------------------------------------------------------------ convert


def convert(source: "Source", profile: "TargetProfile", options: ExecuTorchOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    import torch
    from executorch.version import __version__

    from edgepack.sources.torch import build_module, example_args

    if source.kind != "torch":  # the plan refuses these with the backend's refusals; a direct call says it too
        raise UnsupportedConversion(f"backend 'executorch' cannot take {source.kind} sources")
    if profile.dynamic_batch:
        raise UnsupportedConversion("an ExecuTorch program here has a static batch",
                                    hint="set dynamic_batch = false in the target profile (batch 1)")
    if profile.precision == "int8" and not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    module = build_module(source)
    args = example_args(source, batch=1)
    ep = capture(module, args)
    notes = [f"executorch {__version__.split('+')[0]}: torch.export → to_edge_transform_and_lower(XnnpackPartitioner)"]
    details: dict[str, Any] = {}
    fp32, facts = lower(ep)
    if profile.precision == "fp32":
        buf = fp32
    elif profile.precision == "int8-dynamic":
        buf, facts = lower(_dynamic(module, args))
        if not facts["quantized_layers"]:
            raise NotApplicable("dynamic INT8 quantizes linear layers only; this model has none that came out int8",
                                hint="use android-executorch-int8 (static INT8)")
        notes.append("PT2E dynamic int8: int8 per-channel weights of the linear layers, activations quantized per call")
    else:
        buf, facts, more = _static(module, args, source, data, options, fp32, work)
        notes += more
    details["float_reference"] = {"size_bytes": len(fp32), "what": "the fp32 .pte of the same model"}
    (out_dir / PROGRAM).write_bytes(buf)
    shutil.rmtree(work, ignore_errors=True)
    details["convert_s"] = round(time.perf_counter() - t0, 3)
    details["delegation"] = {k: facts[k] for k in ("delegated_ops", "portable_ops", "delegated_op_share",
                                                  "delegated_macs", "portable_macs", "delegated_mac_share",
                                                  "int8_mac_share", "portable_op_types", "delegated_op_types")}
    details.update({k: v for k, v in facts.items() if k in ("accuracy_search", "float_layers")})
    details["quantized_layers"] = len(facts.get("quantized_layers", []))
    details["app"] = app_integration(__version__)
    details["model_name"] = source.name
    rows, warnings = _rows(facts, options, profile.precision)
    details["host_checks"] = rows
    inputs = [dataclasses.replace(t, shape=tuple(t.concrete_shape(1))) for t in source.inputs]
    return Artifact(
        backend="executorch", precision=profile.precision, primary=PROGRAM, files=[PROGRAM],
        inputs=inputs, outputs=list(source.outputs), layout="nchw",
        runtime=ExecuTorchRuntime().model_dump(mode="json"), details=details, notes=notes, warnings=warnings,
    )

"""The worker side: ONNX (→ fp16 or int8 QDQ) → ``.ort`` with optimizations fixed, plus its operator config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.ort_mobile.spec import MODEL, OrtOptions, OrtRuntime
from edgepack.errors import ConversionFailed, InputError, NotApplicable, explain

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

from edgepack.backends.ort_mobile.search import COMPUTE_OPS


def convert(source: Source, profile: TargetProfile, options: OrtOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    model_in = Path(source.path)
    details: dict[str, Any] = {"target_platform": options.target_platform}
    staged = work / "model.onnx"
    if profile.precision == "fp32":
        shutil.copyfile(model_in, staged)
    elif profile.precision == "fp16":
        from edgepack.backends.ort_mobile import fp16

        details.update(fp16.convert(model_in, staged, data.calibration, source))
    elif profile.precision == "int8":
        details.update(_quantize(model_in, staged, source, data, options))
        details.update(_qdq_census(staged))
        details["float_reference"] = _float_ort(model_in, work / "fp32", options)
        if details["quantized_compute_ops"] == 0:
            raise ConversionFailed(
                f"int8 was asked for but no compute op ({'/'.join(COMPUTE_OPS)}) came out quantized",
                hint="check options.exclude_nodes / exclude_op_types in the target profile",
            )
    _to_ort(staged, out_dir, options, level=fixed_level(profile.precision, options.target_platform))
    shutil.rmtree(work, ignore_errors=True)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return Artifact(
        backend="ort_mobile", precision=profile.precision, primary=MODEL, files=files,
        inputs=list(source.inputs), outputs=list(source.outputs), layout="nchw",
        runtime=OrtRuntime(model=MODEL).model_dump(mode="json"), details=details,
    )


def _float_ort(model_in: Path, work: Path, opts: OrtOptions) -> dict[str, Any]:
    """Size of the fp32 conversion of the same model (same converter, fp32 optimization level): what the INT8
    bundle's size is compared with (``edgepack.budgets.int8_payoff``)."""
    try:
        work.mkdir(parents=True, exist_ok=True)
        _convert_deterministically(model_in, work / "out", opts.target_platform,
                                   fixed_level("fp32", opts.target_platform))
        found = sorted((work / "out").glob("*.ort"))
        return {"size_bytes": found[0].stat().st_size, "what": "the fp32 .ort of the same model"} if found else {}
    except Exception:  # noqa: BLE001 - a reference figure only; the pipeline falls back to the source's size
        return {}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _qdq_census(path: Path) -> dict[str, int]:
    """Quantize/dequantize nodes in the quantized ONNX and the graph's node count (what INT8 adds to a model)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") for n in nodes)
    return {"qdq_nodes": qdq, "graph_nodes": len(nodes)}


def check_dynamic_applies(source: Source) -> None:
    """Raise :class:`NotApplicable` when dynamic INT8 has nothing to quantize: ORT's ``quantize_dynamic`` as this
    backend runs it (``DYNAMIC_OPS``) rewrites MatMul/Gemm/LSTM/Attention only; a Conv-only model would come out
    float."""
    from edgepack.backends.ort_mobile.search import DYNAMIC_OPS
    from edgepack.sources.onnx import op_census, read_model

    ops = op_census(read_model(Path(source.path), load_weights=False))
    if not any(op in ops for op in DYNAMIC_OPS):
        compute = sorted(op for op in ops if op in COMPUTE_OPS) or ["none"]
        raise NotApplicable(f"dynamic INT8 quantizes MatMul/Gemm/RNN only; this model's compute ops are "
                            f"{', '.join(compute)}", hint="use android-ort-int8 (static INT8)")


def _quantize(model_in: Path, staged: Path, source: Source, data: ConvertData, opts: OrtOptions) -> dict[str, Any]:
    """INT8 through the accuracy search (:mod:`edgepack.quantsearch` over :class:`OrtSpace`): the profile's plain
    recipe first; when it misses the parity budget on the tuning split, other recipes, then sensitivity-ranked
    float layers. The chosen candidate becomes ``staged``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepack import quantsearch
    from edgepack.backends.ort_mobile.search import OrtSpace
    from edgepack.core.batching import per_sample

    if opts.quantization == "static" and not data.calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    original = model_in
    model_in, per_channel, opset_note = _opset_for_qdq(model_in, staged.with_name("upgraded.onnx"), opts.per_channel)
    pre = staged.with_name("preprocessed.onnx")
    try:
        quant_pre_process(str(model_in), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the original instead
        shutil.copyfile(model_in, pre)
    _drop_initializer_shapes(pre)
    space = OrtSpace(pre, original, source, data.calibration, opts, staged.parent / "search", per_channel)
    tuning = data.search_tuning()
    folds: list = []
    if opts.quantization == "static" and opts.accuracy_search.enabled and not per_sample(space.axes):
        # scarce data (tuning overlaps calibration): recipes are compared out of sample (quantsearch.crossfit)
        folds = quantsearch.crossfit(lambda cal, j: OrtSpace(pre, original, source, cal, opts,
                                                             staged.parent / f"search-fold{j}", per_channel),
                                     data.calibration, tuning)
    try:
        result = quantsearch.search(space, tuning, opts.accuracy_search, folds=folds)
        shutil.copyfile(result.candidate.path, staged)
        details = space.describe(result.candidate)
        details["accuracy_search"] = result.to_dict()
    finally:
        space.cleanup()
        quantsearch.close_folds(folds)
    pre.unlink(missing_ok=True)
    if opset_note:
        details["opset"] = opset_note
    return details


def _drop_initializer_shapes(path: Path) -> None:
    """Shapes recorded for weights would go stale when a quantizer rewrites them (see onnxgraph)."""
    import onnx

    from edgepack.onnxgraph import drop_initializer_value_info

    m = onnx.load(str(path))
    if drop_initializer_value_info(m):
        onnx.save(m, str(path))


QDQ_OPSET = 13  # DequantizeLinear/QuantizeLinear take `axis` (per-channel) from opset 13


def _opset_for_qdq(model_in: Path, upgraded: Path, per_channel: bool) -> tuple[Path, bool, str | None]:
    """Per-channel Q/DQ needs opset ≥ 13: upgrade older graphs with onnx's version converter, or, when the converter
    cannot, quantize per-tensor and say so."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(model_in))
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if version >= QDQ_OPSET or not per_channel:
        return model_in, per_channel, None
    try:
        up = version_converter.convert_version(model, QDQ_OPSET)
        onnx.checker.check_model(up)
        onnx.save(up, str(upgraded))
        return upgraded, True, f"upgraded from opset {version} to {QDQ_OPSET} (onnx.version_converter) for per-channel Q/DQ"
    except Exception as e:  # noqa: BLE001 - the converter lacks adapters for some ops
        return model_in, False, (f"opset {version} could not be upgraded to {QDQ_OPSET} ({explain(str(e))}); "
                                 "weights quantized per-tensor instead of per-channel")


ADDR_NO_RANDOMIZE = 0x0040000


def _no_aslr() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(ADDR_NO_RANDOMIZE)


def _convert_deterministically(staged: Path, conv: Path, target_platform: str, level: str) -> None:
    """Run onnxruntime's ONNX → ORT converter in a fresh process without address-space randomization.

    The converter serializes some tables in the iteration order of pointer-keyed hash maps, so the same ONNX gives
    differently laid out (same-size, same-content) flatbuffers from run to run. A fresh interpreter with ASLR off
    (Linux ``personality(ADDR_NO_RANDOMIZE)``) and a fixed ``PYTHONHASHSEED`` allocates the same addresses every
    time, so the bytes are identical. Elsewhere it still converts, without that guarantee.
    """
    import subprocess
    import sys

    # the same bytes in, the same allocations: a fixed file name, a fixed minimal environment, no cwd on sys.path
    work = conv.parent / ".ort-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copyfile(staged, work / "model.onnx")
    env = {"ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL": level, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    cmd = [sys.executable, "-P", "-s", "-m", "onnxruntime.tools.convert_onnx_models_to_ort", "model.onnx",
           "--output_dir", "out", "--optimization_style", "Fixed", "--target_platform", target_platform,
           "--save_optimized_onnx_model"]
    proc = subprocess.run(cmd, check=False, env=env, cwd=work, capture_output=True, text=True,
                          preexec_fn=_no_aslr if sys.platform.startswith("linux") else None)
    shutil.rmtree(conv, ignore_errors=True)
    if (work / "out").is_dir():
        shutil.move(work / "out", conv)
    shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout or "").strip()
        raise ConversionFailed("ONNX → ORT format conversion failed: " + (explain(text) or f"exit {proc.returncode}"),
                               details=text or None)


def fixed_level(precision: str, target_platform: str) -> str:
    """The optimization level baked into the .ort.

    * fp16: "basic" (see :func:`_to_ort`).
    * amd64: "extended". "all" adds ONNX Runtime's NCHWc layout transform, which reorders the weights into the
      vector width of the CPU that converts (16 floats with AVX-512 here): the .ort then computes wrong numbers on
      an AVX2-only x86 box (measured under qemu -cpu Haswell: cosine 0.83 for an fp32 CNN) — ORT itself warns the
      result is hardware-specific. "extended" keeps the fusions (Conv+activation, QDQ → QLinear*) and stays portable
      across x86-64 CPUs.
    * arm: "all" (the converter applies no NCHWc for ARM targets).
    """
    if precision == "fp16":
        return "basic"
    return "extended" if target_platform == "amd64" else "all"


def _to_ort(staged: Path, out_dir: Path, opts: OrtOptions, level: str) -> None:
    """ONNX → .ort with optimizations fixed at ``level``.

    fp16 uses "basic": at "all" the converting session (CPU EP on this host, no fp16 kernels) constant-folds
    the casts it inserts and would store fp32 weights again — an fp16 bundle as large as fp32.
    """
    conv = out_dir / ".ort-out"
    _convert_deterministically(staged, conv, opts.target_platform, level)
    found = sorted(conv.glob("*.ort"))
    ort_file = found[0] if found else conv / MODEL
    if not ort_file.is_file():
        raise ConversionFailed("ONNX → ORT format conversion produced no model.ort")
    shutil.move(ort_file, out_dir / MODEL)
    if opts.ship_onnx:
        opt = sorted(conv.glob("*.optimized.onnx"))
        shutil.move(opt[0] if opt else staged, out_dir / "model.onnx")
    configs = sorted(conv.glob("*.config"))
    if configs:  # the converter names the (temporary) path it read; keep the file reproducible
        lines = configs[0].read_text().splitlines()
        lines = ["# - model.ort" if ln.startswith("# - ") else ln for ln in lines]
        (out_dir / "required_operators.config").write_text("\n".join(lines) + "\n")
    shutil.rmtree(conv, ignore_errors=True)

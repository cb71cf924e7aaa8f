"""The worker side: ONNX (→ fp16 or int8 QDQ) → ``.ort`` with optimizations fixed, plus its operator config."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.ort_mobile.spec import MODEL, OrtOptions, OrtRuntime
from edgepack.errors import ConversionFailed, InputError

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_MIN_OPSET = 13  # DequantizeLinear/QuantizeLinear take `axis` (per-channel) from opset 13 on


def convert(source: "Source", profile: "TargetProfile", options: OrtOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    import onnx

    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    model_in = Path(source.path)
    details: dict[str, Any] = {"target_platform": options.target_platform}
    staged = work / "model.onnx"
    if profile.precision == "fp32":
        shutil.copyfile(model_in, staged)
    elif profile.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = onnx.load(str(model_in))
        m16 = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
        onnx.save(m16, str(staged))
        details["fp16"] = "weights and activations float16; inputs/outputs float32"
    elif profile.precision == "int8":
        details.update(_quantize(model_in, staged, source, data.calibration, options))
        share = _quantized_share(onnx.load(str(staged), load_external_data=False))
        details.update(share)
        if share["quantized_compute_ops"] == 0:
            raise ConversionFailed(
                f"int8 was asked for but no compute op ({'/'.join(COMPUTE_OPS)}) came out quantized",
                hint="check options.exclude_nodes / exclude_op_types in the target profile",
            )
    _to_ort(staged, out_dir, options, level="basic" if profile.precision == "fp16" else "all")
    shutil.rmtree(work, ignore_errors=True)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return Artifact(
        backend="ort_mobile", precision=profile.precision, primary=MODEL, files=files,
        inputs=list(source.inputs), outputs=list(source.outputs), layout="nchw",
        runtime=OrtRuntime(model=MODEL).model_dump(mode="json"), details=details,
    )


def _quantized_share(model) -> dict[str, Any]:
    """How many compute ops read their weights through DequantizeLinear (the QDQ form of an int8 weight)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    total = quantized = 0
    for n in model.graph.node:
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2:
            continue
        total += 1
        w = producers.get(n.input[1])
        if w is not None and w.op_type == "DequantizeLinear":
            quantized += 1
    return {"compute_ops": total, "quantized_compute_ops": quantized,
            "quantized_share": quantized / total if total else 0.0}


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over the calibration split (one model batch at a time)."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int | None) -> None:
        n = len(next(iter(feeds.values())))
        step = batch or 1
        self._items = [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, n - step + 1, step)]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)


def _quantize(model_in: Path, staged: Path, source: "Source", calibration: dict[str, np.ndarray],
              opts: OrtOptions) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise InputError("int8 needs calibration data", hint="pass --calibration RECIPE|file.npz")
    pre = staged.with_name("preprocessed.onnx")
    model_in, upgrade = _upgrade_opset(model_in, staged.with_name("upgraded.onnx"))
    try:
        quant_pre_process(str(model_in), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the original instead
        shutil.copyfile(model_in, pre)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    first = source.inputs[0].shape
    extra = {"ActivationSymmetric": opts.symmetric_activations}
    if opts.calibration_method == "percentile":
        extra["CalibPercentile"] = opts.percentile
    excluded = list(opts.exclude_nodes)
    if opts.exclude_op_types:
        excluded += [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in opts.exclude_op_types]
    quantize_static(
        str(pre), str(staged), _Reader(calibration, None if first[0] is None else first[0]),
        quant_format=QuantFormat.QDQ, per_channel=opts.per_channel, reduce_range=opts.reduce_range,
        activation_type=qtype[opts.activation_type], weight_type=qtype[opts.weight_type],
        calibrate_method=method[opts.calibration_method], nodes_to_exclude=excluded, extra_options=extra,
    )
    pre.unlink(missing_ok=True)
    return {**upgrade, "quantization": "static QDQ", "calibration_method": opts.calibration_method,
            "per_channel": opts.per_channel, "activation_type": opts.activation_type,
            "weight_type": opts.weight_type, "excluded_nodes": excluded}


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(model_in: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """Graphs below opset 13 cannot hold per-channel QDQ (``axis`` on (De)QuantizeLinear): upgrade them with
    onnx's version converter first. Returns the model to quantize and a note for the report."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(model_in))
    have = _opset(model)
    if have >= QDQ_MIN_OPSET:
        return model_in, {}
    try:
        upgraded = version_converter.convert_version(model, QDQ_MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as e:  # noqa: BLE001 - the converter raises assorted errors on adapters it lacks
        raise ConversionFailed(
            f"int8 QDQ needs ONNX opset >= {QDQ_MIN_OPSET}; this model is opset {have} and onnx's version converter "
            f"could not upgrade it: {type(e).__name__}: {e}",
            hint=f"re-export the model at opset >= {QDQ_MIN_OPSET}, or build its fp32/fp16 targets") from None
    onnx.save(upgraded, str(out))
    return out, {"opset_upgrade": f"{have} -> {QDQ_MIN_OPSET} (onnx version converter) for QDQ quantization"}


def _to_ort(staged: Path, out_dir: Path, opts: OrtOptions, level: str) -> None:
    """ONNX → .ort with optimizations fixed at ``level``.

    fp16 uses "basic": at "all" the converting session (CPU EP on this host, no fp16 kernels) constant-folds
    the casts it inserts and would store fp32 weights again — an fp16 bundle as large as fp32.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    conv = out_dir / ".ort-out"
    env_key = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
    previous = os.environ.get(env_key)
    os.environ[env_key] = level
    try:
        convert_onnx_models_to_ort(staged, output_dir=conv, optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform=opts.target_platform, save_optimized_onnx_model=True)
    except Exception as e:  # noqa: BLE001
        raise ConversionFailed(f"ONNX → ORT format conversion failed: {str(e).splitlines()[0][:300]}") from None
    finally:
        if previous is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = previous
    found = sorted(conv.glob("*.ort"))
    ort_file = found[0] if found else conv / MODEL
    if not ort_file.is_file():
        raise ConversionFailed("ONNX → ORT format conversion produced no model.ort")
    shutil.move(ort_file, out_dir / MODEL)
    opt = sorted(conv.glob("*.optimized.onnx"))
    shutil.move(opt[0] if opt else staged, out_dir / "model.onnx")
    configs = sorted(conv.glob("*.config"))
    if configs:  # the converter names the (temporary) path it read; keep the file reproducible
        lines = configs[0].read_text().splitlines()
        lines = ["# - model.ort" if ln.startswith("# - ") else ln for ln in lines]
        (out_dir / "required_operators.config").write_text("\n".join(lines) + "\n")
    shutil.rmtree(conv, ignore_errors=True)

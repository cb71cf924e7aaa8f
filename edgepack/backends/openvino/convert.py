"""Worker side: source → ``ov.Model`` (→ NNCF int8) → ``ir/model.xml`` + ``ir/model.bin`` with app metadata in the
IR's rt_info, and the int8 check on the CPU plugin (silent no-op detection)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.artifact import Artifact, ConvertData
from edgepack.backends.openvino.spec import IR_DIR, XML, OpenVINOOptions, OpenVINORuntime
from edgepack.errors import ConversionFailed

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source


def convert(source: "Source", profile: "TargetProfile", options: OpenVINOOptions, data: ConvertData,
            out_dir: Path) -> Artifact:
    """Write ``ir/`` into ``out_dir`` and describe it. ``options`` is the validated Options object."""
    import openvino as ov

    from edgepack.backends.openvino import ir

    out_dir = Path(out_dir)
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    model, route = ir.read_source(source, work)
    details: dict[str, Any] = {"openvino": ov.__version__, "route": route}
    notes: list[str] = []
    warnings: list[str] = []
    if profile.precision == "int8":
        from edgepack.backends.openvino.quantize import quantize

        ov.save_model(model, str(work / "fp32.xml"), compress_to_fp16=False)
        details["float_reference"] = {"size_bytes": sum(p.stat().st_size for p in work.glob("fp32.*")),
                                      "what": "the fp32 IR of the same model"}
        model, qinfo = quantize(model, source, data, options)
        details.update(qinfo)
    elif profile.precision == "fp16":
        details["fp16"] = "weights stored float16 (compress_to_fp16); inputs/outputs float32"
    ops = ir.compute_ops(model)
    details["compute_ops"] = len(ops)
    details["compute_op_names"] = list(ops)[:100]  # what options.ignored_scope.names refers to
    if profile.precision == "int8":
        details["quantized_compute_ops"] = sum(ops.values())
        details["fake_quantize_ops"] = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
        details["float_compute_ops"] = sorted(n for n, q in ops.items() if not q)[:50]
    meta = ir.app_metadata(data.preprocess, data.class_names, source.inputs, source.outputs,
                           {"precision": profile.precision, "target": profile.name, "source": source.name})
    ir.set_rt_info(model, meta)
    details["rt_info"] = {"/".join(k): v for k, v in meta.items() if k[0] == "model_info"}
    (out_dir / IR_DIR).mkdir(exist_ok=True)
    ov.save_model(model, str(out_dir / XML), compress_to_fp16=profile.precision == "fp16")
    if profile.precision == "int8":
        ac = details.get("accuracy_control")
        if ac and not ac["reached"] and details["quantized_compute_ops"] == 0:
            raise ConversionFailed(
                f"accuracy control reverted every layer to float and still missed max_drop {ac['max_drop']} "
                f"in {ac['metric']} (fp32 {ac['fp32_metric']:.4f}, plain int8 {ac['plain_int8_metric']:.4f})",
                hint="loosen options.accuracy_control.max_drop, or use an fp16/fp32 target")
        _check_int8(out_dir / XML, details, warnings)
        notes.append(f"openvino int8: {details.get('int8_runtime_ops', '?')} of {len(ops)} compute ops run in int8 "
                     "on the CPU plugin")
        if ac:
            notes.append(
                f"accuracy control ({ac['metric']}, max drop {ac['max_drop']}): fp32 {ac['fp32_metric']:.4f}, "
                f"plain int8 {ac['plain_int8_metric']:.4f}, final {ac['final_metric']:.4f}; kept in float: "
                + (", ".join(ac["reverted_to_float"]) or "none"))
            if not ac["reached"]:
                warnings.append(f"accuracy control did not reach a drop ≤ {ac['max_drop']} in {ac['metric']} "
                                f"(final drop {ac['final_drop']:.4f}); raise max_iterations or max_drop")
    shutil.rmtree(work, ignore_errors=True)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    runtime = OpenVINORuntime(model=XML, parity_precision="f32", performance_hint=options.performance_hint)
    return Artifact(
        backend="openvino", precision=profile.precision, primary=IR_DIR, files=files,
        inputs=list(source.inputs), outputs=list(source.outputs),
        layout="nhwc" if source.kind == "tf" else "nchw",
        runtime=runtime.model_dump(mode="json"), details=details, notes=notes, warnings=warnings,
    )


def _check_int8(xml: Path, details: dict[str, Any], warnings: list[str]) -> None:
    """Silent no-op detection: compile the saved IR on the CPU plugin and count compute ops run in int8."""
    import openvino as ov

    from edgepack.backends.openvino import ir

    if "CPU" not in ov.Core().available_devices:
        warnings.append("no OpenVINO CPU device on the build host: int8 execution was not confirmed")
        return
    census = ir.runtime_census(ir.compile_f32(ov.Core().read_model(str(xml))))
    details.update(census)
    if census["int8_runtime_ops"] == 0:
        raise ConversionFailed(
            "int8 was asked for but the CPU plugin runs no compute op in int8 "
            f"(compute kernels: {census['compute_kernels']})",
            hint="check options.ignored_scope / accuracy_control in the target profile",
        )

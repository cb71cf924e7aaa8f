"""OpenVINO: IR bundles (``ir/model.xml`` + ``ir/model.bin``) for Intel CPUs, iGPUs and NPUs, checked on the host CPU.

* Sources: ONNX, PyTorch and TensorFlow/Keras, converted with ``openvino.convert_model``.
* fp32: the converted IR, weights stored float32.
* fp16: weights stored float16 (``save_model(compress_to_fp16=True)``); I/O stays float32. The CPU plugin
  decompresses them and computes in f32, so fp16 halves the download, not the arithmetic.
* int8: NNCF post-training quantization on the recipe's calibration split (preset, subset size, bias correction,
  model type, ignored scope from ``[options]``; defaults are NNCF's own), optionally with accuracy control
  (``[options.accuracy_control]``, see ``quantize.py``). Fails when no compute op runs in int8 on the CPU plugin.
* App-ready: preprocessing (mean/scale, layout, colour order) and labels go into the IR's ``rt_info`` (the
  OpenVINO Model API ``model_info`` section, plus an ``edgepack`` section) — the manifest carries them too.

The host runner compiles twice: parity with ``INFERENCE_PRECISION_HINT=f32`` (no silent bf16/f16 on CPUs that
have it), latency with the profile's performance hint; the facts record what the plugin actually used.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgepack.backends.base import Artifact, Backend, Runner
from edgepack.errors import ConversionFailed, RuntimeUnavailable

IR_DIR = "ir"
XML = f"{IR_DIR}/model.xml"


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IgnoredScope(_Opts):
    """Operations NNCF leaves in float (IR operation names, op types such as "GroupConvolution", or regexes)."""

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()


class AccuracyControl(_Opts):
    """nncf.quantize_with_accuracy_control: revert layers to float until the metric drop is within max_drop."""

    max_drop: float = Field(..., gt=0, le=1, description="largest allowed drop of the metric from the fp32 IR")
    metric: str = Field("top1_agreement", description="top1_agreement | accuracy | module:function | file.py:function")
    drop_type: Literal["absolute", "relative"] = "absolute"
    max_iterations: int = Field(20, ge=1, description="most layer groups reverted")
    ranking_subset_size: int | None = Field(None, ge=1)
    tune_hyperparams: bool = False


class OpenVINOOptions(_Opts):
    performance_hint: Literal["latency", "throughput"] = Field(
        "latency", description="CPU plugin PERFORMANCE_HINT for latency runs (parity always runs forced f32)")
    preset: Literal["performance", "mixed"] = Field(
        "performance", description="NNCF preset: performance = symmetric activations, mixed = asymmetric")
    target_device: Literal["any", "cpu", "gpu", "npu", "cpu_spr"] = "any"
    subset_size: int = Field(300, ge=1, description="calibration samples NNCF reads")
    fast_bias_correction: bool = True
    model_type: Literal["cnn", "transformer"] = "cnn"
    ignored_scope: IgnoredScope = IgnoredScope()
    accuracy_control: AccuracyControl | None = None


class OpenVINOBackend(Backend):
    name = "openvino"
    requires = ("openvino", "nncf")
    extra = "openvino"
    accepts = frozenset({"onnx", "torch", "tf"})
    precisions = frozenset({"fp32", "fp16", "int8"})
    Options = OpenVINOOptions
    description = "OpenVINO IR (.xml + .bin) for Intel CPUs/iGPUs/NPUs on edge boxes and x86 gateways"

    def convert(self, source, target, calib, out_dir: Path) -> Artifact:
        import openvino as ov

        from edgepack.backends.openvino import ir

        opts: OpenVINOOptions = self.options(target)
        out_dir = Path(out_dir)
        work = out_dir / ".work"
        work.mkdir(parents=True, exist_ok=True)
        model, route = ir.read_source(source, work)
        info: dict = {"openvino": ov.__version__, "route": route, "performance_hint": opts.performance_hint}
        warnings: list[str] = []
        if target.precision == "int8":
            from edgepack.backends.openvino.quantize import quantize

            model, qinfo = quantize(model, source, calib, opts)
            info.update(qinfo)
        elif target.precision == "fp16":
            info["fp16"] = "weights stored float16 (compress_to_fp16); inputs/outputs float32"
        ops = ir.compute_ops(model)
        info["compute_ops"] = len(ops)
        info["compute_op_names"] = list(ops)[:100]  # what options.ignored_scope.names refers to
        if target.precision == "int8":
            info["quantized_compute_ops"] = sum(ops.values())
            info["float_compute_ops"] = sorted(n for n, q in ops.items() if not q)[:50]
        meta = ir.app_metadata(calib.preprocess if calib else {}, calib.class_names if calib else None,
                               source.inputs, source.outputs,
                               {"precision": target.precision, "target": target.name, "source": source.name})
        ir.set_rt_info(model, meta)
        info["rt_info"] = {"/".join(k): v for k, v in meta.items() if k[0] == "model_info"}
        (out_dir / IR_DIR).mkdir(exist_ok=True)
        ov.save_model(model, str(out_dir / XML), compress_to_fp16=target.precision == "fp16")
        if target.precision == "int8":
            ac = info.get("accuracy_control")
            if ac and not ac["reached"] and info["quantized_compute_ops"] == 0:
                raise ConversionFailed(
                    f"accuracy control reverted every layer to float and still missed max_drop {ac['max_drop']} "
                    f"in {ac['metric']} (fp32 {ac['fp32_metric']:.4f}, plain int8 {ac['plain_int8_metric']:.4f})",
                    hint="loosen options.accuracy_control.max_drop, or use an fp16/fp32 target")
            self._check_int8(out_dir / XML, info, warnings)
            info["notes"] = [f"openvino int8: {info.get('int8_runtime_ops', '?')} of {len(ops)} compute ops run in "
                             "int8 on the CPU plugin"]
            ac = info.get("accuracy_control")
            if ac:
                info["notes"].append(
                    f"accuracy control ({ac['metric']}, max drop {ac['max_drop']}): fp32 {ac['fp32_metric']:.4f}, "
                    f"plain int8 {ac['plain_int8_metric']:.4f}, final {ac['final_metric']:.4f}; kept in float: "
                    + (", ".join(ac["reverted_to_float"]) or "none"))
                if not ac["reached"]:
                    warnings.append(f"accuracy control did not reach a drop ≤ {ac['max_drop']} in {ac['metric']} "
                                    f"(final drop {ac['final_drop']:.4f}); raise max_iterations or max_drop")
        shutil.rmtree(work, ignore_errors=True)
        files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
        return Artifact(
            backend=self.name, precision=target.precision, primary=IR_DIR, files=files,
            inputs=list(source.inputs), outputs=list(source.outputs),
            layout="nhwc" if source.kind == "tf" else "nchw", info=info, warnings=warnings,
        )

    @staticmethod
    def _check_int8(xml: Path, info: dict, warnings: list[str]) -> None:
        """Silent no-op detection: compile the saved IR on the CPU plugin and count compute ops run in int8."""
        import openvino as ov

        from edgepack.backends.openvino import ir

        if "CPU" not in ov.Core().available_devices:
            warnings.append("no OpenVINO CPU device on the build host: int8 execution was not confirmed")
            return
        census = ir.runtime_census(ir.compile_f32(ov.Core().read_model(str(xml))))
        info.update(census)
        if census["int8_runtime_ops"] == 0:
            raise ConversionFailed(
                "int8 was asked for but the CPU plugin runs no compute op in int8 "
                f"(compute kernels: {census['compute_kernels']})",
                hint="check options.ignored_scope / accuracy_control in the target profile",
            )

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        return OpenVINORunner(artifact, bundle_dir, threads)


class OpenVINORunner(Runner):
    """CPU plugin. ``infer`` runs the parity compile (f32 forced); ``infer_for_latency`` the profile's hint."""

    device = "CPU"

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUnavailable("openvino is not installed on this host") from None
        from edgepack.backends.openvino import ir

        core = ov.Core()
        if self.device not in core.available_devices:
            raise RuntimeUnavailable(f"no OpenVINO {self.device} device on this host ({platform.machine()})")
        model = core.read_model(str(self.bundle_dir / XML))
        hint = str(self.artifact.info.get("performance_hint", "latency")).upper()
        self.parity = core.compile_model(model, self.device, {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"})
        self.timed = core.compile_model(model, self.device, {
            "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": hint})
        self._requests = {id(c): c.create_infer_request() for c in (self.parity, self.timed)}
        self.in_names = [t.name for t in self.artifact.inputs]
        self.out_names = [t.name for t in self.artifact.outputs]
        census = ir.runtime_census(self.timed)
        self.facts = {
            "runtime": f"openvino {ov.__version__}",
            "device": core.get_property(self.device, "FULL_DEVICE_NAME"),
            "threads": self.threads,
            "parity": {"inference_precision": ir.type_name(self.parity.get_property("INFERENCE_PRECISION_HINT")),
                       "execution_devices": list(self.parity.get_property("EXECUTION_DEVICES"))},
            "performance_hint": str(self.timed.get_property("PERFORMANCE_HINT")).rsplit(".", 1)[-1],
            "inference_precision": ir.type_name(self.timed.get_property("INFERENCE_PRECISION_HINT")),
            "execution_devices": list(self.timed.get_property("EXECUTION_DEVICES")),
            "num_streams": int(self.timed.get_property("NUM_STREAMS")),
            **census,
        }

    def _run(self, compiled, feed):
        res = self._requests[id(compiled)].infer({n: np.ascontiguousarray(feed[n]) for n in self.in_names})
        return {n: np.array(res[compiled.output(n)]) for n in self.out_names}

    def infer_impl(self, feed):
        return self._run(self.parity, feed)

    def infer_for_latency(self, feed):
        """Inference as deployed: the profile's performance hint, the plugin's own precision choice."""
        return self._run(self.timed, feed)

    def deactivate_impl(self) -> None:
        self.parity = self.timed = None
        self._requests = {}

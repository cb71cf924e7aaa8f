"""Host runner: the CPU plugin, compiled twice.

``infer`` (parity) is the bundle's own device loader (``device.load_on`` on the CPU plugin: f32 inference
precision forced), so the host and a CPU device compute the same numbers; ``infer_for_latency`` runs a second
compile as deployed (the profile's performance hint, the plugin's own precision choice).
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from edgepack.backends.base import DeviceLoaderRunner
from edgepack.backends.openvino.spec import OpenVINORuntime
from edgepack.errors import RuntimeUnavailable


def latency_config(runtime: OpenVINORuntime, threads: int) -> dict[str, Any]:
    """Compile properties of the deployment-style (timed) compile."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": runtime.performance_hint.upper()}


class OpenVINORunner(DeviceLoaderRunner):
    """CPU plugin. ``infer`` runs the device loader's parity compile; ``infer_for_latency`` the profile's hint."""

    device_module = "edgepack.backends.openvino.device"
    device = "CPU"

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeUnavailable("openvino is not installed on this host") from None
        from edgepack.backends.openvino import device as loader
        from edgepack.backends.openvino import ir

        core = ov.Core()
        if self.device not in core.available_devices:
            raise RuntimeUnavailable(f"no OpenVINO {self.device} device on this host ({platform.machine()})")
        spec = OpenVINORuntime.model_validate(self.artifact.runtime)
        art, runtime = self.artifact.to_dict(), spec.model_dump(mode="json")
        self._infer, parity = loader.load_on(self.bundle_dir, art, runtime, self.threads, self.device)
        self.timed = core.compile_model(core.read_model(str(loader.model_path(self.bundle_dir, art, runtime))),
                                        self.device, latency_config(spec, self.threads))
        self._timed_infer = loader.make_infer(self.timed, art)
        self.facts = {
            "runtime": parity["runtime"],
            "device": core.get_property(self.device, "FULL_DEVICE_NAME"),
            "threads": self.threads,
            "parity": {"inference_precision": parity["inference_precision"],
                       "execution_devices": parity["execution_devices"]},
            "performance_hint": str(self.timed.get_property("PERFORMANCE_HINT")).rsplit(".", 1)[-1],
            "inference_precision": loader.type_name(self.timed.get_property("INFERENCE_PRECISION_HINT")),
            "execution_devices": list(self.timed.get_property("EXECUTION_DEVICES")),
            "num_streams": int(self.timed.get_property("NUM_STREAMS")),
            **ir.runtime_census(self.timed),
        }

    def infer_for_latency(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inference as deployed: the profile's performance hint, the plugin's own precision choice."""
        return self._timed_infer(feed)

    def deactivate_impl(self) -> None:
        super().deactivate_impl()
        self.timed = self._timed_infer = None

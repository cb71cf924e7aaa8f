"""The host runner: the bundle's own device loader (``device.py``), so host and device run one code path."""

from __future__ import annotations

from edgepack.backends.base import DeviceLoaderRunner
from edgepack.errors import RuntimeUnavailable


class ExecuTorchRunner(DeviceLoaderRunner):
    """``executorch.runtime`` (XNNPACK delegate + portable kernels) over ``model.pte``."""

    device_module = "edgepack.backends.executorch.device"

    def activate_impl(self) -> None:
        try:
            super().activate_impl()
        except ImportError as e:  # no executorch runtime on this host
            raise RuntimeUnavailable(str(e)) from None

"""The host runner: the bundle's own device loader (``device.py``), so host and device run one code path."""

from __future__ import annotations

from edgepack.backends.base import DeviceLoaderRunner
from edgepack.errors import RuntimeUnavailable


class TFLiteRunner(DeviceLoaderRunner):
    """LiteRT interpreter (XNNPACK on) behind the signature runner; (de)quantizes and transposes at its edges."""

    device_module = "edgepack.backends.tflite.device"

    def activate_impl(self) -> None:
        try:
            super().activate_impl()
        except ImportError as e:  # no LiteRT runtime, or no Flex delegate for the model's Select-TF ops
            raise RuntimeUnavailable(str(e)) from None

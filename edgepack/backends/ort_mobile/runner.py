"""The host runner: the bundle's own device loader (``device.py``), so host and device run one code path."""

from __future__ import annotations

from edgepack.backends.base import DeviceLoaderRunner


class OrtRunner(DeviceLoaderRunner):
    device_module = "edgepack.backends.ort_mobile.device"

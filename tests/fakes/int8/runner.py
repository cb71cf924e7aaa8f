from edgepack.backends.base import DeviceLoaderRunner


class Int8Runner(DeviceLoaderRunner):
    device_module = "fakes.identity.device"

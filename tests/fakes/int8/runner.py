from edgepack.backends.base import DeviceLoaderRunner


class Int8Runner(DeviceLoaderRunner):
    device_module = "fakes.int8.device"

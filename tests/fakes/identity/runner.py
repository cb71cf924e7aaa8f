from edgepack.backends.base import DeviceLoaderRunner


class IdentityRunner(DeviceLoaderRunner):
    device_module = "fakes.identity.device"

from edgepack.backends.base import DeviceLoaderRunner


class NoisyRunner(DeviceLoaderRunner):
    device_module = "fakes.noisy.device"

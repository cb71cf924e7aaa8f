"""Devices: emulated, ssh and adb transports, inventories, run history and reports (``edgepack device``)."""

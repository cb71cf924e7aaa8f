"""The device inventory (``devices.toml``): one ``[[device]]`` table per device, validated when read.

Kinds and what they need:

* ``local``      this host as a device; torch, TensorFlow and edgepack are made unimportable for the runner.
* ``arm64-emu``  an aarch64 Python under qemu-user (``edgepack device setup arm64-emu`` builds it); latency is
                 recorded as ``emulated`` and never judged.
* ``x86-64-emu`` this host's Python under ``qemu-x86_64-static -cpu Haswell`` (``cpu`` to change): an AVX2 edge box
                 without AVX-512, to prove whether a bundle built here runs on one (latency ``emulated``).
* ``ssh``        a Linux board or Jetson: ``host`` (+ ``user``, ``port``, ``identity``, ``known_hosts``) and the
                 board's ``python``; key-based auth only (BatchMode).
* ``adb``        an Android phone: ``serial``; latency from the benchmark binaries the user put on the phone
                 (``benchmark_model`` for LiteRT, ``onnxruntime_perf_test`` for ONNX Runtime); parity only when
                 ``python`` names a Python on the phone (e.g. Termux), else "parity not run on this device".
* ``command``    any transport as two shell templates (``push``, ``run``), kept for compatibility.
* ``ios``        documented, not driven from here (see docs/devices.md).
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

KINDS = ("local", "arm64-emu", "x86-64-emu", "ssh", "adb", "command", "ios")
EMULATED = ("arm64-emu", "x86-64-emu")


class InventoryError(ValueError):
    """The inventory file is wrong (the message names the file and the device)."""


@dataclass(frozen=True)
class Device:
    """One device of the inventory."""

    name: str
    kind: str = "local"
    device_class: str = ""  # e.g. "android-arm64", "jetson": profile latency budgets of this class are judged here
    python: str = ""  # the device's Python ("" = the host's for local, the emulator's for arm64-emu)
    unavailable: tuple[str, ...] = ()  # local: more modules to make unimportable (tests)
    cpu: str = ""  # qemu -cpu model ("" = cortex-a76 for arm64-emu, Haswell for x86-64-emu)
    host: str = ""
    user: str = ""
    port: int = 22
    identity: str = ""
    known_hosts: str = ""
    serial: str = ""
    adb: str = "adb"  # the adb client (Debian's `adb` package)
    benchmark_model: str = "/data/local/tmp/benchmark_model"
    ort_perf_test: str = "/data/local/tmp/onnxruntime_perf_test"
    push: str = ""
    run: str = ""
    remote: str = "/tmp/edgepack-bundles/{name}"
    backends: tuple[str, ...] = ()  # empty = every backend
    timeout_s: float = 600.0
    retries: int = 1  # an INFRA run is tried again this many times; a later PASS is FLAKY
    latency_emulated: bool = False  # an ssh/command "board" that is really an emulator (CI's loopback one)

    @property
    def emulated(self) -> bool:
        return self.kind in EMULATED or self.latency_emulated

    @property
    def klass(self) -> str:
        """The device class used for latency budgets (``emulated`` devices never judge latency)."""
        return self.device_class or self.kind


def parse_devices(data: dict, origin: str = "<inventory>") -> list[Device]:
    known = {f.name for f in fields(Device)}
    devices: list[Device] = []
    for entry in data.get("device", []):
        name = entry.get("name")
        if not name:
            raise InventoryError(f"{origin}: a [[device]] has no name")
        unknown = set(entry) - known
        if unknown:
            raise InventoryError(f"{origin}: device {name}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        dev = Device(**kw)
        if dev.kind not in KINDS:
            raise InventoryError(f"{origin}: device {name} has unknown kind '{dev.kind}' ({', '.join(KINDS)})")
        need = {"ssh": ("host", "python"), "adb": ("serial",), "command": ("push", "run")}.get(dev.kind, ())
        missing = [k for k in need if not getattr(dev, k)]
        if missing:
            raise InventoryError(f"{origin}: {dev.kind} device {name} needs {', '.join(missing)}")
        if dev.retries < 0 or dev.timeout_s <= 0:
            raise InventoryError(f"{origin}: device {name}: retries must be >= 0 and timeout_s > 0")
        devices.append(dev)
    if len({d.name for d in devices}) != len(devices):
        raise InventoryError(f"{origin}: device names must be unique")
    return devices


def load_inventory(path: Path) -> list[Device]:
    """Read ``devices.toml``; InventoryError names the problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InventoryError(f"cannot read {path}: {e}") from None
    return parse_devices(data, str(path))


def host_python() -> str:
    return sys.executable


__all__ = ["Device", "InventoryError", "KINDS", "load_inventory", "parse_devices", "field"]

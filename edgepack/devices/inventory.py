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

import math
import string
import sys
import tomllib
from dataclasses import field, fields
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from edgepack.errors import ConfigError

KINDS = ("local", "arm64-emu", "x86-64-emu", "ssh", "adb", "command", "ios")
EMULATED = ("arm64-emu", "x86-64-emu")
MAX_RETRIES = 10  # an always-failing device is tried at most 11 times
MAX_TIMEOUT_S = 86_400.0  # one attempt may take a day, not forever
TEMPLATE_FIELDS = {"push": ("bundle", "remote", "name"), "run": ("bundle", "remote", "name"), "remote": ("name",)}
HINT = "see docs/devices.md (the [[device]] keys, their types and bounds)"


class InventoryError(ConfigError):
    """The inventory file is wrong (the message names the file, the device and the key)."""

    default_hint = HINT


def _printable(v: str, what: str) -> str:
    if any(not c.isprintable() for c in v):
        raise ValueError(f"{what} holds a control character (newline, tab, escape)")
    return v


Text = Annotated[str, Strict(), Field(max_length=4096)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Device:
    """One device of the inventory (a strict model: wrong types, values out of bounds and unknown keys are refused)."""

    name: Annotated[str, Strict(), Field(min_length=1, max_length=64)]
    kind: Literal["local", "arm64-emu", "x86-64-emu", "ssh", "adb", "command", "ios"] = "local"
    device_class: Annotated[str, Strict(), Field(max_length=64)] = ""  # e.g. "android-arm64", "jetson"
    python: Text = ""  # the device's Python ("" = the host's for local, the emulator's for arm64-emu)
    unavailable: tuple[Annotated[str, Strict(), Field(max_length=200)], ...] = ()  # local: more modules blocked
    cpu: Annotated[str, Strict(), Field(max_length=64)] = ""  # qemu -cpu model
    host: Annotated[str, Strict(), Field(max_length=255)] = ""
    user: Annotated[str, Strict(), Field(max_length=64)] = ""
    port: Annotated[int, Strict(), Field(ge=1, le=65535)] = 22
    identity: Text = ""
    known_hosts: Text = ""
    serial: Annotated[str, Strict(), Field(max_length=128)] = ""
    adb: Text = "adb"  # the adb client (Debian's `adb` package)
    benchmark_model: Text = "/data/local/tmp/benchmark_model"
    ort_perf_test: Text = "/data/local/tmp/onnxruntime_perf_test"
    push: Text = ""
    run: Text = ""
    remote: Text = "/tmp/edgepack-bundles/{name}"
    backends: tuple[Annotated[str, Strict(), Field(max_length=64)], ...] = ()  # empty = every backend
    timeout_s: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)] = 600.0
    retries: Annotated[int, Strict(), Field(ge=0, le=MAX_RETRIES)] = 1  # an INFRA run is tried again; PASS then = FLAKY
    latency_emulated: Annotated[bool, Strict()] = False  # an ssh/command "board" that is really an emulator

    @field_validator("name", "device_class", "python", "cpu", "host", "user", "identity", "known_hosts", "serial",
                     "adb", "benchmark_model", "ort_perf_test", "push", "run", "remote")
    @classmethod
    def _no_control(cls, v: str, info) -> str:
        return _printable(v, info.field_name)

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _number(cls, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a number of seconds")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number of seconds")
        return v

    @field_validator("host", "user", "serial")
    @classmethod
    def _no_option(cls, v: str, info) -> str:
        if v.startswith("-") or " " in v:
            raise ValueError(f"{info.field_name} must not start with '-' or hold spaces")
        return v

    @model_validator(mode="after")
    def _templates(self):
        for key, allowed in TEMPLATE_FIELDS.items():
            check_template(getattr(self, key), allowed, key)
        remote = self.remote
        if not remote or remote.startswith("-"):
            raise ValueError("remote must name a folder on the device (not empty, not starting with '-')")
        if "{name}" in remote and not remote.endswith("/{name}"):
            raise ValueError("remote may hold {name} only as its last path component (e.g. /tmp/edgepack/{name})")
        need = {"ssh": ("host", "python"), "adb": ("serial",), "command": ("push", "run")}.get(self.kind, ())
        missing = [k for k in need if not getattr(self, k)]
        if missing:
            raise ValueError(f"a {self.kind} device needs {', '.join(missing)}")
        return self

    @property
    def emulated(self) -> bool:
        return self.kind in EMULATED or self.latency_emulated

    @property
    def klass(self) -> str:
        """The device class used for latency budgets (``emulated`` devices never judge latency)."""
        return self.device_class or self.kind


def check_template(template: str, allowed: tuple[str, ...], key: str) -> None:
    """A template may use only the named placeholders, plain (no attribute, index, conversion or format spec)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{key} is not a valid template ({e}); write a literal brace as {{{{ or }}}}") from None
    for _, fname, spec, conv in parts:
        if fname is None:
            continue
        if fname not in allowed or spec or conv:
            shown = "{" + fname + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{key} uses the placeholder {shown}; allowed: "
                             + ", ".join("{" + a + "}" for a in allowed))


def _describe(e: ValidationError) -> tuple[str, str]:
    """(key, what is wrong) of the first error."""
    err = e.errors(include_url=False)[0]
    loc = [str(x) for x in err.get("loc", ()) if not isinstance(x, int)]
    key = loc[0] if loc else ""
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "unexpected_keyword_argument":
        msg = "unknown key"
    return key, msg


def parse_devices(data: object, origin: str = "<inventory>") -> list[Device]:
    """The devices of a parsed inventory; InventoryError names the file, the device and the key."""
    from edgepack.safety import shown

    if not isinstance(data, dict):
        raise InventoryError(f"{origin}: not a table of [[device]] entries")
    unknown_top = sorted(set(data) - {"device"})
    if unknown_top:
        raise InventoryError(f"{origin}: unknown top-level key '{shown(unknown_top[0], 60)}'",
                             hint="an inventory holds only [[device]] tables; " + HINT)
    entries = data.get("device", [])
    if not isinstance(entries, list):
        raise InventoryError(f"{origin}: 'device' must be an array of tables ([[device]])")
    known = [f.name for f in fields(Device)]
    devices: list[Device] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InventoryError(f"{origin}: device #{i + 1} is not a table (write it as [[device]])")
        name = entry.get("name")
        who = f"device '{shown(name, 64)}'" if isinstance(name, str) and name else f"device #{i + 1}"
        extra = sorted(set(entry) - set(known))
        if extra:
            raise InventoryError(f"{origin}: {who}: unknown key '{shown(extra[0], 60)}'",
                                 hint=f"known keys: {', '.join(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        try:
            dev = Device(**kw)
        except ValidationError as e:
            key, msg = _describe(e)
            if key == "kind":
                msg = f"unknown kind '{shown(entry.get('kind'), 40)}' (one of: {', '.join(KINDS)})"
            where = f" key '{key}':" if key and key in known else ""
            raise InventoryError(f"{origin}: {who}:{where} {shown(msg, 200)}") from None
        except TypeError as e:  # a missing name
            raise InventoryError(f"{origin}: {who}: {shown(e, 200)}") from None
        devices.append(dev)
    names = [d.name for d in devices]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InventoryError(f"{origin}: device '{shown(dup[0], 64)}' is named twice", hint="device names are unique")
    return devices


def load_inventory(path: Path) -> list[Device]:
    """Read ``devices.toml`` (a regular UTF-8 file under the text limit); InventoryError names the problem."""
    from edgepack.safety import read_bytes, shown

    raw = read_bytes(path, "device inventory", error=InventoryError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InventoryError(f"device inventory {shown(path)} is not UTF-8 (byte {e.start})",
                             hint="save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(f"device inventory {shown(path)} is not valid TOML: {shown(e, 160)}") from None
    except RecursionError:
        raise InventoryError(f"device inventory {shown(path)} is nested too deeply") from None
    return parse_devices(data, shown(path))


def host_python() -> str:
    return sys.executable


__all__ = ["Device", "InventoryError", "KINDS", "MAX_RETRIES", "MAX_TIMEOUT_S", "check_template", "load_inventory",
           "parse_devices", "field"]

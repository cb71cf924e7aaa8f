"""The backend registry: one line per built-in backend (name → module:class), plus third-party backends
registered through the ``edgepack.backends`` entry-point group. Importing a backend imports no framework."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from edgepack.errors import ConfigError

if TYPE_CHECKING:
    from edgepack.backends.base import Backend
    from edgepack.config import TargetProfile

ENTRY_POINT_GROUP = "edgepack.backends"

BACKENDS: dict[str, str] = {
    "ort_mobile": "edgepack.backends.ort_mobile:OrtMobileBackend",
    "openvino": "edgepack.backends.openvino:OpenVINOBackend",
    "tflite": "edgepack.backends.tflite:TFLiteBackend",
    "coreml": "edgepack.backends.coreml:CoreMLBackend",
    "tensorrt": "edgepack.backends.tensorrt:TensorRTBackend",
    "executorch": "edgepack.backends.executorch:ExecuTorchBackend",
}


_REGISTERED: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register a backend at run time (``module:Class``): for embedders and tests; packages use entry points."""
    _REGISTERED[name] = target


def plugins() -> dict[str, str]:
    """Third-party backends from installed packages' ``edgepack.backends`` entry points (name → module:class)."""
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BACKENDS:
            found[ep.name] = ep.value
    return {**found, **{k: v for k, v in _REGISTERED.items() if k not in BACKENDS}}


def _shown(text: object) -> str:
    from edgepack.safety import shown

    return shown(text, 160)


def table() -> dict[str, str]:
    return {**BACKENDS, **plugins()}


def names() -> list[str]:
    return list(table())


def get(name: str) -> "Backend":
    """The backend registered as ``name`` (a ConfigError with a suggestion when unknown)."""
    known = table()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known backends: {', '.join(known)}"
        raise ConfigError(f"unknown backend '{name}'", hint=hint)
    module, sep, cls = known[name].partition(":")
    where = f"backend '{name}' ({_shown(known[name])})"
    if not sep or not module or not cls:
        raise ConfigError(f"{where} is not a module:Class entry point", hint="fix the package's entry point")
    try:  # a plug-in's import runs its code: whatever it raises (even SystemExit) is this backend's error only
        backend = getattr(importlib.import_module(module), cls)()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - third-party code; KeyboardInterrupt still stops us
        text = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{where} cannot be loaded: {type(e).__name__}" + (f": {_shown(text)}" if text else ""),
                          hint="reinstall or uninstall the package that provides it (`edgepack doctor` lists "
                          "every installed plug-in)") from None
    from edgepack.backends.base import Backend

    if not isinstance(backend, Backend):
        raise ConfigError(f"{where} is not an edgepack Backend", hint="fix the package's entry point")
    if backend.name != name:
        raise ConfigError(f"backend registered as '{name}' calls itself '{backend.name}'",
                          hint="fix the entry point name")
    return backend


@dataclass(frozen=True)
class Target:
    """A validated target: the profile, its backend and the backend's validated Options (built once)."""

    profile: "TargetProfile"
    backend: "Backend"
    options: Any

    @property
    def name(self) -> str:
        return self.profile.name


def resolve(profile: "TargetProfile") -> Target:
    """Validate a profile against its backend (precision, options) and return the Target value."""
    where = profile.path or profile.name
    try:
        backend = get(profile.backend)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
    return Target(profile, backend, backend.validate(profile))

"""The backend registry: one line per backend (name → module:class). Importing a backend imports no framework."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from edgepack.errors import ConfigError

if TYPE_CHECKING:
    from edgepack.backends.base import Backend
    from edgepack.config import TargetProfile

BACKENDS: dict[str, str] = {
    "ort_mobile": "edgepack.backends.ort_mobile:OrtMobileBackend",
    "openvino": "edgepack.backends.openvino:OpenVINOBackend",
    "tflite": "edgepack.backends.tflite:TFLiteBackend",
    "coreml": "edgepack.backends.coreml:CoreMLBackend",
}


def names() -> list[str]:
    return list(BACKENDS)


def get(name: str) -> "Backend":
    """The backend registered as ``name`` (a ConfigError with a suggestion when unknown)."""
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known backends: {', '.join(BACKENDS)}"
        raise ConfigError(f"unknown backend '{name}'", hint=hint)
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def validate_profile(profile: "TargetProfile") -> None:
    """Refuse precisions and options the profile's backend does not support, naming the allowed values."""
    where = profile.path or profile.name
    try:
        backend = get(profile.backend)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
    if profile.precision not in backend.precisions:
        allowed = ", ".join(sorted(backend.precisions))
        raise ConfigError(
            f"{where}: backend '{backend.name}' does not support precision '{profile.precision}'",
            hint=f"allowed precisions: {allowed}",
        )
    try:
        backend.Options.model_validate(profile.options)
    except ValidationError as e:
        from edgepack.config import validation_message

        raise validation_message(e, backend.Options, where, prefix="options.") from None

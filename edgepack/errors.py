"""User-facing errors. Each carries a one-line message and a hint; the CLI prints both and exits 2.

Parity and budget misses are *results* (see ``edgepack.report``), never exceptions.
"""

from __future__ import annotations


class EdgepackError(Exception):
    """An error caused by the user's input, configuration or environment (exit code 2)."""

    exit_code = 2
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __reduce__(self):  # keep message and hint across process boundaries
        return (self.__class__, (self.message, self.hint))

    def __str__(self) -> str:
        return self.message


class ConfigError(EdgepackError):
    """A target profile, calibration recipe or command-line option is invalid."""

    default_hint = "run `edgepack targets` to list valid profiles, or see targets/README.md"


class InputError(EdgepackError):
    """A model, weights or data file is missing, unreadable or malformed."""

    default_hint = "check the path and that the file is complete"


class MissingDependency(EdgepackError):
    """A backend or source framework is not installed."""

    default_hint = "run `edgepack doctor` to see what is installed"


class UnsupportedConversion(EdgepackError):
    """The requested source → backend route, op or option is not supported."""


class ConversionFailed(EdgepackError):
    """A converter ran and failed."""

    default_hint = "rerun with EDGEPACK_DEBUG=1 for the converter's full output"


class RuntimeUnavailable(EdgepackError):
    """A backend's runtime cannot execute its artifact on this host (parity is deferred to the device)."""


class BundleError(EdgepackError):
    """A bundle folder is missing pieces or is not a bundle."""

    default_hint = "build it again with `edgepack build`"

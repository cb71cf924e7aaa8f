"""User-facing errors. Each carries a one-line message and a hint; the CLI prints both and exits 2.

Parity and budget misses are *results* (see ``edgepack.report``), never exceptions.
"""

from __future__ import annotations

import re


class EdgepackError(Exception):
    """An error caused by the user's input, configuration or environment (exit code 2).

    ``message`` is one line a user acts on; ``details`` keeps the converter's or runtime's full output (written into
    the report, printed with EDGEPACK_DEBUG=1).
    """

    exit_code = 2
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details = details

    def __reduce__(self):  # keep message, hint and details across process boundaries
        return (self.__class__, (self.message, self.hint, self.details))

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


class NotApplicable(UnsupportedConversion):
    """A target that could be built but would mean nothing for this model (e.g. dynamic INT8 of a model with no
    MatMul/Gemm/RNN): the plan skips it, with or without ``--skip-unavailable``."""


class ConversionFailed(EdgepackError):
    """A converter ran and failed."""

    default_hint = "the converter's full message is in the build report (the target's `details`); EDGEPACK_DEBUG=1 prints it"


class RuntimeUnavailable(EdgepackError):
    """A backend's runtime cannot execute its artifact on this host (parity is deferred to the device)."""


class BundleError(EdgepackError):
    """A bundle folder is missing pieces or is not a bundle."""

    default_hint = "build it again with `edgepack build`"


# lines that say where a check fired, not what went wrong
_NOISE = re.compile(r"^(Traceback \(most recent call last\)|File \"|Check '.*' failed at|\S+\.(cpp|cc|hpp|h|py):\d+"
                    r"|at \S+\.(cpp|cc):\d+|-{3,}|={3,}|\^+$|\[ ?(ERROR|WARNING) ?\]\s*$)")
_LOCATION = re.compile(r"(Exception from \S+|failed at \S+)\.(cpp|cc|hpp|h):\d+:?\s*$")
_CAUSE = re.compile(r"(not supported|unsupported|no conversion rule|cannot|can't|could not|unable|invalid|unknown|"
                    r"missing|mismatch|expected|expecting|must|requires?|not found|not implemented|unconverted|failed to|not equal|"
                    r"error:|exception:|only supports?|out of range|overflow)", re.IGNORECASE)


def explain(text: str, limit: int = 300) -> str:
    """The line of a converter's message that says what went wrong (not where an assertion fired).

    Prefers the first line naming a cause ("not supported", "No conversion rule", "missing", …) over location lines
    such as ``Check 'false' failed at src/…/unconverted_ops_report.cpp:151``; Python traceback frames are skipped;
    falls back to the first remaining line.
    """
    lines = [ln.rstrip() for ln in str(text).splitlines() if ln.strip()]
    # traceback frames and their code lines are indented; the exception's own lines are not
    lines = [ln.strip() for ln in lines if not ln.startswith((" ", "\t")) or not any(
        x.startswith("Traceback (most recent call last)") for x in lines)]
    useful = [ln for ln in lines if not _NOISE.match(ln) and not _LOCATION.search(ln)]
    pick = next((ln for ln in useful if _CAUSE.search(ln)), useful[0] if useful else (lines[-1] if lines else ""))
    if re.fullmatch(r"[\w.]+:?", pick):  # a bare exception name (an assert): say which statement failed, and where
        raw = [ln for ln in str(text).splitlines() if ln.strip()]
        frames = [i for i, ln in enumerate(raw) if ln.strip().startswith('File "')]
        if frames:
            where = re.search(r'File "([^"]+)", line (\d+), in (\S+)', raw[frames[-1]])
            stmt = next((ln.strip() for ln in raw[frames[-1] + 1:] if ln.strip() and not set(ln.strip()) <= set("^~ ")), "")
            if where:
                pick = (f"{pick.rstrip(':')} in {where.group(3)} ({Path_name(where.group(1))}:{where.group(2)})"
                        + (f": {stmt}" if stmt else ""))
    return pick[:limit]


def Path_name(path: str) -> str:  # noqa: N802 - a tiny basename helper (os.path without importing os here)
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def converter_error(what: str, exc: BaseException, hint: str | None = None) -> "ConversionFailed":
    """A ConversionFailed whose first line names the cause and whose details keep the converter's whole message."""
    import traceback

    text = str(exc).strip()
    reason = explain(text) or type(exc).__name__
    full = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ConversionFailed(f"{what}: {reason}", hint=hint, details=full)

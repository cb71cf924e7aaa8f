"""edgepack: turn a trained model into verified deployment bundles for edge targets.

Importing this package imports no ML framework; every framework is loaded lazily at the edges. The Python API
(``edgepack.build``, ``plan``, ``check``, ``verify``; see docs/api.md) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name → the module that defines it (imported on first access: `import edgepack` stays light)
_LAZY = {
    "build": "edgepack.api",
    "plan": "edgepack.plan",  # the module edgepack.plan is callable: it hands the call to edgepack.api.plan
    "check": "edgepack.api",
    "verify": "edgepack.api",
    "BuildResult": "edgepack.api",
    "BuildFailed": "edgepack.api",
    "TargetReport": "edgepack.report",
    "EdgepackError": "edgepack.errors",
}

__all__ = ["BuildFailed", "BuildResult", "EdgepackError", "TargetReport", "__version__", "build", "check", "plan",
           "verify"]

def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
    import importlib

    imported = importlib.import_module(module)
    value = imported if module == f"edgepack.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

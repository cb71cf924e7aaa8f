"""The executorch Options and Runtime spec, the file name and the app-integration coordinates, shared by the package
``__init__`` and ``convert.py`` without either importing the other."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edgepack.artifact import RuntimeSpec
from edgepack.quantsearch import AccuracySearch

PROGRAM = "model.pte"

__all__ = ["PROGRAM", "ExecuTorchOptions", "ExecuTorchRuntime", "app_integration"]


class ExecuTorchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_channel: bool = Field(True, description="int8: per-channel symmetric weight scales (per-tensor when false)")
    min_delegated_share: float = Field(0.5, ge=0.0, le=1.0, description="least share of the graph's compute (MACs) "
                                       "XNNPACK must take; below it the report carries a warning (the rest runs on "
                                       "ExecuTorch's portable reference kernels)")
    accuracy_search: AccuracySearch = Field(AccuracySearch(), description="int8: recipe search and sensitivity-ranked "
                                            "float layers on the tuning split when the plain build misses the "
                                            "parity budget")


class ExecuTorchRuntime(RuntimeSpec):
    """How to run ``model.pte``: the program, the method and its I/O order (the artifact's I/O order)."""

    program: str = Field(PROGRAM, description="the .pte file, relative to the bundle")
    method: str = Field("forward", description="the program's method the runner executes")
    delegate: str = Field("XnnpackBackend", description="the ExecuTorch backend the program was lowered to")


def app_integration(version: str) -> dict[str, object]:
    """Where apps get the runtime that matches the ``executorch`` version that wrote the .pte (the Android AAR on
    Maven Central; the Swift package's ``swiftpm-<version>`` branch, ExecuTorch's documented scheme)."""
    v = version.split("+")[0]
    return {
        "executorch_version": v,
        "android": {"gradle": f"org.pytorch:executorch-android:{v}", "abis": ["arm64-v8a", "x86_64"],
                    "api": "org.pytorch.executorch.Module.load(path).forward(EValue.from(tensor))"},
        "ios": {"swift_package": "https://github.com/pytorch/executorch.git", "branch": f"swiftpm-{v}",
                "products": ["executorch", "backend_xnnpack", "kernels_optimized"],
                "linker_flags": "-all_load (backends and kernels register themselves at start-up)"},
    }

"""The backend contract: convert a source into an artifact, and run that artifact on this host.

A backend module imports its framework only inside ``convert`` / ``runner`` (they run in a worker process).
"""

from __future__ import annotations

import abc
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgepack.errors import MissingDependency
from edgepack.signature import TensorSpec

if TYPE_CHECKING:
    from edgepack.calibration import CalibrationData
    from edgepack.config import TargetProfile
    from edgepack.sources import Source


class NoOptions(BaseModel):
    """Backends without options accept none (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Artifact:
    """What a backend wrote: files relative to the bundle folder plus facts the manifest records."""

    backend: str
    precision: str
    primary: str  # the model file apps load; the size budget applies to it
    files: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layout: str = "nchw"
    quantization: dict[str, dict[str, Any]] = field(default_factory=dict)  # tensor name → scale/zero_point/dtype
    info: dict[str, Any] = field(default_factory=dict)  # converter notes (versions, quantized share, …)
    warnings: list[str] = field(default_factory=list)
    model_files: list[str] = field(default_factory=list)  # what the app ships (size budget); default: primary

    def shipped(self) -> list[str]:
        """Files that make up the deployable model (e.g. .xml + .bin), for the size budget."""
        return list(self.model_files) or [self.primary]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "primary": self.primary,
            "files": list(self.files),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "layout": self.layout,
            "quantization": self.quantization,
            "info": self.info,
            "warnings": list(self.warnings),
            "model_files": list(self.model_files),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        return cls(
            backend=d["backend"],
            precision=d["precision"],
            primary=d["primary"],
            files=list(d["files"]),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            layout=d.get("layout", "nchw"),
            quantization=d.get("quantization", {}),
            info=d.get("info", {}),
            warnings=list(d.get("warnings", [])),
            model_files=list(d.get("model_files", [])),
        )


class Runner(abc.ABC):
    """Runs an artifact: ``activate`` → ``infer`` (any number of times) → ``deactivate``.

    ``infer`` takes and returns float/int numpy arrays in the *reference* model's layout and dtype
    (a runner (de)quantizes and transposes at its edges), keyed by tensor name.
    """

    def __init__(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> None:
        self.artifact = artifact
        self.bundle_dir = Path(bundle_dir)
        self.threads = threads
        self.active = False
        self.facts: dict[str, Any] = {}  # what the runtime actually used (precision, device, …), for the report

    def activate(self) -> None:
        self.activate_impl()
        self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
        self.active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_impl(feed)

    @property
    def max_batch(self) -> int | None:
        """Largest batch the artifact takes in one call (None = any)."""
        first = self.artifact.inputs[0].shape if self.artifact.inputs else ()
        return None if (first and first[0] is None) else (first[0] if first else 1)

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        return None


class Backend(abc.ABC):
    """Converts a source into an artifact and provides a host runner for it."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]  # import names, checked with find_spec, never imported here
    extra: ClassVar[str]  # pip extra suggested when something is missing
    accepts: ClassVar[frozenset[str]]  # source kinds taken directly; the pipeline bridges others to onnx
    precisions: ClassVar[frozenset[str]]
    Options: ClassVar[type[BaseModel]] = NoOptions
    description: ClassVar[str] = ""

    @classmethod
    def missing(cls) -> list[str]:
        """Required import names that are not installed."""
        out = []
        for mod in cls.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    out.append(mod)
            except (ImportError, ValueError):
                out.append(mod)
        return out

    @classmethod
    def ensure_available(cls) -> None:
        missing = cls.missing()
        if missing:
            raise MissingDependency(
                f"backend '{cls.name}' needs {', '.join(missing)}, which is not installed",
                hint=f"pip install -c constraints.txt -e '.[{cls.extra}]'",
            )

    def options(self, target: "TargetProfile") -> BaseModel:
        return self.Options.model_validate(target.options)

    @abc.abstractmethod
    def convert(
        self, source: "Source", target: "TargetProfile", calib: "CalibrationData | None", out_dir: Path
    ) -> Artifact:
        """Write the artifact's files into ``out_dir`` and describe them. Prints nothing, installs nothing.

        ``calib`` is the build's data: ``calib.calibration`` (for quantizers; never the holdout split),
        ``calib.class_names`` (for app metadata). It is None only when a backend is driven directly.
        """

    @abc.abstractmethod
    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        """A runner for the artifact on this host; raises RuntimeUnavailable where it cannot run here."""

    def needs_calibration(self, target: "TargetProfile") -> bool:
        return target.precision.startswith("int8") and target.precision != "int8-dynamic"

"""What a backend hands to the rest of the build: an Artifact (files + I/O + a typed runtime spec), a value.

``runtime`` is the backend's :class:`RuntimeSpec` dumped to JSON-able data: everything a runner needs to run the
model (I/O names and layout, quantization, compute units, precision hints). The host runner reads it back through
the backend's own RuntimeSpec class; the bundle's numpy-only device loader reads the same keys from the manifest.
``details`` are free-form converter facts for people (versions, quantized share, …), never read by a runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgepack.core.batching import Feeds, max_batch
from edgepack.signature import TensorSpec


class RuntimeSpec(BaseModel):
    """Base of every backend's runtime spec: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(BaseModel):
    """What a backend wrote: files relative to the bundle folder plus what runners and the manifest need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    precision: str
    primary: str = Field(description="the model file (or folder) apps load")
    files: list[str] = Field(description="every file the backend wrote, relative to the bundle")
    model_files: list[str] = Field(default_factory=list, description="what the app ships (size budget); "
                                   "default: primary")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layout: str = "nchw"
    quantization: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                    description="tensor name → scale/zero_point/dtype")
    runtime: dict[str, Any] = Field(default_factory=dict, description="the backend's RuntimeSpec")
    details: dict[str, Any] = Field(default_factory=dict, description="free-form converter facts")
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def shipped(self) -> list[str]:
        """Files that make up the deployable model (e.g. .xml + .bin), for the size budget."""
        return list(self.model_files) or [self.primary]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def max_batch(self) -> int | None:
        """Largest batch the artifact takes in one call (None = any)."""
        return max_batch(self.inputs[0].shape if self.inputs else ())


class ConvertData(BaseModel):
    """The build's data as a backend sees it: the calibration split (for quantizers), the tuning split (inputs,
    labels, reference outputs, the parity limits and output kinds) only for backends that declare they tune on
    data, class names and preprocessing (for app metadata), and summary
    ranges of the holdout (for calibration sanity warnings; the holdout itself never reaches a backend)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    calibration: dict[str, np.ndarray] = Field(default_factory=dict)
    tuning: dict[str, np.ndarray] | None = None
    tuning_labels: np.ndarray | None = None
    tuning_reference: dict[str, np.ndarray] | None = Field(None, description="the reference model's outputs on the "
                                                           "tuning split (what the accuracy search compares with)")
    limits: dict[str, Any] | None = Field(None, description="the parity limits the build judges (for the search)")
    kinds: dict[str, str] | None = Field(None, description="output name → decided kind")
    output_specs: dict[str, dict[str, Any]] | None = Field(None, description="output name → its spec "
                                                          "(core.outspec.OutputSpec.to_dict: batch axis, groups)")
    class_names: list[str] | None = None
    preprocess: dict[str, Any] = Field(default_factory=dict)
    holdout_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    searches: dict[str, dict[str, Any]] = Field(default_factory=dict, description="earlier INT8 searches of this "
                                                "build by problem key ({'target', 'search'}): a target with the same "
                                                "quantization problem reuses the choice instead of searching again")

    def search_tuning(self):
        """The tuning split as :mod:`edgepack.quantsearch` takes it, or None when this build passed none."""
        from edgepack.core.limits import Limits
        from edgepack.quantsearch import Tuning

        if not self.tuning or self.tuning_reference is None:
            return None
        from edgepack.core.outspec import from_dict

        return Tuning(self.tuning, self.tuning_reference, self.tuning_labels, Limits.from_dict(self.limits),
                      self.kinds, {n: from_dict(d) for n, d in (self.output_specs or {}).items()} or None)

    @classmethod
    def ranges(cls, feeds: Feeds) -> dict[str, tuple[float, float]]:
        return {k: (float(np.min(v)), float(np.max(v))) for k, v in feeds.items() if v.size and v.dtype.kind == "f"}

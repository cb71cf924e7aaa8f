"""Core ML backend: PyTorch or Keras/TensorFlow → ``.mlpackage`` (ML program), checked on any OS by our evaluator.

Precisions
    ``fp32``       fp32 weights and compute.
    ``fp16``       fp16 weights and compute (Core ML's default for ML programs).
    ``w8``         fp16 program whose weights are 8-bit linear-quantized (symmetric, per output channel).
    ``palette6``   fp16 program whose weights are 6-bit palettized (k-means look-up table per tensor).
    ``palette4``   the same with 4-bit tables.
Compression is data-free (``coremltools.optimize.coreml``); calibration data is not used. Compressed weights need
``minimum_deployment_target`` iOS16 or later.

Files
    ``spec.py``         the Options and Runtime models (this module re-exports them).
    ``convert.py``      the worker side (torch and tf routes); ``overrides.py`` converter fixes and unsupported-op
                        explanations; ``compression.py`` weight compression.
    ``runner.py``       the host runner: edgepack's numpy ML-program evaluator (``mil/``), since coremltools cannot
                        predict off macOS; on macOS it runs the device loader instead.
    ``device.py``       ``MLModel.predict`` (macOS only; elsewhere "runtime unavailable"), shipped in every bundle.

This module imports no framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.backends.coreml.spec import (ACCEPTS, COMPRESSED, PRIMARY, REFUSALS, CoreMLClassifier, CoreMLImage,
                                           CoreMLInput, CoreMLOptions, CoreMLRuntime)

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source


class CoreMLBackend(Backend):
    name: ClassVar[str] = "coreml"
    requires: ClassVar[tuple[str, ...]] = ("coremltools",)
    extra: ClassVar[str] = "coreml"
    accepts: ClassVar[frozenset[str]] = ACCEPTS
    refusals: ClassVar[dict[str, str]] = REFUSALS
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32", "fp16", *COMPRESSED})
    Options: ClassVar[type[BaseModel]] = CoreMLOptions
    Runtime: ClassVar[type[RuntimeSpec]] = CoreMLRuntime
    description: ClassVar[str] = "Core ML ML programs (.mlpackage) for iOS/macOS; parity checked on any OS"

    def convert(self, source: "Source", profile: "TargetProfile", options: Any, data: ConvertData,
                out_dir: Path) -> Artifact:
        """Convert in this (worker) process; writes ``out_dir/model.mlpackage``. Calibration data is not used."""
        from edgepack.backends.coreml.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.coreml.runner import CoreMLRunner

        return CoreMLRunner(artifact, bundle_dir, threads)


__all__ = ["PRIMARY", "CoreMLBackend", "CoreMLOptions", "CoreMLRuntime", "CoreMLInput", "CoreMLImage",
           "CoreMLClassifier"]

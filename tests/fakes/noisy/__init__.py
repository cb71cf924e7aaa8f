"""fake_noisy: like fake_identity, but the runtime answers with a chosen defect (host and device alike)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from edgepack.artifact import Artifact, RuntimeSpec
from edgepack.backends.base import Backend, Runner

Mode = Literal["noise", "zeros", "constant", "nan", "inf", "shape", "crash", "slow", "hog"]


class NoisyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Mode = "noise"
    sigma: float = 0.01


class NoisyRuntime(RuntimeSpec):
    weights: str = "model.npz"
    mode: Mode = "noise"
    sigma: float = 0.01


class NoisyBackend(Backend):
    name = "fake_noisy"
    requires = ("numpy",)
    extra = "test"
    accepts = frozenset({"fake"})
    precisions = frozenset({"fp32"})
    Options: ClassVar[type[BaseModel]] = NoisyOptions
    Runtime: ClassVar[type[RuntimeSpec]] = NoisyRuntime
    description = "test fake: lossy or broken on purpose"

    def convert(self, source, profile, options, data, out_dir: Path) -> Artifact:
        from fakes.noisy.convert import convert

        return convert(source, profile, options, data, out_dir)

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from fakes.noisy.runner import NoisyRunner

        return NoisyRunner(artifact, bundle_dir, threads)

"""fake_int8: a linear classifier whose weights are rounded to a coarse grid per column block ("layers"), with the
INT8 accuracy search (edgepack.quantsearch) choosing the grid and the blocks kept in float on the tuning split."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from edgepack.artifact import Artifact, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.quantsearch import AccuracySearch


class Int8Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: float = 0.5  # the plain recipe's grid step, as a share of each block's largest |weight|
    accuracy_search: AccuracySearch = AccuracySearch()


class Int8Runtime(RuntimeSpec):
    weights: str = "model.npz"


class Int8Backend(Backend):
    name = "fake_int8"
    requires = ("numpy",)
    extra = "test"
    accepts = frozenset({"fake"})
    precisions = frozenset({"int8"})
    Options: ClassVar[type[BaseModel]] = Int8Options
    Runtime: ClassVar[type[RuntimeSpec]] = Int8Runtime
    description = "test fake: coarse weights, searched"

    def convert(self, source, profile, options, data, out_dir: Path) -> Artifact:
        from fakes.int8.convert import convert

        return convert(source, profile, options, data, out_dir)

    @classmethod
    def device_file(cls) -> Path:
        """The bundle computes what fake_identity's does (a linear layer over the shipped weights)."""
        return cls.package_dir().parent / "identity" / "device.py"

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from fakes.int8.runner import Int8Runner

        return Int8Runner(artifact, bundle_dir, threads)

"""fake_identity: ships the .fakemodel as model.npz; host and device compute exactly the reference."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from edgepack.artifact import Artifact, RuntimeSpec
from edgepack.backends.base import Backend, Runner


class IdentityRuntime(RuntimeSpec):
    weights: str = "model.npz"


class IdentityBackend(Backend):
    name = "fake_identity"
    requires = ("numpy",)
    extra = "test"
    accepts = frozenset({"fake"})
    precisions = frozenset({"fp32"})
    Runtime: ClassVar[type[RuntimeSpec]] = IdentityRuntime
    description = "test fake: exact"

    def convert(self, source, profile, options, data, out_dir: Path) -> Artifact:
        from fakes.identity.convert import convert

        return convert(source, profile, options, data, out_dir)

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from fakes.identity.runner import IdentityRunner

        return IdentityRunner(artifact, bundle_dir, threads)

"""The bridges: source conversions shared by every target of one build — one torch → ONNX or TF → ONNX export for
backends that take ONNX but not the source's own framework, and one ONNX → torch conversion
(:mod:`edgepack.sources.onnx_torch`) for backends that take torch but not ONNX (tflite, coreml, …)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgepack.errors import UnsupportedConversion
from edgepack.sources import Source, module_for


class Bridges:
    """Cache of bridged sources for one build; ``close`` removes the exported files."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.dir = Path(tempfile.mkdtemp(prefix="edgepack-bridge-"))
        self.cache: dict[str, tuple[Source, list[str]]] = {}

    def for_backend(self, name: str, accepts: frozenset[str], refusals: dict[str, str]) -> tuple[Source, list[str]]:
        """The source as the backend takes it, and notes saying how it was bridged."""
        if self.source.kind in accepts:
            return self.source, []
        if self.source.kind == "onnx" and "torch" in accepts:
            return self.to_torch()
        if "onnx" not in accepts:
            raise UnsupportedConversion(f"backend '{name}' cannot take {self.source.kind} sources",
                                        hint=refusals.get(self.source.kind) or f"it accepts: {', '.join(sorted(accepts))}")
        if "onnx" not in self.cache:
            path = self.dir / f"{self.source.name}.onnx"
            notes = module_for(self.source.kind).to_onnx(self.source, path)
            from edgepack.sources.onnx import read_model, signature

            ins, outs = signature(read_model(path))
            bridged = Source(kind="onnx", format="onnx", path=str(path), name=self.source.name,
                             inputs=ins, outputs=outs, sha256=self.source.sha256)
            self.cache["onnx"] = (bridged, [f"bridged {self.source.kind} → onnx", *notes])
        return self.cache["onnx"]

    def to_torch(self) -> tuple[Source, list[str]]:
        """The ONNX source as a torch source (converted once per build, in the bridge's worker)."""
        if "torch" not in self.cache:
            from edgepack.sources.onnx_torch import to_torch

            self.cache["torch"] = to_torch(self.source, self.dir / f"{self.source.name}.pt2")
        return self.cache["torch"]

    def torch_bridged(self) -> Source | None:
        """The onnx → torch bridged source, when this build made one."""
        return self.cache["torch"][0] if "torch" in self.cache else None

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

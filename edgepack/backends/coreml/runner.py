"""The Core ML host runner: edgepack's numpy ML-program evaluator, or on macOS the bundle's own device loader.

coremltools converts on Linux but cannot predict there, so the evaluator (``mil/``) executes the saved program op
by op (fp16 emulated per op). On macOS the runner runs ``device.load`` (``MLModel.predict``), the code path the
bundle runs on a Mac, and falls back to the evaluator (saying so in its facts) when Core ML cannot load the model.
"""

from __future__ import annotations

import platform

import numpy as np

from edgepack.backends.base import Runner
from edgepack.backends.coreml import device
from edgepack.backends.coreml.spec import CoreMLRuntime


class CoreMLRunner(Runner):
    """Runs the saved package: ``MLModel.predict`` on macOS, edgepack's numpy evaluator elsewhere."""

    def activate_impl(self) -> None:
        self._spec = CoreMLRuntime.model_validate(self.artifact.runtime)
        self._predict = None
        if platform.system() == "Darwin":
            try:
                self._predict, facts = device.load(self.bundle_dir, self.artifact.to_dict(),
                                                   dict(self.artifact.runtime), self.threads)
                self.facts.update(facts)
                return
            except Exception:  # noqa: BLE001 - fall back to the evaluator, and say so
                self.facts["mlmodel_unavailable"] = True
        from edgepack.backends.coreml.mil import Evaluator

        self._eval = Evaluator(self.bundle_dir / self._spec.package)
        self._eval.ensure_supported()  # RuntimeUnavailable naming the op → parity "deferred to device"
        self.facts.update({"runtime": "edgepack Core ML evaluator (numpy)",
                           "precision": "fp16 emulated per op" if self._spec.compute_precision == "fp16" else "fp32"})

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._predict is not None:
            return self._predict(feed)
        program_feed = {}
        for rec in self._spec.inputs:
            x = np.asarray(feed[rec.name])
            # an image input's program scales pixels itself: feed it the pixels that give this input
            program_feed[rec.name] = device.to_pixels(x, rec.image.model_dump(), rec.layout) if rec.image else x
        classifier = self._spec.classifier
        out = self._eval.run(program_feed, extra=[classifier.scores] if classifier else [])
        if classifier:
            out = {self.artifact.outputs[0].name: out[classifier.scores]}
        return {t.name: np.asarray(out[t.name]).astype(t.dtype) for t in self.artifact.outputs}

    def deactivate_impl(self) -> None:
        self._predict = None
        self._eval = None

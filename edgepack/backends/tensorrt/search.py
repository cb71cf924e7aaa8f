"""Accuracy-aware explicit INT8 for TensorRT (worker side): a :class:`edgepack.quantsearch.Space` over
TensorRT-style Q/DQ (``qdq.quantize``: signed symmetric INT8, per-channel weights, float bias), judged on the
tuning split through the host proxy (the Q/DQ ONNX in ONNX Runtime CPU: never engine numbers).

Recipes (cheapest first): the profile's calibration method, then percentile 99.999 and 99.99, then entropy. A layer
kept in float is a weighted node left without Q/DQ (``nodes_to_exclude``), which TensorRT then runs in FP16/FP32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack import quantsearch
from edgepack.backends.tensorrt import qdq


class TrtSpace(quantsearch.Space):
    def __init__(self, model_in: Path, work: Path, calibration: dict[str, np.ndarray], batch: int | None,
                 options: Any) -> None:
        import onnx

        self.model_in, self.work, self.calibration, self.batch, self.options = model_in, work, calibration, batch, \
            options
        work.mkdir(parents=True, exist_ok=True)
        m = onnx.load(str(model_in), load_external_data=False)
        self.weighted = [n.name for n in m.graph.node if n.op_type in qdq.WEIGHTED and n.name]
        self.outputs = [o.name for o in m.graph.output]
        self._count = 0
        self._sessions: dict[str, Any] = {}

    def recipes(self) -> list[quantsearch.Recipe]:
        o = self.options
        plain = quantsearch.Recipe(o.calibration_method, {"method": o.calibration_method, "percentile": o.percentile},
                                   "the profile's calibration method")
        others = [quantsearch.Recipe("percentile-99.999", {"method": "percentile", "percentile": 99.999},
                                     "clips the rarest 0.001% of activation values: tighter scales for the bulk"),
                  quantsearch.Recipe("percentile-99.99", {"method": "percentile", "percentile": 99.99},
                                     "clips more outliers"),
                  quantsearch.Recipe("entropy", {"method": "entropy", "percentile": o.percentile},
                                     "KL-divergence calibration (TensorRT's own entropy calibrator's criterion)")]
        return [plain] + [r for r in others if r.settings != plain.settings
                          and not (r.name == "entropy" and plain.settings["method"] == "entropy")]

    def build(self, recipe: quantsearch.Recipe, float_layers: tuple[str, ...]) -> Path:
        self._count += 1
        out = self.work / f"candidate-{self._count}.onnx"
        qdq.quantize(self.model_in, out, self.calibration, self.batch, method=recipe.settings["method"],
                     percentile=recipe.settings["percentile"],
                     exclude_nodes=tuple(self.options.exclude_nodes) + tuple(float_layers),
                     exclude_op_types=tuple(self.options.exclude_op_types))
        return out

    def _session(self, path: Path):
        import onnxruntime as ort

        key = str(path)
        if key not in self._sessions:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            self._sessions[key] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def run(self, candidate: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs stacked exactly as the host runner stacks them for the verdict (``run_batched``): the tuning
        reference was made that way, so an output whose batch is not on axis 0 (a CTC head's (T, B, C)) compares
        like for like instead of failing its shape in every trial."""
        from edgepack.core.batching import run_batched

        sess = self._session(candidate)
        wanted = {i.name for i in sess.get_inputs()}

        def infer(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(self.outputs, sess.run(self.outputs, {k: v for k, v in part.items() if k in wanted})))

        return run_batched(infer, feeds, self.batch or 1)

    def layers(self, candidate: Path) -> list[str]:
        return [n for n in self.weighted if n not in set(self.options.exclude_nodes)]

    def size(self, candidate: Path) -> int:
        return candidate.stat().st_size

    # no timer()/float_timer(): the host proxy's ONNX Runtime CPU latency says nothing about an engine on the
    # device, so the search records no latency cost for TensorRT (the device's engine.json has the real figures)

    def int8_share(self, candidate: Path) -> float:
        import onnx

        lint = qdq.lint(onnx.load(str(candidate)))
        return lint.quantized_weighted_ops / lint.weighted_ops if lint.weighted_ops else 0.0

    def release(self, candidate: Path) -> None:
        self._sessions.pop(str(candidate), None)
        Path(candidate).unlink(missing_ok=True)

    def cleanup(self) -> None:
        import shutil

        self._sessions.clear()
        shutil.rmtree(self.work, ignore_errors=True)

"""ONNX Runtime device loader (numpy + onnxruntime only; shipped in every ort_mobile bundle as runner/device.py).

A CPU session over the runtime spec's model: intra-op threads as asked, one inter-op thread, the spec's
execution providers and graph optimization level. The edgepack host runner runs this same function.
"""

from __future__ import annotations

from pathlib import Path

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    """``(infer, facts)`` for the bundle's .ort model; ImportError when onnxruntime is not installed."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[runtime["graph_optimization_level"]])
    sess = ort.InferenceSession(str(Path(bundle) / runtime["model"]), so, providers=list(runtime["providers"]))
    names = [o.name for o in sess.get_outputs()]

    def infer(feed: dict) -> dict:
        return dict(zip(names, sess.run(names, feed)))

    facts = {"runtime": f"onnxruntime {ort.__version__}", "provider": sess.get_providers()[0], "threads": threads}
    return infer, facts

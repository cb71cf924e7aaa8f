"""Core ML on a device: the bundle's ``.mlpackage`` through coremltools' ``MLModel.predict`` (macOS only).

On an iPhone the app runs the package itself; this loader is what ``run_bundle.py`` uses on a Mac. Elsewhere it
raises ImportError, so the bundle runner reports "runtime unavailable" (parity on Linux is edgepack's build-time
evaluator). numpy, coremltools and (for image inputs) Pillow only: this file is copied into every bundle.

``infer`` takes and returns arrays in the reference model's layout and dtype, keyed by reference tensor names:
image inputs are turned back into the pixels that give them, a classifier's label → score dictionary into the
reference's score array.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np


def to_pixels(x: np.ndarray, image: dict[str, Any], layout: str) -> np.ndarray:
    """A reference input → the pixels an image input needs to produce it (the program computes pixel*scale+bias)."""
    channel_axis = 1 if layout == "nchw" else x.ndim - 1
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    bias = np.asarray(image["bias"], np.float32).reshape(shape)
    return (x.astype(np.float32) - bias) / np.float32(image["scale"])


def _pil_image(x: np.ndarray, image: dict[str, Any], layout: str) -> Any:
    """One sample of a reference input → the PIL image Core ML turns back into it: mode "F" (float pixels) for
    GRAYSCALE_FLOAT16, else 8-bit "L" or "RGB" (pixels rounded and clipped to 0..255)."""
    from PIL import Image  # coremltools' predict takes image inputs as PIL images

    pixels = to_pixels(x, image, layout)[0]
    hwc = pixels.transpose(1, 2, 0) if layout == "nchw" else pixels
    if image["color_layout"] == "GRAYSCALE_FLOAT16":
        return Image.fromarray(np.ascontiguousarray(hwc[..., 0], np.float32))  # mode "F"
    hwc = np.clip(np.round(hwc), 0, 255).astype(np.uint8)
    if image["color_layout"] == "GRAYSCALE":
        return Image.fromarray(np.ascontiguousarray(hwc[..., 0]))  # mode "L"
    if image["color_layout"] == "BGR":  # a PIL image is RGB; Core ML hands the program its channels as B, G, R
        hwc = hwc[..., ::-1]
    return Image.fromarray(np.ascontiguousarray(hwc))  # mode "RGB"


def load(bundle: Path, artifact: dict, runtime: dict, threads: int) -> tuple[Callable[[dict], dict], dict]:
    """``(infer, facts)`` for the bundle's package. Core ML picks its own threads (``threads`` is unused)."""
    del threads
    if platform.system() != "Darwin":
        raise ImportError("Core ML models run only on macOS/iOS; parity on Linux is edgepack's build-time evaluator")
    import coremltools as ct

    units = runtime.get("compute_units", "ALL")
    model = ct.models.MLModel(str(Path(bundle) / runtime.get("package", artifact["primary"])),
                              compute_units=ct.ComputeUnit[units])
    inputs = runtime.get("inputs") or [{"name": t["name"], "layout": artifact.get("layout", "nchw")}
                                       for t in artifact["inputs"]]
    outputs = artifact["outputs"]
    classifier = runtime.get("classifier")

    def one(feed: dict, i: int) -> dict:
        args = {}
        for rec in inputs:
            x = np.asarray(feed[rec["name"]])[i:i + 1]
            args[rec["name"]] = _pil_image(x, rec["image"], rec["layout"]) if rec.get("image") else x
        out = model.predict(args)
        if classifier:
            scores = out[classifier["output"]]
            return {outputs[0]["name"]: np.array([[scores[c] for c in classifier["labels"]]], outputs[0]["dtype"])}
        return {t["name"]: np.asarray(out[t["name"]]).astype(t["dtype"]) for t in outputs}

    def infer(feed: dict) -> dict:
        got = [one(feed, i) for i in range(len(feed[inputs[0]["name"]]))]
        return {t["name"]: np.concatenate([g[t["name"]] for g in got]) for t in outputs}

    return infer, {"runtime": f"coremltools {ct.__version__} (MLModel.predict)", "compute_units": units}

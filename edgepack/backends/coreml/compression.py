"""Data-free weight compression of a converted ML program (``coremltools.optimize.coreml``, worker side).

``w8`` is 8-bit linear quantization (symmetric, per output channel); ``palette6``/``palette4`` are k-means
look-up tables per tensor. Weights with ``weight_threshold`` elements or fewer stay fp16.
"""

from __future__ import annotations

from typing import Any


def compress(mlmodel: Any, precision: str, threshold: int) -> tuple[Any, dict[str, Any]]:
    """The compressed model and a record of what was done (for the artifact's details)."""
    import coremltools.optimize.coreml as cto

    if precision == "w8":
        cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                          weight_threshold=threshold)
        out = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
        return out, {"method": "linear_quantize_weights", "dtype": "int8", "mode": "linear_symmetric",
                     "granularity": "per_channel", "weight_threshold": threshold}
    nbits = int(precision.removeprefix("palette"))
    cfg = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_tensor", weight_threshold=threshold)
    out = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=cfg))
    return out, {"method": "palettize_weights", "nbits": nbits, "mode": "kmeans", "granularity": "per_tensor",
                 "weight_threshold": threshold}

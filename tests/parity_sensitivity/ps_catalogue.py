"""The defect catalogue of the parity-sensitivity suite (no torch: read by pytest's process and by ps_models.py).

defect → (what it injects, the models it applies to), in three groups by how it is injected:

* ``INPUT``: the bundle is fed differently preprocessed data than the reference was (a copy of a correct bundle whose
  ``golden/inputs.npz`` holds the wrongly preprocessed images while ``golden/outputs.npz`` keeps the reference's
  outputs on the right ones). What parity sees is exactly ``model(T(x))`` against ``model(x)``, the same as a model
  with the wrong preprocessing baked in, without one conversion per defect.
* ``WRAPPED``: realised by ``ps_models.Defective`` (a wrapper around the correct model) and converted by the backend.
* ``OTHER``: ``weight_noise`` is a perturbed state dict of the plain factory (converted); ``corrupt_bytes`` is applied
  to a correct bundle's largest model file.
"""

from __future__ import annotations

INPUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "norm_0_255": ("input scaled as 0-255 instead of 0-1 (the /255 forgotten)", ("cnn", "detector")),
    "norm_mean_std": ("ImageNet mean/std instead of the recipe's 0.5/0.5", ("cnn", "detector")),
    "rgb_bgr": ("channels read in BGR order (3-channel model)", ("rgb",)),
    "nchw_nhwc": ("NCHW input buffer read as NHWC (3-channel model)", ("rgb",)),
}
WRAPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "swap_outputs": ("same-shaped outputs scores and landmarks swapped", ("detector",)),
    "zero_output": ("an output is all zeros (cnn logits, detector boxes)", ("cnn", "detector")),
    "constant_output": ("an output is constant (cnn: mean logits, detector: landmarks 0.5)", ("cnn", "detector")),
    "nan_one_sample": ("Inf/NaN in one holdout sample's output", ("cnn", "detector")),
    "dropped_softmax": ("final softmax dropped: logits where the reference gives probabilities", ("detector",)),
    "off_by_one": ("each sample answered with the previous sample's output (fixed batch 8)", ("cnn", "detector")),
    "shape_mismatch": ("an output with the same values in another shape: cnn (N,1,10), detector boxes (2N,2)",
                       ("cnn", "detector")),
}
OTHER: dict[str, tuple[str, tuple[str, ...]]] = {
    "weight_noise": ("1% Gaussian noise (std = 1% of the layer's weight std) on the largest conv layer",
                     ("cnn", "detector")),
    "corrupt_bytes": ("1 KiB of random bytes in the middle of the largest model file, manifest re-signed",
                      ("cnn", "detector", "rgb")),
}
DEFECTS = {**INPUT, **WRAPPED, **OTHER}
CASES = [(m, d) for d, (_, models) in DEFECTS.items() for m in models]

"""Small models and data for the Python API tests: the same network in memory (edgepack.build) and on disk (the
CLI, as a factory + state dict), and the digits images at 32x32."""

from __future__ import annotations

import numpy as np


def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, upscaled to (N, 1, 32, 32) float32 in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images, np.ones((4, 4), np.float32))[:, None].astype(np.float32) / 16.0
    return x[:n], d.target[:n].astype(np.int64)


def make_net():
    """A small digits CNN (seeded): the factory the CLI builds with --weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

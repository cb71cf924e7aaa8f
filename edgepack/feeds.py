"""Feeds are ``{input name: array}`` with samples stacked on axis 0. The code lives in ``edgepack.core`` (shared
with the bundle runner); this module names it for the host side."""

from __future__ import annotations

from edgepack.core.batching import Feeds, first_batch, num_samples, run_batched, take
from edgepack.core.integrity import sha256_file, sha256_tree
from edgepack.core.npz import load_npz, save_npz

__all__ = ["Feeds", "first_batch", "load_npz", "num_samples", "run_batched", "save_npz", "sha256_file",
           "sha256_tree", "take"]

"""Helpers shared by the device tests (a module with its own name: `tests/` has conftest modules too)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def tamper(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` whose golden outputs are negated (integrity and parity must both fail)."""
    from edgepack.feeds import save_npz

    shutil.copytree(bundle, dest)
    golden = dict(np.load(dest / "golden" / "outputs.npz"))
    name = next(iter(golden))
    golden[name] = golden[name] * -1.0
    save_npz(dest / "golden" / "outputs.npz", golden)
    return dest

"""Arrays on disk: deterministic ``.npz`` files (never pickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def save_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Write arrays with deterministic bytes for identical inputs (sorted names, fixed timestamps)."""
    path = Path(path)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = method
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.asarray(arrays[name], order="C"), allow_pickle=False)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

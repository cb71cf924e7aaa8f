"""Headless Chromium (Debian's `chromium`) for the HTML report tests: find it, screenshot a page, find the white
plot panels in the screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def find() -> str:
    """The chromium binary, or the test is skipped (a missing capability)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return chromium


def screenshot(page: Path, shot: Path, size: str = "1000,2000") -> np.ndarray:
    """Render ``page`` headless and return the screenshot as an RGB array."""
    Image = pytest.importorskip("PIL.Image")
    subprocess.run([find(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", f"--screenshot={shot}", Path(page).as_uri()], capture_output=True,
                   timeout=120, check=True)
    return np.asarray(Image.open(shot).convert("RGB"))


def near(img: np.ndarray, hex_color: str, tol: int = 40) -> np.ndarray:
    """Pixels within ``tol`` (sum of |ΔRGB|) of ``hex_color``."""
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(img[..., :3].astype(int) - rgb).sum(-1) <= tol)


def white_panels(img: np.ndarray, min_width: int = 300, min_height: int = 180) -> list[tuple[int, int]]:
    """Row ranges of white (#ffffff) panels on the #f6f8fa page at least ``min_width`` wide and ``min_height`` tall
    (gridline rows are bridged; a table's white cells are too short to count)."""
    white = np.all(img >= 250, axis=-1).sum(1) > min_width
    white_rows = np.convolve(white, np.ones(9), "same") > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], white_rows.astype(int), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a > min_height]

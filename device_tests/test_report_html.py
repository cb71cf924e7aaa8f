"""The HTML report opens in headless Chromium (Debian's `chromium`) and its plots render: the screenshot is decoded
and each plot's area must hold the plot-line colours (not a blank or broken page)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "devices"))

from edgepack.devices import history, regressions, report  # noqa: E402

pytestmark = pytest.mark.device


def _near(img: np.ndarray, hex_color: str, tol: int = 40) -> np.ndarray:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(img[..., :3].astype(int) - rgb).sum(-1) <= tol)


def test_html_report_plots_render_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    Image = pytest.importorskip("PIL.Image")
    from test_device_harness_units import synthetic_history

    synthetic_history(tmp_path / "h.sqlite", slow_last=True, drop_last=True)
    data = history.series(tmp_path / "h.sqlite")
    page = tmp_path / "report.html"
    page.write_text(report.html_page(data, regressions.check_all(data)))
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,2000", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    # the plots' white panels (#ffffff on the #f6f8fa page): find the three panels as runs of rows
    # (gridline rows are bridged; the table's white cells are too short to count as a 240-px panel)
    white = np.all(img >= 250, axis=-1).sum(1) > 300
    white_rows = np.convolve(white, np.ones(9), "same") > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], white_rows.astype(int), [0]])))
    panels = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > 180]
    assert len(panels) == 3, panels
    for top, bottom in panels:
        area = img[top:bottom]
        lines = _near(area, report.PALETTE[0]) | _near(area, report.PALETTE[1])
        assert lines.sum() > 300, (top, bottom, int(lines.sum()))  # the series were drawn, not a blank panel
        assert (area.std(axis=(0, 1)) > 5).all()

"""The HTML report opens in headless Chromium (Debian's `chromium`) and its plots render: the screenshot is decoded
and each plot's area must hold the plot-line colours (not a blank or broken page)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "devices"))

import chromium  # noqa: E402
from edgepack.devices import history, regressions, report  # noqa: E402

pytestmark = pytest.mark.device


def test_html_report_plots_render_in_headless_chromium(tmp_path):
    from test_device_harness_units import synthetic_history

    synthetic_history(tmp_path / "h.sqlite", slow_last=True, drop_last=True)
    data = history.series(tmp_path / "h.sqlite")
    page = tmp_path / "report.html"
    page.write_text(report.html_page(data, regressions.check_all(data)))
    img = chromium.screenshot(page, tmp_path / "shot.png")
    # the plots' white panels (#ffffff on the #f6f8fa page): the three 240-px panels
    panels = chromium.white_panels(img)
    assert len(panels) == 3, panels
    for top, bottom in panels:
        area = img[top:bottom]
        lines = chromium.near(area, report.PALETTE[0]) | chromium.near(area, report.PALETTE[1])
        assert lines.sum() > 300, (top, bottom, int(lines.sum()))  # the series were drawn, not a blank panel
        assert (area.std(axis=(0, 1)) > 5).all()

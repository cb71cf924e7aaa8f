"""The build's HTML report (OUT/<model>/report.html) opens in headless Chromium and its bar charts render: the
screenshot is decoded and each plot must hold its bars (not a blank or broken page)."""

from __future__ import annotations

import numpy as np
import pytest

import chromium

pytestmark = pytest.mark.device


def test_build_report_bar_charts_render_in_headless_chromium(tmp_path):
    import fakes  # noqa: F401 - registers the framework-free fake source and backends
    from fakes.source import make
    from typer.testing import CliRunner

    from edgepack import report_html
    from edgepack.cli import app

    chromium.find()
    model = make(tmp_path / "linear.fakemodel")
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "ident.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\ncalibration = "digits"\n')
    (targets / "zeros.toml").write_text('backend = "fake_noisy"\nprecision = "fp32"\ncalibration = "digits"\n'
                                        '[options]\nmode = "zeros"\n')
    res = CliRunner().invoke(app, ["build", str(model), "-t", str(targets / "ident.toml"), "-t",
                                   str(targets / "zeros.toml"), "--out", str(tmp_path / "dist")])
    assert res.exit_code == 1, res.stdout  # zeros fails its parity rows: a failing target is on the page too
    page = tmp_path / "dist" / "linear" / "report.html"
    img = chromium.screenshot(page, tmp_path / "shot.png", size="1100,2400")
    # the passing target's bars are drawn in the bar colour, once per chart: two clusters of rows holding it
    rows = np.flatnonzero(chromium.near(img, report_html.BAR, tol=30).sum(1) > 20)
    assert len(rows), "no bars drawn"
    groups = np.split(rows, np.flatnonzero(np.diff(rows) > 20) + 1)
    assert len(groups) == 2, [(int(g[0]), int(g[-1])) for g in groups]  # size and host latency
    for g in groups:
        band = img[g[0]:g[-1] + 1]
        assert chromium.near(band, report_html.BAR, tol=30).sum() > 400  # a real bar, not a stray pixel
    # the failing target's bars are red in both charts
    red = chromium.near(img, report_html.COLORS["failed"], tol=30)
    assert sum(int(red[g[0] - 40:g[-1] + 40].sum()) > 200 for g in groups) == 2
    assert (img.std(axis=(0, 1)) > 5).all()  # not a blank page

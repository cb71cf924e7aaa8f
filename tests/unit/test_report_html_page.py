"""The build's HTML report: written next to build-report.json, self-contained (no URL, no script), every section
present, and every user-controlled name escaped."""

from __future__ import annotations

import re

from edgepack import report_html
from edgepack.config import EffectiveBudget
from edgepack.core.checks import Check
from edgepack.report import LatencyReport, OutputKindInfo, ParityReport, TargetReport

EVIL = '<script>alert(1)</script>"\'&<img src=x onerror=alert(2)>'


def _hostile_results() -> list[TargetReport]:
    search = {"chosen": {"recipe": "mixed", "float_layers": [f"conv{EVIL}", "fc"]},
              "trials": [{"recipe": f"plain{EVIL}", "stage": "recipe", "float_layers": [], "passed": False,
                          "score": -0.2, "seconds": 1.5},
                         {"recipe": "mixed", "stage": "mixed", "float_layers": [f"conv{EVIL}", "fc"], "passed": True,
                          "score": 0.01, "seconds": 2.0}],
              "met_budget_on_tuning": True, "cost": {}}
    parity = ParityReport(passed=False, verdict="failed", samples=200,
                          metrics={f"out{EVIL}": {"top1_agreement": 0.95, "top1_agreement_ci_low": 0.91,
                                                   "top1_agreement_ci_high": 0.97, "max_abs_error": 0.3}},
                          kinds={f"out{EVIL}": OutputKindInfo(kind="scores", how="declared")})
    failed = TargetReport(
        target=f"t{EVIL}", status="failed", backend="ort_mobile", precision="int8", size_bytes=3 * 2**20,
        latency=LatencyReport(p50_ms=2.5, p90_ms=3.0, mean_ms=2.6, min_ms=2.0, repeats=5, warmup=1), parity=parity,
        checks=[Check(f"parity.min_top1_agreement[out{EVIL}]", 0.98, 0.95, False, ">=", f"note{EVIL}")],
        artifact={"accuracy_search": search}, source={"name": f"model{EVIL}"},
        budgets={"max_size_mb": EffectiveBudget(value=EVIL, source=f"model config {EVIL}")})
    passed = TargetReport(target="fp32", status="passed", backend="ort_mobile", precision="fp32", size_bytes=2**20,
                          latency=LatencyReport(p50_ms=1.0, p90_ms=1.2, mean_ms=1.1, min_ms=0.9, repeats=5, warmup=1))
    error = TargetReport(target="broken", status="error", stage="conversion", reason=f"crash {EVIL}", hint=EVIL)
    return [failed, passed, error]


def test_hostile_names_are_escaped_everywhere():
    page = report_html.page(_hostile_results())
    assert not re.search(r"<script|<img|<iframe|<object", page, re.IGNORECASE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)  # no external URL
    assert "script-src 'none'" in page


def test_every_section_is_there():
    page = report_html.page(_hostile_results())
    for section in ("Summary", "Size and host latency", "Parity per output", "INT8 accuracy search", "Failing rows"):
        assert f"<h2>{section}</h2>" in page, section
    assert page.count('<svg class="plot"') == 2 and 'id="plot-size"' in page and 'id="plot-latency"' in page
    assert "[0.91 – 0.97]" in page  # the agreement's interval
    assert "fc</li>" in page  # a float layer of the chosen recipe
    assert "crash &lt;script&gt;" in page  # the error target's reason among the failing rows
    assert "FAIL" in page and "0.98" in page


def test_a_build_writes_report_html_next_to_the_json(fake_model, profile, tmp_path, cli):
    res = cli("build", fake_model, "-t", profile("ident"), "-t", profile("zeros", "fake_noisy",
              '[options]\nmode = "zeros"\n'), "--out", tmp_path / "dist")
    assert res.exit_code == 1
    page = (tmp_path / "dist" / "linear" / "report.html").read_text()
    assert (tmp_path / "dist" / "linear" / "build-report.json").is_file()
    assert "ident" in page and "zeros" in page and "parity.min_cosine[logits]" in page
    assert "html report:" in res.stdout


def test_a_wide_spread_of_latencies_is_drawn_on_a_log_scale():
    rows = [("fast", 0.3, "passed"), ("medium", 1.2, "passed"), ("coreml", 250.0, "passed")]
    svg = report_html.bars("host latency", rows, "ms", "p")
    widths = [float(w) for w in re.findall(r'<rect x="260" y="[\d.]+" width="([\d.]+)"', svg)]
    assert "log scale" in svg and len(widths) == 3
    assert widths[0] > 20 and widths[0] < widths[1] < widths[2]  # the fast bars stay visible, in order
    linear = report_html.bars("size", [("a", 1.0, "passed"), ("b", 2.0, "passed")], "MiB", "q")
    assert "log scale" not in linear
    assert [float(w) for w in re.findall(r'<rect x="260" y="[\d.]+" width="([\d.]+)"', linear)] == [210.0, 420.0]

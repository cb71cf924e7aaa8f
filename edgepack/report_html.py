"""The build's HTML report (``OUT/<model>/report.html``, next to ``build-report.json``): one self-contained page for
people who would rather look than read — the summary table, size and host latency per target as bar charts, each
output's parity with its interval per target, the INT8 search's trials and float layers, and every target's
failing rows.

Self-contained and inert: inline CSS and SVG only, no script, no external URL, and a Content-Security-Policy that
forbids scripts, objects, frames and any fetch. Every name on the page (model, target, output, layer, reason) comes
from the user's files, so every one is HTML-escaped; statuses are mapped onto the known verdicts."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from edgepack.report import TargetReport, search_line

CSP = ("default-src 'none'; script-src 'none'; object-src 'none'; frame-src 'none'; connect-src 'none'; "
       "img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
COLORS = {"passed": "#1a7f37", "inconclusive": "#a626a4", "failed": "#cf222e", "error": "#8250df",
          "skipped": "#6e7781"}
BAR = "#0969da"
LOG_RATIO = 30  # a chart whose largest value is more than this times its smallest is drawn on a log scale


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(v: Any, nd: int = 4) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "—"
    if not math.isfinite(v):
        return _e(v)
    return f"{v:.{nd}g}"


def _status(r: TargetReport) -> str:
    colour = COLORS.get(r.status, "#57606a")
    return f'<b class="status" style="color:{colour}">{_e(r.status.upper())}</b>'


def bars(title: str, rows: list[tuple[str, float | None, str]], unit: str, plot_id: str) -> str:
    """A horizontal bar chart (inline SVG): one bar per (label, value, status), each labelled with its value; on a
    log scale (said in the title) when the values span more than :data:`LOG_RATIO`×; a target without a value is
    listed with "—" and no bar."""
    shown = [(label, v, status) for label, v, status in rows]
    values = [v for _, v, _ in shown if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return f'<p class="empty">{_e(title)}: no measurement</p>'
    top, low = max(values), min((v for v in values if v > 0), default=0.0)
    log = low > 0 and top / low > LOG_RATIO  # one slow target would flatten every other bar: a log scale
    if log:
        title += " — log scale"
        span = math.log10(top / low) + 0.25

        def scale(v: float) -> float:
            return (math.log10(v / low) + 0.25) / span if v > 0 else 0.0
    else:
        def scale(v: float) -> float:
            return v / top if top else 0.0
    label_w, bar_w, row_h, head = 260, 420, 26, 30
    w, h = label_w + bar_w + 110, head + row_h * len(shown) + 10
    out = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}">',
           f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
           f'<text x="8" y="19" font-size="13" font-family="sans-serif" fill="#24292f">{_e(title)}</text>']
    for i, (label, v, status) in enumerate(shown):
        y = head + i * row_h
        short = label if len(label) <= 38 else label[:37] + "…"
        out.append(f'<text x="{label_w - 8}" y="{y + 17}" font-size="12" text-anchor="end" font-family="sans-serif" '
                   f'fill="#24292f">{_e(short)}<title>{_e(label)}</title></text>')
        if isinstance(v, (int, float)) and math.isfinite(v):
            length = max(2.0, bar_w * scale(v))
            colour = BAR if status != "failed" else COLORS["failed"]
            out.append(f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row_h - 8}" fill="{colour}">'
                       f'<title>{_e(label)}: {_num(v)} {_e(unit)}</title></rect>')
            out.append(f'<text x="{label_w + length + 6:.1f}" y="{y + 17}" font-size="11" font-family="sans-serif" '
                       f'fill="#57606a">{_num(v)} {_e(unit)}</text>')
        else:
            out.append(f'<text x="{label_w + 4}" y="{y + 17}" font-size="11" font-family="sans-serif" '
                       f'fill="#57606a">— (not measured)</text>')
    out.append("</svg>")
    return "".join(out)


PARITY_FIGURES = (  # (metric, its interval's (low, high) keys or None, label)
    ("top1_agreement", ("top1_agreement_ci_low", "top1_agreement_ci_high"), "top-1 agreement"),
    ("sample_cosine_p1", None, "cosine p1"),
    ("rel_error_p99", None, "|Δ|/range p99"),
    ("max_abs_error", None, "max |Δ|"),
)


def _parity_rows(r: TargetReport) -> list[str]:
    rows = []
    for name, m in (r.parity.metrics if r.parity else {}).items():
        kind = r.parity.kinds.get(name)
        cells = []
        for key, interval, _ in PARITY_FIGURES:
            v = m.get(key)
            text = _num(v, 5)
            if interval and v is not None and m.get(interval[0]) is not None:
                text += f' <span class="ci">[{_num(m[interval[0]], 4)} – {_num(m.get(interval[1]), 4)}]</span>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td>{_e(r.target)}</td><td>{_e(name)}</td><td>{_e(kind.kind if kind else '?')}</td>"
                    + "".join(cells) + "</tr>")
    return rows


def _search(r: TargetReport) -> str:
    s = (r.artifact or {}).get("accuracy_search")
    if not isinstance(s, dict):
        return ""
    chosen = s.get("chosen", {})
    trials = "".join(
        f"<tr><td>{i + 1}</td><td>{_e(t.get('stage', ''))}</td><td>{_e(t.get('recipe', ''))}</td>"
        f"<td>{len(t.get('float_layers', []))}</td>"
        f"<td>{'meets' if t.get('passed') else ('error: ' + _e(t['error']) if t.get('error') else 'misses')}</td>"
        f"<td>{_num(t.get('score'))}</td><td>{_num(t.get('seconds'), 3)}</td></tr>"
        for i, t in enumerate(s.get("trials", [])))
    floats = "".join(f"<li>{_e(f)}</li>" for f in chosen.get("float_layers", [])) or "<li>none</li>"
    return (f"<h3>{_e(r.target)}</h3><p>{_e(search_line(s))}</p>"
            "<table><tr><th>#</th><th>stage</th><th>recipe</th><th>float layers</th><th>on tuning</th>"
            f"<th>score</th><th>seconds</th></tr>{trials}</table>"
            f"<p>layers kept in float by the chosen recipe '{_e(chosen.get('recipe', ''))}':</p><ul>{floats}</ul>")


def _failing(r: TargetReport) -> str:
    if r.status == "error":
        return (f"<h3>{_e(r.target)} {_status(r)}</h3><p>{_e(r.stage or 'build')}: {_e(r.reason or '')}</p>"
                + (f"<p>hint: {_e(r.hint)}</p>" if r.hint else ""))
    bad = [c for c in r.checks if c.applied and not c.passed]
    if not bad:
        return ""
    rows = "".join(f"<tr><td>{_e(c.name)}</td><td>{_e(c.op)} {_num(c.limit)}</td><td>{_num(c.measured)}</td>"
                   f"<td>{'INCONCLUSIVE' if c.inconclusive else 'FAIL'}</td><td>{_e(c.note)}</td></tr>" for c in bad)
    return (f"<h3>{_e(r.target)} {_status(r)}</h3><table><tr><th>check</th><th>limit</th><th>measured</th>"
            f"<th>result</th><th>note</th></tr>{rows}</table>")


def page(results: list[TargetReport]) -> str:
    """The self-contained HTML page of one build."""
    model = next((r.source["name"] for r in results if r.source), "model")
    summary = "".join(
        f"<tr><td>{_e(r.target)}</td><td>{_e(r.backend or '')}</td><td>{_e(r.precision or '')}</td>"
        f"<td>{_status(r)}</td><td>{_num((r.size_bytes or 0) / 2**20) if r.size_bytes else '—'}</td>"
        f"<td>{_num(r.latency.p50_ms) if r.latency else '—'}</td>"
        f"<td>{_e(r.reason or ', '.join(c.name for c in r.checks if not c.passed))}</td></tr>" for r in results)
    built = [r for r in results if r.status not in ("skipped", "error")]
    size = bars("bundle size (MiB)", [(r.target, (r.size_bytes or 0) / 2**20 if r.size_bytes else None, r.status)
                                      for r in built], "MiB", "plot-size")
    latency = bars("host latency p50 (ms, batch 1; host, not device numbers)",
                   [(r.target, r.latency.p50_ms if r.latency else None, r.status) for r in built], "ms",
                   "plot-latency")
    parity = "".join(row for r in built for row in _parity_rows(r))
    parity_head = "".join(f"<th>{_e(label)}</th>" for _, _, label in PARITY_FIGURES)
    searches = "".join(_search(r) for r in built) or "<p>no INT8 accuracy search in this build</p>"
    failing = "".join(_failing(r) for r in results) or "<p>none: every built target passed</p>"
    budgets = "".join(f"<li>{_e(r.target)}: {_e(k)} = {_e(b.value)} ({_e(b.source)})</li>"
                      for r in results for k, b in r.budgets.items() if not b.source.startswith("profile "))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP, quote=False)}">
<title>edgepack build: {_e(model)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #24292f; background: #f6f8fa; }}
table {{ border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }}
.plot {{ background: #fff; border: 1px solid #d0d7de; margin: 8px 0; display: block; }}
.ci {{ color: #57606a; }}
</style></head><body>
<h1>edgepack build: {_e(model)}</h1>
<p>{len(results)} target(s). Latency is measured on the build host (labelled host), never presented as a device
number; parity intervals are 95% Wilson intervals on the holdout.</p>
<h2>Summary</h2>
<table><tr><th>target</th><th>backend</th><th>precision</th><th>verdict</th><th>size MiB</th><th>host p50 ms</th>
<th>reason / failing rows</th></tr>{summary}</table>
{f"<p>budgets set by the build:</p><ul>{budgets}</ul>" if budgets else ""}
<h2>Size and host latency</h2>
{size}
{latency}
<h2>Parity per output</h2>
{f"<table><tr><th>target</th><th>output</th><th>kind</th>{parity_head}</tr>{parity}</table>" if parity
 else "<p>no host parity (deferred to the device, or nothing built)</p>"}
<h2>INT8 accuracy search</h2>
{searches}
<h2>Failing rows</h2>
{failing}
</body></html>
"""


def write(results: list[TargetReport], path: Path) -> None:
    """Write the page (through an O_EXCL|O_NOFOLLOW temporary, never through a planted symlink)."""
    from edgepack.safety import write_atomic

    write_atomic(Path(path), page(results), "HTML report")

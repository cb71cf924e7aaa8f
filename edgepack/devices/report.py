"""Render the device-run history as Markdown and as one self-contained HTML page (inline SVG plots, no scripts,
no external files): latest status per device × bundle × configuration, latency and parity over time, flags from
:mod:`edgepack.devices.regressions`.

A history is shared between people and machines, so nothing from it reaches the page unescaped: text is
HTML-escaped, a status is mapped onto the known verdicts (:data:`COLORS`, one entry per verdict word; anything else
is shown as ``?``), numbers are formatted, and the page carries a Content-Security-Policy that forbids scripts,
objects, frames and any fetch (:data:`CSP`), so even a rendering bug cannot run script."""

from __future__ import annotations

import html
from typing import Any

from edgepack.devices.regressions import Flag

COLORS = {"PASS": "#1a7f37", "FLAKY": "#bf8700", "FAIL": "#cf222e", "INCONCLUSIVE": "#a626a4", "INFRA": "#8250df", "SKIPPED": "#6e7781",
          "NOT_RUN": "#6e7781"}
CSP = ("default-src 'none'; script-src 'none'; object-src 'none'; frame-src 'none'; connect-src 'none'; "
       "img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
UNKNOWN = "?"
PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#bf8700", "#8250df", "#e16f24", "#57606a", "#1b7c83")


def status_word(status: object) -> str:
    """A history's status mapped onto the known verdicts (table-driven: :data:`COLORS`); anything else is ``?``."""
    return status if isinstance(status, str) and status in COLORS else UNKNOWN


def _fmt(v: float | None, nd: int = 3) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.{nd}f}"


def _md(text: object) -> str:
    """A Markdown table cell: no HTML a renderer would interpret, no cell break, one line."""
    return html.escape(str(text), quote=False).replace("|", "/").replace("\n", " ").replace("\r", " ")


def _parity_value(row: dict) -> float | None:
    vals = [m.get("top1_agreement", m.get("sample_cosine_p1")) for m in (row["parity"] or {}).values()]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _cos(row: dict) -> float | None:
    vals = [m.get("sample_cosine_p1") for m in (row["parity"] or {}).values() if m.get("sample_cosine_p1") is not None]
    return min(vals) if vals else None


def _host_cell(row: dict) -> str:
    """The build host's conversion-fidelity parity (top-1 agreement) and host p50, next to the device's."""
    h = row.get("host") or {}
    if not h:
        return "—"
    vals = [m.get("top1_agreement", m.get("sample_cosine_p1")) for m in (h.get("parity") or {}).values()]
    vals = [v for v in vals if v is not None]
    par = _fmt(min(vals), 4) if vals else "—"
    return f"{par} · {_fmt(h.get('p50_ms'))} ms"


def _budget_cell(row: dict) -> str:
    b = row.get("budget") or {}
    if not b:
        return "—"
    rows = [f"{r['name'][:3]} {_fmt(r.get('measured'))}" + (f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
                                                             if r.get("ci_low") is not None else "")
            + f" ≤ {_fmt(r['limit'], 3)}" for r in b.get("rows", [])]
    return f"{b['status']} ({b['class']}{': ' + ', '.join(rows) if rows else ''})"


def markdown(history: dict[tuple[str, str, str], list[dict[str, Any]]], flags: list[Flag]) -> str:
    lines = ["# edgepack device runs", ""]
    runs = sorted({r["run_id"]: r["started"] for rows in history.values() for r in rows}.items(), key=lambda x: x[1])
    lines.append(f"{len(runs)} runs, latest {runs[-1][1] if runs else '—'}. Latency under emulation is labelled "
                 "`emulated` and never judged against a budget.")
    lines += ["", "## Regressions (latest run against a baseline window)", ""]
    lines += [f"- **{_md(f.what)}** {_md(f.device)} · {_md(f.bundle)} [{_md(f.config)}]: {_md(f.detail)}"
              for f in flags] or ["- none"]
    lines += ["", "## Latest", "", "Device parity and latency next to the build host's (conversion fidelity: "
              "top-1 agreement · host p50). Latency budgets: judged on real devices of their class only.", "",
              "| device | bundle | config | status | p50 ms | where | top-1 agreement | "
              "cosine p1 | host (top-1 · p50) | latency budget | runtime | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dev, target, config), rows in sorted(history.items()):
        r = rows[-1]
        note = (r.get("diagnosis") or r.get("reason") or "")[:160]
        rt = r["runtime"].get("runtime", "")
        if r["runtime"].get("inference_precision"):
            rt += f" ({r['runtime']['inference_precision']})"
        lines.append(f"| {_md(dev)} | {_md(target)} | {_md(config)} | {status_word(r['status'])} | {_fmt(r['p50_ms'])} | "
                     f"{_md(r['latency_where'])} | {_fmt(_parity_value(r), 4)} | {_fmt(_cos(r), 4)} | "
                     f"{_md(_host_cell(r))} | {_md(_budget_cell(r))} | {_md(rt)} | {_md(note)} |")
    return "\n".join(lines) + "\n"


def _svg_lines(title: str, series: list[tuple[str, list[tuple[int, float]]]], n_runs: int, unit: str,
               plot_id: str) -> str:
    """A line plot over run index; one polyline + markers per series; legend below."""
    w, h, left, right, top, bottom = 640, 240, 56, 12, 28, 28
    pts = [v for _, s in series for _, v in s]
    if not pts:
        return f'<p class="empty">{html.escape(title)}: no data</p>'
    lo, hi = min(pts), max(pts)
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.05 or 0.5), hi + (abs(hi) * 0.05 or 0.5)
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    xs = lambda i: left + (w - left - right) * (i / max(n_runs - 1, 1))  # noqa: E731
    ys = lambda v: top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    out = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}">',
           f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
           f'<text x="{left}" y="18" font-size="13" font-family="sans-serif" fill="#24292f">{html.escape(title)}</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = ys(v)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de" stroke-width="1"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" font-family="sans-serif" '
                   f'fill="#57606a">{v:.3g}</text>')
    out.append(f'<text x="{left}" y="{h - 8}" font-size="10" font-family="sans-serif" fill="#57606a">run 1 … {n_runs}'
               f' ({html.escape(unit)})</text>')
    for idx, (name, s) in enumerate(series):
        color = PALETTE[idx % len(PALETTE)]
        coords = " ".join(f"{xs(i):.1f},{ys(v):.1f}" for i, v in s)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" points="{coords}">'
                   f'<title>{html.escape(name)}</title></polyline>')
        for i, v in s:
            out.append(f'<circle cx="{xs(i):.1f}" cy="{ys(v):.1f}" r="4" fill="{color}"><title>'
                       f'{html.escape(name)}: {v:.4g}</title></circle>')
    out.append("</svg>")
    legend = "".join(f'<span class="key" style="border-color:{PALETTE[i % len(PALETTE)]}">{html.escape(n)}</span>'
                     for i, (n, _) in enumerate(series))
    return "".join(out) + f'<div class="legend">{legend}</div>'


def html_page(history: dict[tuple[str, str, str], list[dict[str, Any]]], flags: list[Flag]) -> str:
    """The self-contained HTML report."""
    run_ids = [rid for rid, _ in sorted({r["run_id"]: r["started"] for rows in history.values() for r in rows}.items(),
                                        key=lambda x: x[1])]
    index = {rid: i for i, rid in enumerate(run_ids)}
    lat = [(f"{d} · {t} [{c}]", rows[-1]["latency_where"],
            [(index[r["run_id"]], r["p50_ms"]) for r in rows if r["p50_ms"] is not None])
           for (d, t, c), rows in sorted(history.items())]
    lat_dev = [(n, s) for n, where, s in lat if s and where != "emulated"]
    lat_emu = [(n, s) for n, where, s in lat if s and where == "emulated"]
    par = [(f"{d} · {t} [{c}]", [(index[r["run_id"]], v) for r in rows if (v := _parity_value(r)) is not None])
           for (d, t, c), rows in sorted(history.items())]
    par = [s for s in par if s[1]]
    rows_html = []
    for (dev, target, config), rows in sorted(history.items()):
        r = rows[-1]
        status = status_word(r["status"])
        color = COLORS.get(status, "#57606a")
        rt = html.escape(r["runtime"].get("runtime", "") + (f" ({r['runtime']['inference_precision']})"
                                                             if r["runtime"].get("inference_precision") else ""))
        rows_html.append(
            f"<tr><td>{html.escape(dev)}</td><td>{html.escape(target)}</td><td>{html.escape(config)}</td>"
            f'<td><b style="color:{color}">{html.escape(status)}</b></td><td>{_fmt(r["p50_ms"])}</td>'
            f"<td>{html.escape(r['latency_where'])}</td><td>{_fmt(_parity_value(r), 4)}</td>"
            f"<td>{_fmt(_cos(r), 4)}</td><td>{html.escape(_host_cell(r))}</td>"
            f"<td>{html.escape(_budget_cell(r))}</td><td>{rt}</td>"
            f"<td>{html.escape((r.get('diagnosis') or r.get('reason') or '')[:300])}</td></tr>")
    flag_html = "".join(f"<li><b>{html.escape(f.what)}</b> {html.escape(f.device)} · {html.escape(f.bundle)} "
                        f"[{html.escape(f.config)}]: {html.escape(f.detail)}</li>" for f in flags) or "<li>none</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP, quote=False)}">
<title>edgepack device runs</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #24292f; background: #f6f8fa; }}
table {{ border-collapse: collapse; background: #fff; font-size: 13px; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }}
.plot {{ background: #fff; border: 1px solid #d0d7de; margin: 8px 0; display: block; }}
.legend .key {{ display: inline-block; border-left: 12px solid; padding: 0 10px 0 4px; font-size: 12px; margin: 2px; }}
</style></head><body>
<h1>edgepack device runs</h1>
<p>{len(run_ids)} runs. Latency under emulation is labelled <i>emulated</i> and never judged against a budget;
parity is judged everywhere. INFRA = the run did not complete (never a pass); NOT_RUN = parity not run on
this device.</p>
<h2>Regressions (latest run against a baseline window)</h2><ul>{flag_html}</ul>
<h2>Latency p50 per run</h2>{_svg_lines("latency p50 on devices (ms)", lat_dev, len(run_ids), "ms", "plot-latency")}
{_svg_lines("latency p50 under emulation (ms; recorded, never judged)", lat_emu, len(run_ids), "ms",
            "plot-latency-emulated")}
<h2>Parity per run</h2>{_svg_lines("top-1 agreement (min over outputs)", par, len(run_ids), "fraction", "plot-parity")}
<h2>Latest</h2>
<table><tr><th>device</th><th>bundle</th><th>config</th><th>status</th><th>p50 ms</th><th>where</th>
<th>top-1 agreement</th><th>cosine p1</th><th>host (top-1 · p50)</th><th>latency budget</th><th>runtime</th>
<th>note</th></tr>
{''.join(rows_html)}</table>
</body></html>
"""

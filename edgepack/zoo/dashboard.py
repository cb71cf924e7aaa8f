"""One view over a zoo's cells: a Markdown page and a self-contained HTML dashboard (model × target grid coloured
by verdict, with size, host latency, the INT8 recipe, cache hit or built, and a link to each cell's report); CI
matrices of the cells; merging the outputs of cells built by separate jobs."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from edgepack import safety
from edgepack.errors import InputError
from edgepack.zoo.run import EXIT

COLOURS = {"passed": "#2e7d32", "skipped": "#9e9e9e", "failed": "#c62828", "inconclusive": "#8e24aa",
           "error": "#e65100", "refused": "#6d4c41", "infra": "#1565c0"}


def records(out: Path) -> list[dict[str, Any]]:
    """Every cell record under ``out/cells`` (sorted by id)."""
    found = []
    for p in sorted((Path(out) / "cells").glob("*/*.json")):
        try:
            found.append(json.loads(p.read_text()))
        except ValueError:
            raise InputError(f"{safety.shown(p)} is not a cell record (invalid JSON)",
                             hint="rebuild that cell, or delete the file") from None
    if not found:
        raise InputError(f"no cell records in {safety.shown(Path(out) / 'cells')}",
                         hint="run `edgepack zoo build zoo.toml --out DIR` first")
    return sorted(found, key=lambda r: r["id"])


def exit_code(recs: list[dict[str, Any]]) -> int:
    return max((EXIT.get(r.get("verdict", "error"), 2) for r in recs), default=0)


def _size(r: dict[str, Any]) -> str:
    return f"{r['size_bytes'] / 2**20:.3f} MB" if r.get("size_bytes") else "—"


def _lat(r: dict[str, Any]) -> str:
    return f"{r['latency_p50_ms']:.3f} ms ({r.get('latency_where') or 'host'})" if r.get("latency_p50_ms") else "—"


def counts(recs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        out[r.get("verdict", "error")] = out.get(r.get("verdict", "error"), 0) + 1
    return out


def markdown(recs: list[dict[str, Any]]) -> str:
    c = counts(recs)
    hits = sum(r.get("cache") == "hit" for r in recs)
    lines = ["# Zoo report", "", f"{len(recs)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
             + f"; cache hits {hits}", "",
             "| model | target | verdict | size | p50 latency | INT8 recipe | cache | node | report |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        link = f"[report]({r['report']})" if r.get("report") else (r.get("reason") or "").replace("|", "/")[:120]
        where = (r.get("node") or r.get("host") or "—")[:12]
        lines.append(f"| {r['model']} | {r['target']} | {r.get('verdict', '?').upper()} | {_size(r)} | {_lat(r)} | "
                     f"{r.get('int8_recipe') or '—'} | {r.get('cache', 'off')} | {where} | {link} |")
    return "\n".join(lines) + "\n"


def page(recs: list[dict[str, Any]]) -> str:
    """A self-contained HTML page (inline CSS, no script, no external resource)."""
    e = html.escape
    models = sorted({r["model"] for r in recs})
    targets = sorted({r["target"] for r in recs})
    by = {(r["model"], r["target"]): r for r in recs}
    head = "".join(f"<th>{e(t)}</th>" for t in targets)
    rows = []
    for m in models:
        cells = []
        for t in targets:
            r = by.get((m, t))
            if r is None:
                cells.append('<td class="none">—</td>')
                continue
            v = r.get("verdict", "error")
            title = e(r.get("reason") or ", ".join(r.get("failed_checks") or []) or v)
            body = [f'<b class="v">{e(v.upper())}</b>', e(_size(r)), e(_lat(r))]
            if r.get("int8_recipe"):
                body.append("INT8: " + e(r["int8_recipe"]))
            body.append(f'<span class="cache">{e(r.get("cache", "off"))}</span>')
            if r.get("report"):
                body.append(f'<a href="{e(r["report"])}">report</a>')
            cells.append(f'<td class="cell {e(v)}" data-cell="{e(r["id"])}" data-verdict="{e(v)}" '
                         f'style="background:{COLOURS.get(v, "#000")}" title="{title}">{"<br>".join(body)}</td>')
        rows.append(f"<tr><th>{e(m)}</th>{''.join(cells)}</tr>")
    summary = ", ".join(f"{v} {e(k)}" for k, v in sorted(counts(recs).items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgepack zoo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .4em .6em; vertical-align: top; font-size: 90%; }}
td.cell {{ color: #fff; }} td.cell a {{ color: #fff; }}
.cache {{ font-style: italic; }}
</style></head>
<body><h1>Zoo report</h1>
<p id="summary">{len(recs)} cells: {summary}</p>
<table id="grid"><thead><tr><th>model \\ target</th>{head}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
</body></html>
"""


def write(out: Path, recs: list[dict[str, Any]]) -> tuple[Path, Path]:
    md = safety.write_atomic(Path(out) / "zoo-report.md", markdown(recs), "zoo report")
    htm = safety.write_atomic(Path(out) / "zoo-report.html", page(recs), "zoo report")
    return md, htm


def matrix(cell_ids: list[str], fmt: str, zoo_file: str) -> str:
    """The cells as a CI job matrix: GitHub Actions (JSON for ``strategy.matrix``) or GitLab (``parallel:matrix``)."""
    if fmt == "github":
        return json.dumps({"include": [{"cell": c} for c in cell_ids]}) + "\n"
    build = f"edgepack zoo build {zoo_file} --cell \"$CELL\" --out \"zoo-out/$CI_JOB_ID\""
    lines = ["zoo-cell:", "  script:", f"    - {build}",
             "  artifacts:", "    paths: [zoo-out/]", "  parallel:", "    matrix:", "      - CELL:"]
    lines += [f"          - {json.dumps(c)}" for c in cell_ids]
    return "\n".join(lines) + "\n"


def merge(sources: list[Path], out: Path) -> list[dict[str, Any]]:
    """Copy every cell (record + bundle) of the ``sources`` output folders into ``out``; a cell in two sources is
    refused (two jobs built the same cell)."""
    from edgepack import bundle as bundles
    from edgepack.zoo.executors import record_path

    seen: dict[str, Path] = {}
    for src in sources:
        for r in records(src):
            if r["id"] in seen:
                raise InputError(f"cell {r['id']} is in both {seen[r['id']]} and {src}",
                                 hint="merge the outputs of distinct cells (one CI job per cell)")
            seen[r["id"]] = src
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        for r in records(src):
            if r.get("bundle"):
                final = out / r["bundle"]
                final.parent.mkdir(parents=True, exist_ok=True)
                staging = final.parent / f".merge-{final.name}"
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(Path(src) / r["bundle"], staging, symlinks=True)
                bundles.commit(staging, final)
            dest = record_path(out, r["id"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            safety.write_atomic(dest, json.dumps(r, indent=2, sort_keys=True) + "\n", "cell record")
    return records(out)


__all__ = ["exit_code", "markdown", "matrix", "merge", "page", "records", "write"]

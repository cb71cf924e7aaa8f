"""Reports: the terminal table (Rich), the build's report.json and JUnit XML for CI systems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

if TYPE_CHECKING:
    from rich.console import Console

    from edgepack.pipeline import TargetResult


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.6g}"
        return f"{v:.2e}"
    return str(v)


def summary(results: list["TargetResult"]) -> dict[str, Any]:
    return {
        "passed": all(r.passed for r in results),
        "targets": [{"target": r.target, "status": r.status, "bundle": str(r.bundle) if r.bundle else None,
                     **{k: v for k, v in r.report.items() if k not in ("target", "status", "bundle")}}
                    for r in results],
    }


def write_json(results: list["TargetResult"], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(results), indent=2, sort_keys=True, default=str) + "\n")


def write_junit(results: list["TargetResult"], path: Path) -> None:
    """One <testsuite> per target, one <testcase> per budget row."""
    root = ET.Element("testsuites", name="edgepack")
    for r in results:
        checks = r.report.get("checks", [])
        suite = ET.SubElement(root, "testsuite", name=r.target, tests=str(max(len(checks), 1)),
                              failures=str(sum(1 for c in checks if not c["passed"])),
                              skipped="1" if r.status == "skipped" else "0")
        if r.status == "skipped":
            case = ET.SubElement(suite, "testcase", classname=r.target, name="build")
            ET.SubElement(case, "skipped", message=r.report.get("reason", "skipped"))
            continue
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=r.target, name=c["name"])
            if not c["passed"]:
                ET.SubElement(case, "failure", message=f"measured {_fmt(c['measured'])}, limit {c['op']} {_fmt(c['limit'])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def render(console: "Console", results: list["TargetResult"]) -> None:
    from rich.markup import escape
    from rich.table import Table

    for r in results:
        rep = r.report
        if r.status == "skipped":
            console.print(f"[yellow]skipped[/] {r.target}: {rep.get('reason', '')}")
            continue
        title = f"{r.target}  [{'green' if r.passed else 'red'}]{r.status.upper()}[/]"
        t = Table(title=title, title_justify="left", show_lines=False)
        for col in ("check", "limit", "measured", "result"):
            t.add_column(col, justify="left" if col == "check" else "right")
        for c in rep.get("checks", []):
            ok = "[green]pass[/]" if c["passed"] else "[red]FAIL[/]"
            t.add_row(escape(c["name"]), f"{c['op']} {_fmt(c['limit'])}", _fmt(c["measured"]), ok)
        console.print(t)
        lat = rep.get("latency") or {}
        facts = [f"size {rep.get('size_bytes', 0) / 1024 / 1024:.3f} MB ({rep.get('primary')})"]
        if lat:
            runtime = (lat.get("runtime") or {}).get("runtime", "")
            facts.append(f"host latency p50 {lat['p50_ms']:.3f} ms / p90 {lat['p90_ms']:.3f} ms (batch 1"
                         + (f", {runtime})" if runtime else ")"))
        if rep.get("build_time_s") is not None:
            facts.append(f"built in {rep['build_time_s']:.1f} s")
        console.print("  " + " · ".join(facts))
        for name, m in (rep.get("parity", {}).get("metrics") or {}).items():
            parts = [f"cos {m['cosine']:.6f}", f"max|Δ| {_fmt(m['max_abs_error'])}"]
            if "top1_agreement" in m:
                parts.append(f"top-1 agreement {m['top1_agreement'] * 100:.2f}%")
            if "reference_accuracy" in m:
                parts.append(f"accuracy ref {m['reference_accuracy'] * 100:.2f}% → bundle {m['bundle_accuracy'] * 100:.2f}%")
            console.print(f"  output {escape(name)}: " + ", ".join(parts))
        for w in rep.get("warnings", []):
            console.print(f"  [yellow]warning:[/] {escape(w)}")
        if r.bundle:
            console.print(f"  bundle: {r.bundle}")

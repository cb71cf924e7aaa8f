"""Reports: the typed TargetReport (one per target, built once), the build's JSON report, JUnit XML and the Rich
terminal table. JSON is strict: NaN/Inf are written as null (the check rows keep their FAIL verdicts).

A target's status is ``passed``, ``inconclusive`` (a rate budget its holdout had too few samples to prove: exit 1,
its own word everywhere), ``failed``, ``skipped`` or ``error``. Rows that are ``not applied`` show in the table, the
JSON and JUnit (as skipped test cases) and judge nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree as ET

from pydantic import BaseModel, ConfigDict, Field

from edgepack.core.checks import Check, finite_json
from edgepack.config import EffectiveBudget
from edgepack.core.limits import Limits

if TYPE_CHECKING:
    from rich.console import Console

REPORT_SCHEMA_VERSION = 2
Status = Literal["passed", "inconclusive", "failed", "skipped", "error"]


def dumps(obj: Any) -> str:
    """Strict JSON: NaN/Inf written as null."""
    return json.dumps(finite_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        return dumps(self.model_dump(mode="json"))


class OutputKindInfo(_Model):
    kind: str
    how: str


class LatencyReport(_Model):
    where: Literal["host", "device"] = "host"
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int
    runtime: dict[str, Any] = Field(default_factory=dict, description="what the runtime used (versions, device, …)")


class ParityReport(_Model):
    passed: bool | None = Field(description="None when parity was deferred to the device")
    verdict: Literal["passed", "inconclusive", "failed"] | None = Field(
        None, description="passed, inconclusive (a rate budget the holdout had too few samples to prove) or failed; "
        "None when deferred (and in reports written before it existed)")
    samples: int = 0
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    kinds: dict[str, OutputKindInfo] = Field(default_factory=dict, description="each output's kind and how it "
                                             "was decided")
    worst_samples: dict[str, list[dict[str, Any]]] = Field(default_factory=dict, description="holdout indices "
                                                           "(kept in golden/) that differ most, per output")
    warnings: list[str] = Field(default_factory=list)
    where: Literal["host", "host-proxy"] = Field("host", description="host: the bundle's own runtime on the build "
                                                 "host; host-proxy: a stand-in on the build host (e.g. the "
                                                 "TensorRT-ready ONNX in ONNX Runtime), never device numbers")
    deferred_to_device: bool = False
    reason: str | None = None


class TargetReport(_Model):
    """The verdict for one target: a value, built once (``model_copy`` makes a new one)."""

    schema_version: Literal[2] = REPORT_SCHEMA_VERSION
    target: str
    status: Status
    backend: str | None = None
    precision: str | None = None
    device: str | None = None
    reason: str | None = Field(None, description="why a target was skipped or errored")
    stage: str | None = Field(None, description="the stage an ERROR happened in (conversion, host run, …)")
    hint: str | None = Field(None, description="what to do about an ERROR")
    details: str | None = Field(None, description="the converter's or runtime's full message for an ERROR")
    bundle: str | None = None
    archive: str | None = None
    size_bytes: int | None = None
    primary: str | None = None
    build_time_s: float | None = None
    latency: LatencyReport | None = None
    parity: ParityReport | None = None
    limits: Limits | None = None
    budgets: dict[str, EffectiveBudget] = Field(default_factory=dict, description="every budget the build set, by "
                                                "schema key (max_size_mb, parity.min_cosine, …), with its value and "
                                                "source: the profile, the model config or the command line / API")
    checks: list[Check] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    artifact: dict[str, Any] = Field(default_factory=dict, description="the converter's free-form details")
    calibration: dict[str, Any] | None = None
    source: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "skipped")

    @property
    def exit_code(self) -> int:
        """0 passed/skipped, 1 a check failed or was inconclusive, 2 an error."""
        return {"passed": 0, "skipped": 0, "inconclusive": 1, "failed": 1, "error": 2}[self.status]


def exit_code(results: list[TargetReport]) -> int:
    """The worst verdict of a build."""
    return max((r.exit_code for r in results), default=0)


class BuildReport(_Model):
    """Every target of one build (``build-report.json``)."""

    schema_version: Literal[2] = REPORT_SCHEMA_VERSION
    passed: bool
    targets: list[TargetReport]

    @classmethod
    def of(cls, results: list[TargetReport]) -> "BuildReport":
        return cls(passed=all(r.passed for r in results), targets=list(results))


def read(path: Path) -> TargetReport:
    return TargetReport.model_validate_json(Path(path).read_text())


def write_json(results: list[TargetReport], path: Path) -> None:
    from edgepack.safety import write_atomic

    write_atomic(path, BuildReport.of(results).to_json(), "build report")  # never through a planted symlink


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.6g}"
        return f"{v:.2e}"
    return str(v)


STATUS_COLOUR = {"passed": "green", "inconclusive": "magenta", "failed": "red", "error": "bold red",
                 "skipped": "yellow"}
ROW_RESULT = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "inconclusive": "[magenta]INCONCLUSIVE[/]",
              "not applied": "[dim]not applied[/]"}


def write_junit(results: list[TargetReport], path: Path) -> None:
    """One <testsuite> per target, one <testcase> per budget row."""
    root = ET.Element("testsuites", name="edgepack")
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.target, tests=str(max(len(r.checks), 1)),
                              failures=str(sum(1 for c in r.checks if not c.passed)),
                              skipped=str(1 if r.status == "skipped" else sum(1 for c in r.checks if not c.applied)))
        if r.status in ("skipped", "error"):
            case = ET.SubElement(suite, "testcase", classname=r.target, name="build")
            if r.status == "skipped":
                ET.SubElement(case, "skipped", message=r.reason or "skipped")
            else:
                suite.set("errors", "1")
                err = ET.SubElement(case, "error", message=f"{r.stage or 'build'}: {r.reason or 'error'}")
                err.text = "\n".join(x for x in (r.hint and f"hint: {r.hint}", r.details) if x) or None
            continue
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", classname=r.target, name=c.name)
            if not c.applied:  # shown, judges nothing
                ET.SubElement(case, "skipped", message=c.note or "not applied")
            elif c.inconclusive:  # not a pass: a failure whose type says why
                ET.SubElement(case, "failure", type="INCONCLUSIVE",
                              message=f"INCONCLUSIVE: measured {_fmt(c.measured)}, limit {c.op} {_fmt(c.limit)}"
                              + (f", needs ≥ {c.samples_needed} samples" if c.samples_needed else "")
                              + (f" ({c.note})" if c.note else ""))
            elif not c.passed:
                ET.SubElement(case, "failure", message=f"measured {_fmt(c.measured)}, limit {c.op} {_fmt(c.limit)}"
                              + (f" ({c.note})" if c.note else ""))
    import io

    from edgepack.safety import write_atomic

    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    write_atomic(path, buf.getvalue(), "JUnit report")  # never through a planted symlink


def render(console: "Console", results: list[TargetReport]) -> None:
    from rich.markup import escape
    from rich.table import Table

    for r in results:
        if r.status == "skipped":
            console.print(f"[yellow]skipped[/] {escape(r.target)}: {escape(r.reason or '')}")
            continue
        if r.status == "error":  # the CLI prints errors on stderr (error: line + hint)
            continue
        title = f"{escape(r.target)}  [{STATUS_COLOUR[r.status]}]{r.status.upper()}[/]"
        t = Table(title=title, title_justify="left", show_lines=False)
        for col in ("check", "limit", "measured", "result"):
            t.add_column(col, justify="left" if col == "check" else "right")
        for c in r.checks:
            t.add_row(escape(c.name), f"{c.op} {_fmt(c.limit)}", escape(_fmt(c.measured)), ROW_RESULT[c.state])
        console.print(t)
        for c in r.checks:
            if c.state in ("inconclusive", "not applied"):
                console.print(f"  [{'magenta' if c.inconclusive else 'dim'}]{escape(c.state)}:[/] {escape(c.name)}: "
                              f"{escape(c.note.split('; ', 1)[-1] if c.inconclusive else c.note)}")
        facts = [f"size {(r.size_bytes or 0) / 1024 / 1024:.3f} MB ({r.primary})"]
        if r.latency:
            runtime = r.latency.runtime.get("runtime", "")
            facts.append(f"{r.latency.where} latency p50 {r.latency.p50_ms:.3f} ms / p90 {r.latency.p90_ms:.3f} ms "
                         "(batch 1" + (f", {runtime})" if runtime else ")"))
        if r.build_time_s is not None:
            facts.append(f"built in {r.build_time_s:.1f} s")
        console.print("  " + escape(" · ".join(facts)))
        search = (r.artifact or {}).get("accuracy_search")
        if search:
            console.print("  " + escape(search_line(search)))
        if r.parity and r.parity.where == "host-proxy":
            console.print("  parity: host-proxy (a stand-in run on this host, not the device runtime's numbers)")
        for name, m in (r.parity.metrics if r.parity else {}).items():
            kind = r.parity.kinds.get(name)
            parts = [f"{kind.kind}" if kind else "?", f"max|Δ| {_fmt(m.get('max_abs_error'))}"]
            if kind and kind.kind in ("scores", "embedding"):
                parts.append(f"cos p1 {_fmt(m.get('sample_cosine_p1'))}")
            elif m.get("rel_error_p99") is not None:
                parts.append(f"|Δ|/range p99 {_fmt(m.get('rel_error_p99'))}")
            if m.get("top1_agreement") is not None:
                parts.append(f"top-1 agreement {m['top1_agreement'] * 100:.2f}% "
                             f"[{m['top1_agreement_ci_low'] * 100:.1f}–{m['top1_agreement_ci_high'] * 100:.1f}]"
                             + (" (information)" if kind and kind.kind == "other" else ""))
            if m.get("reference_accuracy") is not None and m.get("bundle_accuracy") is not None:
                parts.append(f"accuracy ref {m['reference_accuracy'] * 100:.2f}% → bundle "
                             f"{m['bundle_accuracy'] * 100:.2f}%")
            if m.get("nonfinite_samples"):
                parts.append(f"NaN/Inf in {int(m['nonfinite_samples'])} samples")
            console.print(f"  output {escape(name)}: " + escape(", ".join(parts)))
        for key, b in r.budgets.items():
            if not b.source.startswith("profile "):
                console.print(f"  budget {escape(key)} = {escape(_fmt(b.value))} (from {escape(b.source)})")
        for w in r.warnings:
            console.print(f"  [yellow]warning:[/] {escape(w)}")
        if r.bundle:
            console.print(f"  bundle: {escape(r.bundle)}")


def search_line(s: dict[str, Any]) -> str:
    """One line on the INT8 accuracy search: what was tried on the tuning split, what was chosen, its cost."""
    c = s.get("chosen", {})
    trials = s.get("trials", [])
    recipes = list(dict.fromkeys(t["recipe"] for t in trials))
    floats = c.get("float_layers", [])
    cost = s.get("cost", {})
    bits = [f"INT8 search on the tuning split: {len(trials)} trial(s) over recipes {', '.join(recipes)}",
            f"chosen '{c.get('recipe')}'" + (f" with {len(floats)} layer(s) in float ({', '.join(floats[:4])}"
                                               f"{', …' if len(floats) > 4 else ''})" if floats else ""),
            "meets the budget on tuning" if s.get("met_budget_on_tuning") else "MISSES the budget on tuning"]
    if cost.get("int8_compute_share") is not None:
        bits.append(f"{cost['int8_compute_share'] * 100:.0f}% of compute ops in INT8")
    if cost.get("latency_vs_plain_int8") is not None:
        bits.append(f"latency ×{cost['latency_vs_plain_int8']:.2f} vs plain INT8")
    if cost.get("latency_vs_float") is not None:
        bits.append(f"×{cost['latency_vs_float']:.2f} vs float")
    return "; ".join(bits)


def render_summary(console: "Console", results: list[TargetReport]) -> None:
    """One row per target: the verdict, size, host latency and, for skips and errors, the reason."""
    from rich.markup import escape
    from rich.table import Table

    colour = STATUS_COLOUR
    t = Table(title="summary", title_justify="left")
    for col in ("target", "verdict", "size MB", "host p50 ms", "reason"):
        t.add_column(col, overflow="fold", no_wrap=col in ("target", "verdict"))
    for r in results:
        size = f"{r.size_bytes / 2**20:.3f}" if r.size_bytes else "—"
        lat = f"{r.latency.p50_ms:.3f}" if r.latency else "—"
        why = r.reason or ", ".join(c.name + (f" (needs ≥ {c.samples_needed} samples)" if c.inconclusive else "")
                                    for c in r.checks if not c.passed)
        t.add_row(escape(r.target), f"[{colour[r.status]}]{r.status.upper()}[/]", size, lat, escape(why or ""))
    console.print(t)

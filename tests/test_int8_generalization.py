"""benchmarks/int8_generalization.py: the harness works and its figures are sane (whether edgepack beats the by-hand
recipes is measured by the benchmark, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import int8_generalization as ig  # noqa: E402


def _row(ep_agr, bh_agr, status="failed"):
    return {"edgepack": {"status": status, "top1_agreement": ep_agr, "accuracy_drop": 0.0},
            "byhand": {"best": "a", "recipes": {"a": {"top1_agreement": bh_agr, "accuracy_drop": 0.01},
                                                "b": {"error": "x"}}},
            "latency_p50_ms": {"fp32": 1.0, "edgepack": 0.5, "byhand": 2.0},
            "size_bytes": {"fp32": 100, "edgepack": 30, "byhand": 40}}


def test_summary_distributions_and_worse_list():
    results = [{"model": f"m-{i}", "backends": {"ort": _row(e, b)}}
               for i, (e, b) in enumerate([(0.99, 0.98), (0.95, 0.97), (0.97, 0.97)])]
    results.append({"model": "m-3", "backends": {"ort": {**_row(None, 0.9, "error"), "edgepack": {"status": "error"}}}})
    s = ig.summarize(results)["ort"]
    assert s["models"] == 4 and s["edgepack_status"] == {"failed": 3, "error": 1}
    d = s["edgepack_minus_byhand_pt"]
    assert d["n"] == 3 and d["min"] == pytest.approx(-2.0) and d["median"] == pytest.approx(0.0)
    assert d["mean"] == pytest.approx((1.0 - 2.0 + 0.0) / 3)
    assert s["worse_by_more_than_0.5pt"] == ["m-1 (-2.00)"]
    assert s["byhand_agreement_pct"]["n"] == 4 and s["edgepack_agreement_pct"]["n"] == 3
    assert s["edgepack_size_vs_fp32"]["median"] == pytest.approx(0.3)
    assert s["byhand_latency_vs_fp32"]["mean"] == pytest.approx(2.0)
    md = ig.markdown({"t": results}, {"t": ig.summarize(results)})
    assert "| ort | error 1, failed 3 |" in md and "m-1 (-2.00)" in md


def test_claim_is_exclusive_and_survives_a_dead_owner(tmp_path):
    lock = tmp_path / "locks" / "m.lock"
    with ig.claimed(lock) as mine:
        assert mine and lock.read_text() == str(os.getpid())
        with ig.claimed(lock) as again:
            assert not again  # held by a live process
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # left behind by a process that is gone
    with ig.claimed(lock) as mine:
        assert mine


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    for mod in ("torch", "onnxruntime", "openvino", "nncf", "onnxscript"):
        pytest.importorskip(mod)
    work, out = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("out")
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "int8_generalization.py"), "--fast",
                             "--work", str(work), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        stdout, stderr = proc.communicate(timeout=3600)  # a guard: ~2-3 min on an idle 2-core host
    finally:
        if proc.poll() is None:
            proc.terminate()  # the harness ends the model in flight and its edgepack build
            proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    return work, out, stdout


def check_result(r: dict, backends) -> None:
    """The sanity of one model's result file (also usable on a full run's files)."""
    assert set(r["backends"]) == set(backends)
    assert r["build"]["exit_code"] in (0, 1), r["build"]  # every target built (pass or fail), none refused
    for b, row in r["backends"].items():
        ep, bh = row["edgepack"], row["byhand"]
        assert ep["status"] in ("passed", "failed"), (r["model"], b, ep)
        assert len(bh["recipes"]) == {"ort": 6, "trt": 6, "openvino": 4, "tflite": 2}[b]
        ok = {k: v for k, v in bh["recipes"].items() if "top1_agreement" in v}
        assert ok, bh  # at least one by-hand recipe ran
        best = ok[bh["best"]]
        assert all(best["top1_agreement"] >= v["top1_agreement"] for v in ok.values())
        for f in (ep, *ok.values()):
            # INT8 of a low-margin model: close to FP32, never identical on every sample of every model
            assert 0.5 < f["top1_agreement"] <= 1.0 and 0.9 < f["cosine"] <= 1.0 + 1e-9
            if r["family"] != "dethead":
                assert abs(f["accuracy_drop"]) < 0.2
        sizes, lat = row["size_bytes"], row["latency_p50_ms"]
        assert set(sizes) == set(lat) == {"fp32", "edgepack", "byhand"}
        assert sizes["edgepack"] < 1.5 * sizes["fp32"]
        if b != "openvino":  # an NNCF-quantized IR saved by hand keeps float weights beside its FakeQuantize ops
            assert sizes["byhand"] < sizes["fp32"]
        assert all(0 < v < 1000 for v in lat.values())


@pytest.mark.slow
@pytest.mark.sweep  # ~7+ min: three edgepack builds × two backends and their by-hand grids
def test_fast_run_measures_both_sides_sanely(fast_run):
    work, out, stdout = fast_run
    per_model = sorted((work / "fast").glob("*.json"))
    assert [p.stem for p in per_model] == sorted(ig.FAST_MODELS)
    for p in per_model:
        check_result(json.loads(p.read_text()), ig.FAST_BACKENDS)
    assert any(row["byhand"]["recipes"][row["byhand"]["best"]]["top1_agreement"] < 1.0
               for p in per_model for row in json.loads(p.read_text())["backends"].values())
    summary = json.loads((out / "int8_generalization.json").read_text())["summaries"]["fast"]
    for b in ig.FAST_BACKENDS:
        assert summary[b]["edgepack_minus_byhand_pt"]["n"] == len(ig.FAST_MODELS)
    md = (out / "int8_generalization.md").read_text()
    assert f"## Run `fast` — {len(ig.FAST_MODELS)} models" in md and "--label after" in md
    assert "edgepack − by hand" in stdout
    # resumable: a second run finds every model done and only re-aggregates
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "int8_generalization.py"), "--fast",
                            "--work", str(work), "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert again.returncode == 0 and f"{len(per_model)} of {len(per_model)} models done; running 0" in again.stdout


def test_before_after_comparison_on_common_models():
    before = [{"model": f"m-{i}", "backends": {"ort": _row(0.95, 0.97)}} for i in range(3)]
    after = [{"model": f"m-{i}", "backends": {"ort": _row(0.98, 0.97)}} for i in range(2)]
    runs = {"before": before, "after": after}
    lines = ig.compare({k: ig.summarize(v) for k, v in runs.items()}, runs)
    assert lines[0].startswith("## `before` → `after` (the 2 models both runs hold)")
    row = next(x for x in lines if x.startswith("| ort |"))
    assert "95.00 / 95.00 / 95.00 / 95.00 (n=2)" in row and "98.00 / 98.00 / 98.00 / 98.00 (n=2)" in row
    assert row.endswith("| 2 → 0 |")

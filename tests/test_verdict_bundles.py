"""Verdict states on real bundles (issue 19), judged by `edgepack check` on the host and by the bundle's own
`run_bundle.py` alike: an unlabelled 7-class `logits` output (inferred as class scores from its name and its final
Gemm) whose top-1 decisions flip on 5 % of samples at a small relative error is caught; correct bundles over 20 seeds
of data pass; a holdout too small for the budget is INCONCLUSIVE (exit 1) everywhere, and PASSes with --judge point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgepack.bundle import FileEntry, read_manifest
from edgepack.feeds import save_npz, sha256_file
from tinymodels import make_tiny_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[1]
TARGET = "android-ort-fp16"  # min_top1_agreement 0.98 (189 samples to prove), min_cosine 0.999, no max_abs_error


def _resign(bundle: Path) -> None:
    """Re-sign every file entry of the manifest, as a forger would: integrity passes, only parity can tell."""
    m = read_manifest(bundle)
    files = [FileEntry(path=e.path, size=(bundle / e.path).stat().st_size, sha256=sha256_file(bundle / e.path))
             for e in m.files]
    (bundle / "manifest.json").write_text(m.model_copy(update={"files": files}).to_json())


def _flip(logits: np.ndarray, k: int) -> np.ndarray:
    """Top-1 and top-2 values swapped in the k samples with the smallest margin between them."""
    got = logits.copy()
    order = np.argsort(logits, axis=1)
    top, second = order[:, -1], order[:, -2]
    rows = np.arange(len(logits))
    for i in np.argsort(logits[rows, top] - logits[rows, second])[:k]:
        got[i, top[i]], got[i, second[i]] = logits[i, second[i]], logits[i, top[i]]
    return got


def _runner(bundle: Path) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), "--repeats", "1", "--warmup", "0"],
                         capture_output=True, text=True, timeout=300, cwd="/")
    assert res.stdout.strip(), res.stderr[-2000:]
    return res.returncode, json.loads(res.stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from typer.testing import CliRunner

    from edgepack.cli import app

    root = tmp_path_factory.mktemp("verdicts")
    model = make_tiny_onnx(root / "tiny7.onnx", classes=7, width=16)
    recipe = (REPO / "calibration" / "digits.toml").read_text()
    assert "holdout = 400" in recipe
    (root / "small.toml").write_text(recipe.replace("holdout = 400", "holdout = 100").replace('name = "digits"',
                                                                                             'name = "digits-small"'))
    profile = (REPO / "targets" / f"{TARGET}.toml").read_text()
    assert "\n[budgets]" in profile
    (root / "capped.toml").write_text(profile.replace("\n[budgets]", "\ngolden_max_mb = 0.05\n\n[budgets]", 1))
    runs = {}
    for key, extra in {"ok": ["-t", TARGET, "-c", "digits"], "small": ["-t", TARGET, "-c", str(root / "small.toml")],
                       "point": ["-t", TARGET, "-c", str(root / "small.toml"), "--judge", "point"],
                       "capped": ["-t", str(root / "capped.toml"), "-c", "digits"]}.items():
        res = CliRunner().invoke(app, ["build", str(model), "--out", str(root / key), "--junit",
                                       str(root / f"{key}.xml"), *extra], catch_exceptions=False)
        name = "capped" if key == "capped" else TARGET
        runs[key] = (res.exit_code, res.stdout + res.stderr, root / key / "tiny7" / name)
    return root, model, runs


def test_logits_are_judged_as_class_scores_with_the_evidence_named(built):
    _, _, runs = built
    code, out, bundle = runs["ok"]
    assert code == 0, out
    rep = json.loads((bundle / "report.json").read_text())
    kind = rep["parity"]["kinds"]["logits"]
    assert kind["kind"] == "scores" and "'logits'" in kind["how"] and "Gemm" in kind["how"], kind
    rows = {c["name"]: c for c in rep["checks"]}
    assert rows["parity.min_top1_agreement[logits]"]["passed"]
    # the digits labels (0-9) do not fit 7 classes: the accuracy budget is shown, not applied, with why
    drop = rows["parity.max_accuracy_drop[logits]"]
    assert drop["applied"] is False and "labels do not match" in drop["note"] and "not applied" in out


def test_flipped_top1_decisions_at_small_relative_error_are_caught_on_host_and_by_the_runner(built, tmp_path, cli):
    _, _, runs = built
    bundle = tmp_path / "flipped"
    shutil.copytree(runs["ok"][2], bundle)
    golden = dict(np.load(bundle / "golden" / "outputs.npz"))
    n = len(golden["logits"])
    golden["logits"] = _flip(golden["logits"], n // 20).astype(np.float32)  # 5 % of the decisions
    save_npz(bundle / "golden" / "outputs.npz", golden)
    _resign(bundle)
    res = cli("check", bundle)
    assert res.exit_code == 1, res.stdout
    rep = json.loads((bundle / "report.json").read_text())
    m = rep["parity"]["metrics"]["logits"]
    assert m["rel_error_p99"] < 0.05 and m["top1_agreement"] <= 0.96  # judged as `other`, it would have passed
    host = {c["name"] for c in rep["checks"] if not c["passed"]}
    assert host == {"parity.min_top1_agreement[logits]"}, host
    code, dev = _runner(bundle)
    assert code == 1 and dev["verdict"] == "failed"
    assert {c["name"] for c in dev["parity"]["checks"] if not c["passed"]} == host
    assert dev["parity"]["metrics"]["logits"]["top1_agreement"] == m["top1_agreement"]


@pytest.mark.slow  # ~50 s: 20 host checks and 20 runner processes
def test_correct_bundles_pass_over_20_seeds_of_data(built, tmp_path):
    """No false alarm: 20 copies of the correct bundle, each with other (noisy digits) inputs and the reference
    model's outputs on them, pass on the host and in the bundle runner."""
    import onnxruntime as ort

    from edgepack import pipeline

    _, model, runs = built
    good = runs["ok"][2]
    base = np.load(good / "golden" / "inputs.npz")["input"]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    alarms = []
    for seed in range(20):
        x = (base + np.random.default_rng(seed).normal(0, 0.1, base.shape)).astype(np.float32)
        y = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        b = tmp_path / f"seed{seed}"
        shutil.copytree(good, b)
        save_npz(b / "golden" / "inputs.npz", {"input": x})
        save_npz(b / "golden" / "outputs.npz", {"logits": y})
        _resign(b)
        code, dev = _runner(b)
        host = pipeline.check(b)
        if code != 0 or dev["verdict"] != "passed" or host.status != "passed":
            alarms.append((seed, code, dev.get("verdict"), host.status,
                           [c.name for c in host.checks if not c.passed]))
    assert not alarms, alarms


def test_too_small_a_holdout_is_inconclusive_everywhere_and_passes_with_judge_point(built, cli):
    root, _, runs = built
    code, out, bundle = runs["small"]
    assert code == 1, out
    assert "INCONCLUSIVE" in out and "needs ≥ 189 samples" in out and "inconclusive:" in out
    rep = json.loads((bundle / "report.json").read_text())
    assert rep["status"] == "inconclusive" and rep["parity"]["verdict"] == "inconclusive"
    [row] = [c for c in rep["checks"] if c["inconclusive"]]
    assert row["name"] == "parity.min_top1_agreement[logits]" and row["samples_needed"] == 189
    build = json.loads((root / "small" / "tiny7" / "build-report.json").read_text())
    assert build["passed"] is False and build["targets"][0]["status"] == "inconclusive"
    fail = ET.parse(root / "small.xml").getroot().find(".//failure")
    assert fail is not None and fail.get("type") == "INCONCLUSIVE"
    manifest = read_manifest(bundle)
    assert manifest.verdict == "inconclusive" and manifest.limits.judge == "evidence"
    assert not (root / "small" / "tiny7" / f"{TARGET}.zip").exists()
    res = cli("verify", bundle)
    assert res.exit_code == 1 and "inconclusive" in res.stdout + res.stderr
    assert cli("verify", bundle, "--allow-failed").exit_code == 0
    code, dev = _runner(bundle)
    assert code == 1 and dev["verdict"] == "inconclusive" and dev["passed"] is False
    assert [c["samples_needed"] for c in dev["parity"]["checks"] if c["inconclusive"]] == [189]
    # the explicit opt-out: the same holdout judged on the point estimate passes, and the manifest says so
    code, out, bundle = runs["point"]
    assert code == 0, out
    assert read_manifest(bundle).limits.judge == "point" and read_manifest(bundle).verdict == "passed"
    assert _runner(bundle)[0] == 0


def test_a_golden_subset_too_small_for_the_budget_is_named_at_build_time(built):
    """The host judged 400 holdout samples (PASS); golden/ keeps only what fits golden_max_mb, too few for the
    0.98 budget: the build says so, and the bundle runner (which judges golden/) is INCONCLUSIVE, not a PASS."""
    _, _, runs = built
    code, out, bundle = runs["capped"]
    assert code == 0, out
    rep = json.loads((bundle / "report.json").read_text())
    assert rep["status"] == "passed" and rep["parity"]["samples"] == 400
    assert any("fewer than the 189 a rate budget needs" in w for w in rep["warnings"]), rep["warnings"]
    code, dev = _runner(bundle)
    assert code == 1 and dev["verdict"] == "inconclusive" and dev["parity"]["samples"] < 189

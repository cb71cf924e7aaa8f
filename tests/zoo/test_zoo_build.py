"""`edgepack zoo build` with the local executor and a folder cache, on real (tiny) ONNX Runtime cells: the cache
is taken only after verify, a tampered entry is rebuilt, changing one model rebuilds only its cells; `zoo merge`
and `zoo report` over per-cell CI outputs; the HTML dashboard in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from zoohelpers import make_zoo
from tinymodels import make_tiny_onnx

from edgepack.zoo import cells, spec
from edgepack.zoo.cache import Cache


def _records(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["id"]: json.loads(p.read_text()) for p in (out / "cells").glob("*/*.json")}


def test_cache_hits_verify_and_rebuild_only_what_changed(tmp_path, cli):
    zoo_file = make_zoo(tmp_path / "zoo")
    cache, out = tmp_path / "cache", tmp_path / "out"
    r = cli("zoo", "build", zoo_file, "--cache", cache, "--out", out)
    assert r.exit_code == 0, r.output
    first = _records(out)
    assert {k: v["verdict"] for k, v in first.items()} == {"alpha/fast-ort": "passed", "beta/fast-ort": "passed"}
    assert {v["cache"] for v in first.values()} == {"built"}
    for rec in first.values():  # the per-cell costs the scale-out estimates are made from
        assert 0 < rec["cpu_seconds"] < 600 and 50 < rec["peak_rss_mb"] < 16384 and rec["seconds"] > 0
    for rec in first.values():  # the bundle landed in OUT and verifies
        assert cli("verify", out / rec["bundle"]).exit_code == 0
    assert len(Cache(str(cache)).keys()) == 2

    r = cli("zoo", "build", zoo_file, "--cache", cache, "--out", out)  # unchanged: every cell from the cache
    assert r.exit_code == 0, r.output
    assert {v["cache"] for v in _records(out).values()} == {"hit"}
    assert "cache hit" in r.output

    # tamper with alpha's cached model: verify fails on it, so it is rebuilt (and said so); beta still a hit
    key = {c.id: c.key for c in cells.plan(spec.load(zoo_file)).cells}["alpha/fast-ort"]
    obj = json.loads((cache / "keys" / f"{key}.json").read_text())["object"]
    model = cache / obj / "fast-ort" / "model.ort"
    model.write_bytes(model.read_bytes()[:-8] + b"tampered")
    r = cli("zoo", "build", zoo_file, "--cache", cache, "--out", out)
    assert r.exit_code == 0, r.output
    third = _records(out)
    assert third["alpha/fast-ort"]["cache"] == "rebuilt" and third["beta/fast-ort"]["cache"] == "hit"
    assert "failed verify" in third["alpha/fast-ort"]["notes"][0]
    assert "failed verify" in r.output
    assert cli("verify", out / "alpha" / "fast-ort").exit_code == 0  # the rebuilt bundle, not the tampered one

    # new weights for beta: only beta's cell is rebuilt
    make_tiny_onnx(zoo_file.parent / "beta.onnx", seed=5)
    r = cli("zoo", "build", zoo_file, "--cache", cache, "--out", out)
    assert r.exit_code == 0, r.output
    fourth = _records(out)
    assert fourth["alpha/fast-ort"]["cache"] == "hit" and fourth["beta/fast-ort"]["cache"] == "built"
    assert fourth["beta/fast-ort"]["key"] != third["beta/fast-ort"]["key"]
    assert len(Cache(str(cache)).keys()) == 3  # alpha, old beta (kept: another branch may still want it), new beta


@pytest.mark.slow
def test_exit_code_is_the_worst_verdict_and_a_fail_has_its_bundle(tmp_path, cli):
    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0}, targets='["fast-ort.toml", "tight.toml"]',
                        extra_profiles={"tight": ""})
    tight = zoo_file.parent / "tight.toml"
    tight.write_text(tight.read_text().replace("max_size_mb = 50", "max_size_mb = 0.001"))
    r = cli("zoo", "build", zoo_file, "--out", tmp_path / "out")
    assert r.exit_code == 1, r.output
    recs = _records(tmp_path / "out")
    assert recs["alpha/tight"]["verdict"] == "failed" and "size_mb" in recs["alpha/tight"]["failed_checks"]
    assert recs["alpha/fast-ort"]["verdict"] == "passed"
    md = (tmp_path / "out" / "zoo-report.md").read_text()
    assert "| alpha | tight | FAILED |" in md and "[report](alpha/tight/report.json)" in md

    # per-model budget overrides (a model config's [budgets] keys) are the build's budgets=: they decide the verdict
    zoo_file.write_text(zoo_file.read_text() + "[model.budgets]\nsize_mb = 0.001\n")
    r = cli("zoo", "build", zoo_file, "--cell", "alpha/fast-ort", "--out", tmp_path / "out2")
    rec = _records(tmp_path / "out2")["alpha/fast-ort"]
    assert r.exit_code == 1 and rec["verdict"] == "failed" and "size_mb" in rec["failed_checks"]

def test_ci_cells_merge_into_one_dashboard_rendered_in_headless_chromium(tmp_path, cli):
    zoo_file = make_zoo(tmp_path / "zoo")
    jobs = []
    for cell in ("alpha/fast-ort", "beta/fast-ort"):  # one CI job per cell
        job = tmp_path / "jobs" / cell.replace("/", "-")
        r = cli("zoo", "build", zoo_file, "--cell", cell, "--out", job)
        assert r.exit_code == 0, r.output
        assert list(_records(job)) == [cell]
        jobs.append(job)
    merged = tmp_path / "merged"
    r = cli("zoo", "merge", *jobs, "--out", merged)
    assert r.exit_code == 0, r.output
    assert set(_records(merged)) == {"alpha/fast-ort", "beta/fast-ort"}
    assert (merged / "beta" / "fast-ort" / "report.json").is_file()
    assert cli("zoo", "merge", jobs[0], jobs[0], "--out", tmp_path / "twice").exit_code == 2  # same cell twice
    page = merged / "zoo-report.html"
    html = page.read_text()
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained
    assert html.count('data-verdict="passed"') == 2 and 'href="alpha/fast-ort/report.json"' in html

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    Image = pytest.importorskip("PIL.Image")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=900,600", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    green = (np.abs(img - np.array([0x2E, 0x7D, 0x32])).sum(-1) <= 30)  # the PASSED cells' colour
    assert green.sum() > 2 * 1500, int(green.sum())  # two coloured grid cells were drawn
    red = (np.abs(img - np.array([0xC6, 0x28, 0x28])).sum(-1) <= 30)
    assert red.sum() == 0

"""The INT8 accuracy search inside a real build (fake INT8 backend, no ML framework): the tuning split reaches the
backend with the reference outputs, the holdout never does, and the report carries the search and its rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes.int8.convert import row_digest

from edgepack import pipeline


def _int8(profile, name: str, extra: str = ""):
    p = profile(name, "fake_int8", extra)
    p.write_text(p.read_text().replace('precision = "fp32"', 'precision = "int8"'))
    return p


def _holdout_digests(out, model: str) -> set[str]:
    with np.load(out / model / "holdout" / "inputs.npz") as z:
        return {row_digest(r) for r in z["input"]}


def test_search_runs_on_the_tuning_split_never_the_holdout(fake_model, profile, tmp_path):
    p = _int8(profile, "int8", "[budgets.parity]\nmin_top1_agreement = 0.98\n")
    [r] = pipeline.build(str(fake_model), [str(p)], out=tmp_path / "dist")
    s = r.artifact["accuracy_search"]
    seen = r.artifact["seen"]
    held = _holdout_digests(tmp_path / "dist", fake_model.stem)
    assert len(seen["tuning"]) == r.calibration["tuning_samples"] > 0
    assert not set(seen["tuning"]) & held and not set(seen["calibration"]) & held  # the holdout never reached it
    assert not set(seen["tuning"]) & set(seen["calibration"])
    assert r.artifact["tuning_reference_max_diff"] == 0.0  # it compared with the reference model's own outputs
    assert s["trials"][0]["recipe"] == "plain" and "tuning" in s["split"]
    assert r.parity.samples == 400  # the verdict is on the holdout
    if s["searched"]:
        rows = {c.name: c for c in r.checks}
        assert rows["accuracy_search.met_budget_on_tuning"].passed == s["met_budget_on_tuning"]


def test_coarse_plain_recipe_is_rescued_and_the_holdout_verdict_passes(fake_model, profile, tmp_path, cli):
    # step 0.4: rescued with 2 of the 8 blocks in float (at 0.6 only all 8 in float met the budget: no INT8 left,
    # which the search no longer offers)
    p = _int8(profile, "coarse", "[options]\nstep = 0.4\n[budgets.parity]\nmin_top1_agreement = 0.98\n")
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "dist")
    assert res.exit_code == 0, res.output
    [r] = json.loads((tmp_path / "dist" / fake_model.stem / "build-report.json").read_text())["targets"]
    s = r["artifact"]["accuracy_search"]
    assert not s["trials"][0]["passed"], "the plain grid should miss the budget for this test to mean anything"
    assert s["searched"] and s["met_budget_on_tuning"]
    assert s["chosen"]["recipe"] != "plain" or s["chosen"]["float_layers"]
    assert 0 < len(s["chosen"]["float_layers"]) < 8
    assert s["chosen"]["tuning"]["passed"] and s["sensitivity"]["layers"]
    assert r["status"] == "passed" and r["parity"]["metrics"]["logits"]["top1_agreement"] >= 0.98


def test_float_fallback_never_puts_every_layer_back_in_float(fake_model, profile, tmp_path, cli):
    """A grid so coarse that only the float model meets the budget (all 8 blocks back in float): the fallback is
    capped at 7 of 8, and the build FAILS naming its best recipe with its tuning figures (not a float 'INT8' build)."""
    p = _int8(profile, "all-float", "[options]\nstep = 0.6\n[budgets.parity]\nmin_top1_agreement = 0.98\n")
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "dist")
    assert res.exit_code == 1, res.output
    [r] = json.loads((tmp_path / "dist" / fake_model.stem / "build-report.json").read_text())["targets"]
    s = r["artifact"]["accuracy_search"]
    assert s["searched"] and not s["met_budget_on_tuning"]
    assert max(len(t["float_layers"]) for t in s["trials"]) == 7 and len(s["chosen"]["float_layers"]) <= 7
    row = next(c for c in r["checks"] if c["name"] == "accuracy_search.met_budget_on_tuning")
    assert not row["passed"] and f"best: recipe '{s['chosen']['recipe']}'" in row["note"]
    assert "one at least stays INT8" in row["note"] and "parity.min_top1_agreement[logits]" in row["note"]


def test_unmeetable_budget_fails_the_build_naming_the_best_recipe(fake_model, profile, tmp_path, cli):
    p = _int8(profile, "strict", "[options]\nstep = 0.6\n[options.accuracy_search]\nmax_float_layers = 1\n"
              "recipes = []\n[budgets.parity]\nmin_top1_agreement = 1.0\nmin_cosine = 0.9999999\n")
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "dist")
    assert res.exit_code == 1, res.output
    [r] = json.loads((tmp_path / "dist" / fake_model.stem / "build-report.json").read_text())["targets"]
    row = next(c for c in r["checks"] if c["name"] == "accuracy_search.met_budget_on_tuning")
    assert not row["passed"] and "best: recipe 'plain'" in row["note"]
    assert r["artifact"]["accuracy_search"]["sensitivity"]["layers"]  # every layer's error is in the report


def test_search_off_builds_the_plain_recipe_only(fake_model, profile, tmp_path):
    p = _int8(profile, "off", "[options]\nstep = 0.6\n[options.accuracy_search]\nenabled = false\n")
    [r] = pipeline.build(str(fake_model), [str(p)], out=tmp_path / "dist")
    assert r.artifact["seen"]["tuning"] == []  # no tuning split was passed (tunes_on_data is false)
    assert [t["recipe"] for t in r.artifact["accuracy_search"]["trials"]] == ["plain"]


def test_int8_speed_budget_not_measured_fails(fake_model, profile, tmp_path):
    p = _int8(profile, "speed", "[budgets]\nmax_int8_latency_ratio = 0.8\n")
    [r] = pipeline.build(str(fake_model), [str(p)], out=tmp_path / "dist")
    row = next(c for c in r.checks if c.name == "int8_latency_ratio")
    assert not row.passed and "not measured" in row.note  # the fake has no float timer: never a silent pass


@pytest.mark.parametrize("bad", ["[options.accuracy_search]\nmax_float_layers = -1\n",
                                 "[options.accuracy_search]\nsensitivity = \"magic\"\n",
                                 "[options.accuracy_search]\nunknown = 1\n"])
def test_bad_search_options_are_refused(bad, fake_model, profile, tmp_path, cli):
    p = _int8(profile, "bad", bad)
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "dist")
    assert res.exit_code == 2 and "accuracy_search" in res.output


def test_separate_holdout_set_judges_the_build(fake_model, profile, tmp_path, cli):
    """--holdout: all of it is the holdout; the calibration source gives calibration + tuning only."""
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "cal.npz", input=rng.standard_normal((300, 1, 32, 32)).astype(np.float32))
    np.savez(tmp_path / "hold.npz", input=rng.standard_normal((57, 1, 32, 32)).astype(np.float32),
             labels=np.arange(57) % 10)
    p = _int8(profile, "sep", "[options]\nstep = 0.05\n")
    res = cli("build", fake_model, "-t", p, "-c", tmp_path / "cal.npz", "--holdout", tmp_path / "hold.npz",
              "--out", tmp_path / "dist")
    assert res.exit_code in (0, 1), res.output
    [r] = json.loads((tmp_path / "dist" / fake_model.stem / "build-report.json").read_text())["targets"]
    assert r["parity"]["samples"] == 57 and r["calibration"]["holdout_origin"].endswith("hold.npz")
    assert r["calibration"]["calibration_samples"] == r["calibration"]["tuning_samples"] == 300  # all of it
    held = _holdout_digests(tmp_path / "dist", fake_model.stem)
    assert not set(r["artifact"]["seen"]["tuning"]) & held
    assert cli("build", fake_model, "-t", p, "--holdout", tmp_path / "hold.npz",
               "--out", tmp_path / "d2").exit_code == 2  # --holdout without --calibration is refused


def test_too_few_tuning_samples_warn(fake_model, profile, tmp_path):
    np.savez(tmp_path / "small.npz", input=np.random.default_rng(0).standard_normal((40, 1, 32, 32)).astype(
        np.float32))
    p = _int8(profile, "few", "[options]\nstep = 0.05\n")
    [r] = pipeline.build(str(fake_model), [str(p)], calibration=str(tmp_path / "small.npz"), out=tmp_path / "dist")
    assert r.calibration["tuning_samples"] == 20  # the 20 non-holdout samples, shared with calibration
    assert any("20 tuning samples, fewer than the profile's minimum 64" in w for w in r.warnings)
    # a 20-sample holdout cannot show a rate budget: the notes say what more data would buy
    more = next(n for n in r.notes if n.startswith("more data would make the verdict mean more"))
    assert "this holdout has 20" in more and "samples of data in all" in more and "had 40" in more

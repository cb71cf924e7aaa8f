"""Budgets that belong to the app: --budget, the model config's [budgets], pipeline.build(budgets=...), each
recorded with its source in the report and the manifest."""

from __future__ import annotations

import json

import pytest

from edgepack import bundle as bundles
from edgepack import pipeline
from edgepack.errors import ConfigError

TIGHT = "[budgets]\nmax_size_mb = 0.000001\n"  # every bundle is larger than one byte: the profile's limit fails


def _report(out, model="linear"):
    return json.loads((out / model / "build-report.json").read_text())["targets"][0]


def test_a_profile_limit_that_fails_passes_with_a_command_line_budget(fake_model, profile, tmp_path, cli):
    p = profile("tight", extra=TIGHT)
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "a")
    assert res.exit_code == 1 and "size_mb" in res.stdout
    assert _report(tmp_path / "a")["budgets"]["max_size_mb"] == {"value": 1e-06, "source": "profile tight"}

    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "b", "--budget", "size_mb=10",
              "--budget", "parity.min_cosine=0.99")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "budget max_size_mb = 10 (from command line)" in res.stdout
    r = _report(tmp_path / "b")
    assert r["status"] == "passed"
    assert r["budgets"]["max_size_mb"] == {"value": 10.0, "source": "command line"}
    assert r["budgets"]["parity.min_cosine"] == {"value": 0.99, "source": "command line"}
    size_row = next(c for c in r["checks"] if c["name"] == "size_mb")
    assert size_row["limit"] == 10.0 and size_row["passed"]
    manifest = bundles.read_manifest(tmp_path / "b" / "linear" / "tight")
    assert manifest.budgets["max_size_mb"].source == "command line"
    assert manifest.target.budgets.max_size_mb == 10.0


def test_the_model_config_sets_budgets_and_the_command_line_wins(fake_model, profile, tmp_path, cli):
    p = profile("tight", extra=TIGHT)
    cfg = tmp_path / "model.toml"
    cfg.write_text("[budgets]\nsize_mb = 5\nlatency_p50_ms = 1000\n[budgets.parity]\nmin_cosine = 0.9\n")
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "d", "--model-config", cfg,
              "--budget", "max_latency_p50_ms=2000")
    assert res.exit_code == 0, res.stdout + res.stderr
    b = _report(tmp_path / "d")["budgets"]
    assert b["max_size_mb"] == {"value": 5.0, "source": f"model config {cfg}"}
    assert b["parity.min_cosine"]["source"] == f"model config {cfg}"
    assert b["max_latency_p50_ms"] == {"value": 2000.0, "source": "command line"}


@pytest.mark.parametrize("spec, message", [
    ("size_mbb=3", "unknown budget 'size_mbb'"),
    ("size_mb=-1", "'size_mb' from command line: invalid value"),
    ("parity.min_top1_agreement=1.5", "'parity.min_top1_agreement' from command line: invalid value"),
    ("parity.nope=1", "unknown budget 'parity.nope'"),
    ("size_mb", "cannot parse --budget 'size_mb'"),
])
def test_bad_budgets_are_refused_naming_the_key(spec, message, fake_model, profile, tmp_path, cli):
    res = cli("build", fake_model, "-t", profile("ident"), "--out", tmp_path / "e", "--budget", spec)
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "e" / "linear").exists()


def test_the_api_keyword_takes_a_mapping(fake_model, profile, tmp_path):
    p = profile("tight", extra=TIGHT)
    [r] = pipeline.build(str(fake_model), [str(p)], out=tmp_path / "f",
                         budgets={"size_mb": 10, "parity.min_top1_agreement": 0.5})
    assert r.status == "passed"
    assert r.budgets["max_size_mb"].source == "budgets= argument"
    assert r.budgets["parity.min_top1_agreement"].value == 0.5
    with pytest.raises(ConfigError, match="latency_p50_ms"):
        pipeline.build(str(fake_model), [str(p)], out=tmp_path / "g", budgets={"latency_p50_ms": "fast"})


def test_the_python_api_takes_budgets_over_the_model_config(fake_model, profile, tmp_path):
    """``edgepack.build(budgets=...)`` is the API's --budget: it overrides the model config's [budgets] key by key,
    and each budget is recorded with where it came from."""
    import edgepack

    p = profile("tight", extra=TIGHT)
    cfg = tmp_path / "model.toml"
    cfg.write_text("[budgets]\nsize_mb = 0.000002\nlatency_p50_ms = 1000\n")
    failed = edgepack.build(fake_model, [str(p)], out=tmp_path / "e", model_config=cfg)
    assert failed.reports[0].status == "failed"
    result = edgepack.build(fake_model, [str(p)], out=tmp_path / "f", model_config=cfg, budgets={"max_size_mb": 10})
    assert result.reports[0].status == "passed", result.reports[0].reason
    b = _report(tmp_path / "f")["budgets"]
    assert b["max_size_mb"] == {"value": 10.0, "source": "budgets= argument"}
    assert b["max_latency_p50_ms"] == {"value": 1000.0, "source": f"model config {cfg}"}

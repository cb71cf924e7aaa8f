"""The pipeline, bundle and report with fake backends: no ML framework needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack import bundle as bundles
from edgepack import pipeline
from edgepack.errors import ConfigError
from edgepack.report import TargetReport


def _run_bundle(bundle: str) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, str(Path(bundle) / "run_bundle.py"), "--repeats", "2", "--warmup", "1"],
                         capture_output=True, text=True, cwd="/")
    return out.returncode, json.loads(out.stdout)


def test_build_writes_the_bundle_layout_and_typed_files(fake_model, profile, tmp_path, cli):
    res = cli("build", fake_model, "-t", profile("ident"), "--out", tmp_path / "dist", "--junit", tmp_path / "j.xml")
    assert res.exit_code == 0, res.stdout + res.stderr
    b = tmp_path / "dist" / "linear" / "ident"
    for rel in ("model.npz", "golden/inputs.npz", "golden/outputs.npz", "golden/labels.npz", "labels.txt",
                "run_bundle.py", "runner/device.py", "runner/edgepack_core/metrics.py", "report.json", "manifest.json"):
        assert (b / rel).is_file(), rel
    manifest = bundles.read_manifest(b)
    assert manifest.artifact.backend == "fake_identity" and manifest.golden.samples == 400
    assert manifest.limits.max_abs_error == 1e-6 and manifest.artifact.runtime == {"weights": "model.npz"}
    assert {f.path for f in manifest.files} >= {"runner/device.py", "runner/edgepack_core/metrics.py"}
    report = TargetReport.model_validate_json((b / "report.json").read_text())
    assert report.status == "passed" and report.limits == manifest.limits
    build_report = json.loads((tmp_path / "dist" / "linear" / "build-report.json").read_text())
    assert build_report["passed"] and build_report["targets"][0]["bundle"] == str(b)
    assert cli("verify", b).exit_code == 0
    assert cli("check", b).exit_code == 0
    assert not list((tmp_path / "dist" / "linear").glob(".staging-*"))


def test_a_broken_bundle_fails_with_the_row_named(fake_model, profile, tmp_path, cli):
    p = profile("zeros", "fake_noisy", '[options]\nmode = "zeros"\n')
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "dist", "--junit", tmp_path / "j.xml")
    assert res.exit_code == 1
    assert "parity.min_cosine[logits]" in res.stdout and "FAIL" in res.stdout
    assert 'failures="3"' in (tmp_path / "j.xml").read_text()


@pytest.mark.parametrize("mode", ["noise", "zeros", "constant", "nan", "inf", "shape"])
def test_check_and_the_bundle_runner_agree(mode, fake_model, profile, tmp_path):
    """The host (`edgepack check`) and the bundle's own runner compute identical metrics and verdicts."""
    p = profile(f"noisy-{mode}", "fake_noisy", f'[options]\nmode = "{mode}"\n')
    [built] = pipeline.build(str(fake_model), [str(p)], out=tmp_path / "dist")
    host = pipeline.check(Path(built.bundle))
    code, device = _run_bundle(built.bundle)
    assert code == (0 if host.passed else 1)
    on_disk = json.loads(host.to_json())  # what report.json says (NaN written as null, as the device prints it)
    host_rows = [(c["name"], c["passed"], c["measured"]) for c in on_disk["checks"]
                 if c["name"].startswith(("parity.", "output "))]
    device_rows = [(c["name"], c["passed"], c["measured"]) for c in device["parity"]["checks"]]
    assert host_rows == device_rows and host_rows
    assert on_disk["parity"]["metrics"] == device["parity"]["metrics"]
    assert device["passed"] == host.passed == (mode == "noise")
    json.loads((Path(built.bundle) / "report.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_profiles_naming_different_recipes_need_calibration(fake_model, profile, tmp_path, cli):
    a = profile("a")
    b = profile("b", calibration="digits-nhwc")
    res = cli("build", fake_model, "-t", a, "-t", b, "--out", tmp_path / "dist")
    assert res.exit_code == 2
    assert "targets name different recipes" in res.stderr and "--calibration" in res.stderr
    assert cli("build", fake_model, "-t", a, "-t", b, "-c", "digits", "--out", tmp_path / "dist").exit_code == 0


def test_conversion_crash_leaves_nothing_and_the_next_build_works(fake_model, profile, tmp_path):
    crash = profile("crash", "fake_noisy", '[options]\nmode = "crash"\n')
    [r] = pipeline.build(str(fake_model), [str(crash)], out=tmp_path / "dist")
    assert r.status == "error" and r.stage == "conversion" and r.exit_code == 2
    assert r.reason.startswith("crash conversion crashed the worker process") and "\n" not in r.reason
    model_dir = tmp_path / "dist" / "linear"
    assert sorted(p.name for p in model_dir.iterdir()) == ["holdout"]  # no bundle, no staging
    [ok] = pipeline.build(str(fake_model), [str(profile("ok"))], out=tmp_path / "dist")
    assert ok.passed


def test_one_target_error_does_not_stop_the_others(fake_model, profile, tmp_path, cli):
    """A crash in one target is its ERROR verdict; the others build; report, JUnit and summary cover all; exit 2."""
    crash = profile("crash", "fake_noisy", '[options]\nmode = "crash"\n')
    good, noisy = profile("good"), profile("bad", "fake_noisy", '[options]\nmode = "zeros"\n')
    res = cli("build", fake_model, "-t", crash, "-t", good, "-t", noisy, "-c", "digits", "--out", tmp_path / "dist",
              "--junit", tmp_path / "j.xml")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "error: crash: crash conversion crashed the worker process" in res.stderr
    report = json.loads((tmp_path / "dist" / "linear" / "build-report.json").read_text())
    verdicts = {t["target"]: t["status"] for t in report["targets"]}
    assert verdicts == {"crash": "error", "good": "passed", "bad": "failed"}
    crashed = next(t for t in report["targets"] if t["target"] == "crash")
    assert crashed["stage"] == "conversion" and crashed["hint"]
    assert (tmp_path / "dist" / "linear" / "good" / "manifest.json").is_file()
    junit = (tmp_path / "j.xml").read_text()
    assert junit.count("<testsuite ") == 3 and "<error " in junit and "<failure " in junit
    assert "summary" in res.stdout and "ERROR" in res.stdout
    without = cli("build", fake_model, "-t", good, "-t", noisy, "-c", "digits", "--out", tmp_path / "d2")
    assert without.exit_code == 1  # the worst verdict: a failed check


def test_unknown_option_is_refused_when_the_profile_is_resolved(fake_model, profile, tmp_path):
    bad = profile("bad", "fake_noisy", '[options]\nmoed = "zeros"\n')
    with pytest.raises(ConfigError, match="unknown key 'options.moed'"):
        pipeline.resolve_targets([str(bad)])


def test_a_bundle_runner_never_imports_from_the_bundle_folder(fake_model, profile, tmp_path):
    [built] = pipeline.build(str(fake_model), [str(profile("safe"))], out=tmp_path / "dist")
    canary = tmp_path / "canary"
    (Path(built.bundle) / "numpy.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    code, result = _run_bundle(built.bundle)
    assert not canary.exists()
    assert code == 1 and any("unexpected file: numpy.py" in p for p in result["integrity"]["problems"])


def test_skip_unavailable_reports_a_reason(fake_model, profile, tmp_path, monkeypatch):
    from fakes.identity import IdentityBackend

    monkeypatch.setattr(IdentityBackend, "requires", ("no_such_runtime_xyz",))
    [r] = pipeline.build(str(fake_model), [str(profile("gone"))], out=tmp_path / "dist", skip_unavailable=True)
    assert r.status == "skipped" and "no_such_runtime_xyz" in r.reason

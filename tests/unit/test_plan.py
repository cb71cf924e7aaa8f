"""Plan before work, explicit calibration, a reference that must answer finitely, lean golden/, folder names,
converter messages that lead with their cause (issue 9). Fake source/backends: no ML framework."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes.source import make

from edgepack import pipeline
from edgepack.bundle import read_manifest, verify
from edgepack.errors import ConfigError, InputError, explain


def _ort_reason() -> str:
    """Why ort_mobile cannot build a fake source: its runtime is missing (base-only venv) or it takes ONNX only."""
    from edgepack.backends import registry

    missing = registry.get("ort_mobile").missing()
    return f"not installed: {', '.join(missing)}" if missing else "ort_mobile takes onnx sources, not fake"


def test_plan_refuses_before_any_work(fake_model, profile, tmp_path, cli):
    """A target whose backend cannot take the source is refused by the plan: nothing converted, nothing written."""
    ok = profile("ok")
    onnx_only = tmp_path / "targets" / "ort.toml"
    onnx_only.write_text('backend = "ort_mobile"\nprecision = "fp32"\n')
    res = cli("build", fake_model, "-t", ok, "-t", onnx_only, "-c", "digits", "--out", tmp_path / "dist")
    assert res.exit_code == 2
    assert "1 target cannot build" in res.stderr and f"ort: {_ort_reason()}" in res.stderr
    assert "--skip-unavailable" in res.stderr
    assert not (tmp_path / "dist").exists()  # refused before any conversion or folder

    res = cli("build", fake_model, "-t", ok, "-t", onnx_only, "-c", "digits", "--out", tmp_path / "dist",
              "--skip-unavailable")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "dist" / "linear" / "build-report.json").read_text())
    rows = {t["target"]: t for t in report["targets"]}
    assert rows["ok"]["status"] == "passed"
    assert rows["ort"]["status"] == "skipped" and rows["ort"]["reason"] == _ort_reason()


def test_plan_command_table_and_json(fake_model, profile, tmp_path, cli):
    ok = profile("ok")
    onnx_only = tmp_path / "targets" / "ort.toml"
    onnx_only.write_text('backend = "ort_mobile"\nprecision = "fp32"\n')
    res = cli("plan", fake_model, "-t", ok, "-t", onnx_only, "--skip-unavailable", "--json", tmp_path / "plan.json")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "build" in res.stdout and "skip" in res.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    actions = {r["target"]: (r["action"], r["reason"]) for r in plan["targets"]}
    assert actions == {"ok": ("build", None), "ort": ("skip", _ort_reason())}
    assert plan["source"]["name"] == "linear"
    assert cli("plan", fake_model, "-t", ok, "-t", onnx_only).exit_code == 2  # refusals without the flag


def test_reference_nan_stops_the_build_before_conversion(tmp_path, profile, cli):
    model = make(tmp_path / "broken.fakemodel")
    with np.load(model) as z:
        arrays = dict(z)
    arrays["weight"][3, 0] = np.nan  # output column 3 is NaN for every sample
    with open(model, "wb") as f:
        np.savez(f, **arrays)
    res = cli("build", model, "-t", profile("ok"), "-c", "digits", "--out", tmp_path / "dist")
    assert res.exit_code == 2
    assert "the reference model itself produced NaN/Inf in output 'logits' for 400 of 400" in res.stderr
    assert not [p for p in (tmp_path / "dist").rglob("*") if p.name in ("ok", "manifest.json")]


def test_default_recipe_only_when_it_fits(tmp_path, profile):
    fits = make(tmp_path / "fits.fakemodel")
    [r] = pipeline.build(str(fits), [str(profile("ok"))], out=tmp_path / "dist")
    assert r.passed and r.calibration["defaulted"] is True
    assert any(w.startswith("no --calibration given: used the profiles' default recipe 'digits'") for w in r.warnings)

    rgb = make(tmp_path / "rgb.fakemodel", shape=(1, 3, 64, 64))
    with pytest.raises(ConfigError) as e:
        pipeline.build(str(rgb), [str(profile("ok"))], out=tmp_path / "dist")
    assert "no --calibration given, and the profiles' default recipe 'digits' does not fit" in e.value.message
    assert "input 1x3x64x64 float32" in e.value.hint or "input ?x3x64x64 float32" in e.value.hint


def test_golden_keeps_a_bounded_subset_with_the_worst_samples(fake_model, profile, tmp_path, cli):
    # 1x1x32x32 float32 input (4 KiB) + 10 logits per sample; 0.1 MiB keeps ~25 of 400 samples
    tiny = profile("tiny", "fake_noisy", 'golden_max_mb = 0.1\n[options]\nmode = "noise"\nsigma = 0.001\n')
    [r] = pipeline.build(str(fake_model), [str(tiny)], out=tmp_path / "dist")
    bundle = tmp_path / "dist" / "linear" / "tiny"
    m = read_manifest(bundle)
    assert m.golden.holdout_samples == 400 and m.golden.indices is not None
    assert 20 <= m.golden.samples == len(m.golden.indices) <= 30
    worst = {w["index"] for rows in r.parity.worst_samples.values() for w in rows}
    assert worst <= set(m.golden.indices)
    assert any("golden/ keeps" in n for n in r.notes)
    held = np.load(tmp_path / "dist" / "linear" / "holdout" / "inputs.npz")["input"]
    kept = np.load(bundle / "golden" / "inputs.npz")["input"]
    assert len(held) == 400 and np.array_equal(kept, held[m.golden.indices])
    assert verify(bundle)
    # the build judged 400 samples; golden/ keeps ~25, too few to prove the top-1 row: the build warns, and
    # `edgepack check` (which judges golden/, like the bundle runner) is INCONCLUSIVE, never a PASS
    assert any("a rate budget needs: `edgepack check`" in w for w in r.warnings), r.warnings
    res = cli("check", bundle)
    assert res.exit_code == 1 and ("INCONCLUSIVE" in res.stdout or not r.passed), res.stdout


def test_golden_subset_rule():
    feeds = {"x": np.zeros((100, 256), np.float32)}  # 1 KiB per sample
    out = {"y": np.zeros((100, 0), np.float32)}
    assert pipeline.golden_subset(feeds, out, {}, 200 * 1024) is None  # fits: all kept
    keep = pipeline.golden_subset(feeds, out, {"y": [{"index": 57}]}, 10 * 1024)
    assert len(keep) == 10 and 57 in keep and keep == sorted(keep) and keep[0] == 0


def test_failed_bundle_is_never_archived(fake_model, profile, tmp_path):
    zeros = profile("zeros", "fake_noisy", '[options]\nmode = "zeros"\n')
    good = profile("good")
    results = pipeline.build(str(fake_model), [str(zeros), str(good)], out=tmp_path / "dist", archive=True)
    by = {r.target: r for r in results}
    assert by["zeros"].status == "failed" and by["zeros"].archive is None
    assert not (tmp_path / "dist" / "linear" / "zeros.zip").exists()
    assert by["good"].archive and (tmp_path / "dist" / "linear" / "good.zip").is_file()


def test_name_sets_the_folder_and_is_validated(fake_model, profile, tmp_path, cli):
    res = cli("build", fake_model, "-t", profile("ok"), "-c", "digits", "--out", tmp_path / "dist", "--name", "v2.1")
    assert res.exit_code == 0 and (tmp_path / "dist" / "v2.1" / "ok" / "manifest.json").is_file()
    for bad in ("../up", "", ".hidden", "a/b", "x" * 80):
        res = cli("build", fake_model, "-t", profile("ok"), "-c", "digits", "--out", tmp_path / "d2", "--name", bad)
        assert res.exit_code == 2 and "is not a valid name" in res.stderr, bad


def test_explain_picks_the_cause_not_the_assertion_site():
    ov = ("Check 'false' failed at src/frontends/common/src/frontend.cpp:54:\n"
          "FrontEnd API failed with OpConversionFailure:\n"
          "Model wasn't fully converted. Failed operations detailed log:\n"
          "-- Foo with a message:\nNo conversion rule found for operations: Foo\n")
    assert explain(ov) == "No conversion rule found for operations: Foo"
    tb = 'Traceback (most recent call last):\n  File "x.py", line 3, in f\nValueError: shape mismatch: 3 vs 4\n'
    assert explain(tb) == "ValueError: shape mismatch: 3 vs 4"
    assert explain("") == ""


def test_input_errors_keep_their_details_across_processes():
    import pickle

    e = pickle.loads(pickle.dumps(InputError("m", "h", "full text")))
    assert (e.message, e.hint, e.details) == ("m", "h", "full text")


def test_explain_a_bare_assert_names_the_statement_and_place():
    text = ('AssertionError: \nTraceback (most recent call last):\n  File "/x/isolation.py", line 108, in _call\n'
            '    return fn(*args, **kwargs)\n           ^^^^^^^^^^^^^^^^^^^\n'
            '  File "/site-packages/onnxruntime/transformers/float16.py", line 325, in convert_float_to_float16\n'
            '    assert n.name not in fp32_initializers\n           ^^^^^^^\nAssertionError\n')
    assert explain(text) == ("AssertionError in convert_float_to_float16 (float16.py:325): "
                             "assert n.name not in fp32_initializers")

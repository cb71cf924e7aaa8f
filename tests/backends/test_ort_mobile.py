"""ONNX Runtime Mobile backend: real conversions of tiny models, parity, budgets, check/verify, reports."""

from __future__ import annotations

import importlib.util
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgepack import bundle as bundles
from tinymodels import make_tiny_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TARGETS = ("android-ort-fp32", "android-ort-fp16", "android-ort-int8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny ONNX classifier built for all three ORT targets on the digits recipe (one build run)."""
    from typer.testing import CliRunner

    from edgepack.cli import app

    root = tmp_path_factory.mktemp("ort")
    model = make_tiny_onnx(root / "tiny.onnx", width=48)
    args = ["build", str(model), "--out", str(root / "dist"), "-c", "digits", "--archive",
            "--junit", str(root / "junit.xml")]
    for t in TARGETS:
        args += ["-t", t]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.stdout + res.stderr
    return root, res


@pytest.mark.parametrize("target", TARGETS)
def test_bundle_contents_and_parity(built, target):
    root, _ = built
    b = root / "dist" / "tiny" / target
    assert not (b / "model.onnx").exists(), "an ORT bundle ships the .ort only unless options.ship_onnx"
    for f in ("model.ort", "required_operators.config", "manifest.json", "report.json",
              "run_bundle.py", "golden/inputs.npz", "golden/outputs.npz", "golden/labels.npz", "labels.txt"):
        assert (b / f).is_file(), f
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["artifact"]["inputs"][0] == {"name": "input", "shape": [1, 1, 32, 32], "dtype": "float32",
                                                 "batch_axis": 0, "layout": None, "value": None, "dims": [],
                                                 "state_from": None}
    assert manifest["toolchain"]["onnxruntime"] and manifest["source"]["sha256"]
    assert manifest["target"]["name"] == target and manifest["calibration"]["synthetic"] is False
    paths = {f["path"] for f in manifest["files"]}
    assert "model.ort" in paths and "report.json" not in paths
    report = json.loads((b / "report.json").read_text())
    assert report["status"] == "passed" and report["parity"]["samples"] == 400
    m = report["parity"]["metrics"]["logits"]
    assert m["top1_agreement"] >= 0.98 and m["cosine"] > 0.99
    assert report["latency"]["where"] == "host" and report["latency"]["p50_ms"] > 0
    assert bundles.verify(b)
    assert "ai.onnx" in (b / "required_operators.config").read_text()


def test_sizes_follow_precision(built):
    root, _ = built
    size = {t: (root / "dist" / "tiny" / t / "model.ort").stat().st_size for t in TARGETS}
    assert size["android-ort-fp16"] < 0.75 * size["android-ort-fp32"]
    int8 = json.loads((root / "dist" / "tiny" / "android-ort-int8" / "report.json").read_text())
    assert size["android-ort-int8"] < 0.4 * size["android-ort-fp32"]
    assert int8["artifact"]["quantized_compute_ops"] == int8["artifact"]["compute_ops"] == 3


def test_terminal_table_and_junit(built):
    root, res = built
    assert "android-ort-int8" in res.stdout and "PASSED" in res.stdout and "host latency p50" in res.stdout
    suites = ET.parse(root / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == list(TARGETS)
    assert all(s.get("failures") == "0" for s in suites)
    summary = json.loads((root / "dist" / "tiny" / "build-report.json").read_text())
    assert summary["passed"] and len(summary["targets"]) == 3


def test_verify_detects_flipped_byte_missing_and_extra_file(built, tmp_path, cli):
    root, _ = built
    src = root / "dist" / "tiny" / "android-ort-int8"
    for case in ("flip", "missing", "extra"):
        b = tmp_path / case
        shutil.copytree(src, b)
        assert cli("verify", b).exit_code == 0
        if case == "flip":
            data = bytearray((b / "model.ort").read_bytes())
            data[len(data) // 2] ^= 0x01
            (b / "model.ort").write_bytes(bytes(data))
            expect = "content changed: model.ort"
        elif case == "missing":
            (b / "golden" / "outputs.npz").unlink()
            expect = "missing: golden/outputs.npz"
        else:
            (b / "notes.txt").write_text("hello")
            expect = "unexpected file: notes.txt"
        res = cli("verify", b)
        assert res.exit_code == 1 and expect in res.stdout, res.stdout


def test_check_recomputes_parity_from_golden(built, tmp_path, cli):
    root, _ = built
    b = tmp_path / "b"
    shutil.copytree(root / "dist" / "tiny" / "android-ort-fp32", b)
    (b / "report.json").unlink()
    res = cli("check", b)
    assert res.exit_code == 0, res.stdout
    rep = json.loads((b / "report.json").read_text())
    assert rep["status"] == "passed" and rep["parity"]["metrics"]["logits"]["max_abs_error"] < 1e-4
    # Corrupt the golden outputs (re-signing the manifest so integrity passes): parity must now fail.
    golden = dict(np.load(b / "golden" / "outputs.npz"))
    golden["logits"] = golden["logits"][:, ::-1].copy()
    from edgepack.feeds import save_npz, sha256_file

    save_npz(b / "golden" / "outputs.npz", golden)
    manifest = json.loads((b / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "golden/outputs.npz":
            entry.update(size=(b / entry["path"]).stat().st_size, sha256=sha256_file(b / entry["path"]))
    (b / "manifest.json").write_text(json.dumps(manifest))
    assert bundles.verify(b)
    res = cli("check", b)
    assert res.exit_code == 1 and "FAIL" in res.stdout
    assert json.loads((b / "report.json").read_text())["status"] == "failed"


def test_archive_is_deterministic_and_excludes_report(built, tmp_path):
    import zipfile

    root, _ = built
    b = root / "dist" / "tiny" / "android-ort-fp32"
    a1 = bundles.archive(b, tmp_path / "a1.zip")
    a2 = bundles.archive(b, tmp_path / "a2.zip")
    assert a1.read_bytes() == a2.read_bytes()
    names = zipfile.ZipFile(a1).namelist()
    assert names == sorted(names) and "android-ort-fp32/report.json" not in names
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zipfile.ZipFile(a1).infolist())
    assert (root / "dist" / "tiny" / "android-ort-fp32.zip").is_file()


def test_rebuild_is_byte_identical_including_the_ort_file_and_the_archive(tmp_path, cli):
    """Two builds of the same inputs into folders of different path lengths: every file byte-identical, model.ort
    included (converted in a fresh process without ASLR: see ort_mobile.convert._convert_deterministically), and
    so are the deterministic archives."""
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    digests, archives = [], []
    for out in (tmp_path / "d0", tmp_path / "a-much-longer-output-folder-name" / "d1"):
        res = cli("build", model, "-t", "android-ort-int8", "-c", "digits", "--out", out, "--archive")
        assert res.exit_code == 0, res.stdout
        b = out / "tiny" / "android-ort-int8"
        digests.append({f["path"]: f["sha256"] for f in json.loads((b / "manifest.json").read_text())["files"]})
        archives.append((out / "tiny" / "android-ort-int8.zip").read_bytes())
    differing = {k for k in digests[0] if digests[0][k] != digests[1][k]}
    assert not differing, differing
    assert archives[0] == archives[1]


def test_budget_failure_exits_1_and_names_row(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    prof = tmp_path / "too-small.toml"
    prof.write_text('backend = "ort_mobile"\nprecision = "fp32"\ncalibration = "digits"\n'
                    '[budgets]\nmax_size_mb = 0.001\nmax_latency_p50_ms = 10000\n')
    res = cli("build", model, "-t", prof, "--out", tmp_path / "dist", "--junit", tmp_path / "j.xml")
    assert res.exit_code == 1
    assert "size_mb" in res.stdout and "FAIL" in res.stdout and "too-small" in res.stderr
    rep = json.loads((tmp_path / "dist" / "tiny" / "too-small" / "report.json").read_text())
    failed = [c["name"] for c in rep["checks"] if not c["passed"]]
    assert failed == ["size_mb"]
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("failures") == "1"


def test_dynamic_batch_model_and_npz_calibration(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "dyn.onnx", dynamic_batch=True, channels=3, size=16, classes=5)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.uniform(-1, 1, (64, 3, 16, 16)).astype(np.float32))
    # the random tiny model's logits on uniform noise are near-ties, not a classifier's decisions: judged as `other`
    # (this test is about the dynamic batch and the splits, not about top-1 agreement)
    res = cli("build", model, "-t", "android-ort-int8", "-c", tmp_path / "calib.npz", "--out", tmp_path / "d",
              "--output", "logits=other")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "d" / "dyn" / "android-ort-int8" / "report.json").read_text())
    cal = rep["calibration"]  # a disjoint holdout; calibration and the search's tuning split share the rest
    assert cal["calibration_samples"] + cal["holdout_samples"] == 64
    assert cal["holdout_samples"] == 32 and cal["tuning_samples"] == 32 and cal["split"]["unused"] == 0


def test_synthetic_calibration_is_flagged(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    prof = tmp_path / "nocal.toml"
    prof.write_text('backend = "ort_mobile"\nprecision = "fp32"\n')
    res = cli("build", model, "-t", prof, "--out", tmp_path / "d")
    assert res.exit_code == 2 and "no calibration data" in res.stderr
    res = cli("build", model, "-t", prof, "--out", tmp_path / "d", "--synthetic-calibration")
    # 64 random holdout samples cannot prove the fp32 row's 99 % top-1 agreement (381 needed): INCONCLUSIVE, exit 1
    assert res.exit_code == 1 and "SYNTHETIC" in res.stdout and "INCONCLUSIVE" in res.stdout, res.stdout
    rep = json.loads((tmp_path / "d" / "tiny" / "nocal" / "report.json").read_text())
    assert rep["calibration"]["synthetic"] is True and "SYNTHETIC" in rep["warnings"][0]
    assert rep["status"] == "inconclusive" and rep["parity"]["samples"] == 64


def test_int8_that_quantizes_nothing_fails(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    prof = tmp_path / "noquant.toml"
    prof.write_text('backend = "ort_mobile"\nprecision = "int8"\ncalibration = "digits"\n'
                    '[options]\nexclude_op_types = ["Conv", "Gemm"]\n')
    res = cli("build", model, "-t", prof, "--out", tmp_path / "d")
    assert res.exit_code == 2 and "no compute op" in res.stderr
    assert not (tmp_path / "d" / "tiny" / "noquant").exists()
    assert not [p for p in (tmp_path / "d" / "tiny").iterdir() if p.name.startswith(".staging")]


def test_torch_factory_source_with_weights(trained_digits, tmp_path, cli):
    res = cli("build", "examples/digits.py:make_cnn", "--weights", trained_digits / "cnn.pt",
              "--input", "input=1x1x32x32", "-t", "android-ort-fp32", "-t", "android-ort-int8",
              "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    for t in ("android-ort-fp32", "android-ort-int8"):
        rep = json.loads((tmp_path / "d" / "make_cnn-cnn" / t / "report.json").read_text())
        assert rep["status"] == "passed" and "bridged torch → onnx" in rep["notes"]


def test_digits_int8_keeps_accuracy(trained_digits, tmp_path, cli):
    """Must show: on real holdout data INT8 loses ≤ 1 point of top-1 and agrees ≥ 98 % with FP32."""
    res = cli("build", trained_digits / "cnn.onnx", "-t", "android-ort-fp32", "-t", "android-ort-int8",
              "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout
    reps = {t: json.loads((tmp_path / "d" / "cnn" / t / "report.json").read_text())["parity"]["metrics"]["logits"]
            for t in ("android-ort-fp32", "android-ort-int8")}
    fp32, int8 = reps["android-ort-fp32"], reps["android-ort-int8"]
    assert fp32["bundle_accuracy"] > 0.9, fp32  # a trained model, not noise
    assert fp32["bundle_accuracy"] - int8["bundle_accuracy"] <= 0.01
    assert int8["top1_agreement"] >= 0.98
    print(f"digits holdout: fp32 acc {fp32['bundle_accuracy']:.4f}, int8 acc {int8['bundle_accuracy']:.4f}, "
          f"agreement {int8['top1_agreement']:.4f}")


@pytest.mark.parametrize("target", TARGETS)
def test_shipped_device_loader_matches_host_runner(built, target):
    """The bundle's runner/device.py, loaded by path as run_bundle.py does, gives the host runner's outputs
    bit for bit (the host runner IS that loader)."""
    from edgepack.artifact import Artifact
    from edgepack.backends import registry
    from edgepack.feeds import load_npz, run_batched

    root, _ = built
    b = root / "dist" / "tiny" / target
    art = json.loads((b / "manifest.json").read_text())["artifact"]
    assert art["runtime"]["model"] == "model.ort" and art["runtime"]["providers"] == ["CPUExecutionProvider"]
    spec = importlib.util.spec_from_file_location("ort_device_under_test", b / "runner" / "device.py")
    device = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device)
    infer, facts = device.load(b, art, art["runtime"], 1)
    assert facts["provider"] == "CPUExecutionProvider" and facts["runtime"].startswith("onnxruntime ")
    inputs = load_npz(b / "golden" / "inputs.npz")
    with registry.get("ort_mobile").runner(Artifact.model_validate(art), b, threads=1) as runner:
        host = run_batched(runner.infer, inputs, runner.max_batch)
        assert runner.facts == facts
    dev = run_batched(infer, inputs, 1)
    assert host.keys() == dev.keys() == {"logits"} and len(dev["logits"]) == 400
    assert host["logits"].dtype == dev["logits"].dtype == np.float32
    assert np.array_equal(host["logits"], dev["logits"])


def test_convert_returns_runtime_spec_and_details(tmp_path):
    """convert (called directly, in this process): the runtime spec says how to open the model, details say how
    it was made; int8 without calibration data is refused."""
    from edgepack.artifact import ConvertData
    from edgepack.backends import registry
    from edgepack.config import load_profile
    from edgepack.errors import InputError
    from edgepack.sources import load_source

    source = load_source(str(make_tiny_onnx(tmp_path / "tiny.onnx")))
    t = registry.resolve(load_profile("linux-ort-fp32"))
    art = t.backend.convert(source, t.profile, t.options, ConvertData(), tmp_path / "out")
    assert art.runtime == {"model": "model.ort", "providers": ["CPUExecutionProvider"],
                           "graph_optimization_level": "all"}
    assert t.backend.runtime_spec(art) == t.backend.Runtime(model="model.ort")
    assert art.details == {"target_platform": "amd64"} and art.files == ["model.ort", "required_operators.config"]
    t8 = registry.resolve(load_profile("linux-ort-int8"))
    assert t8.backend.needs_calibration(t8.profile, t8.options) and t8.backend.tunes_on_data(t8.profile, t8.options)
    dyn = registry.resolve(load_profile("android-ort-int8-dynamic"))
    assert not dyn.backend.needs_calibration(dyn.profile, dyn.options)
    with pytest.raises(InputError, match="int8 needs calibration data"):
        t8.backend.convert(source, t8.profile, t8.options, ConvertData(), tmp_path / "out8")


def test_x86_bundles_bake_no_cpu_specific_layout(tmp_path, cli):
    """linux-ort-* (target_platform amd64) .ort files must run on any x86-64 CPU: no NCHWc blocked layout (its
    weights are reordered for the converting CPU's vector width; an AVX-512-built one computed cosine 0.83 under
    qemu -cpu Haswell). The ARM (android) conversion keeps level "all", which has no NCHWc for ARM."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from edgepack.backends.ort_mobile.convert import fixed_level

    assert (fixed_level("fp32", "amd64"), fixed_level("int8", "amd64"), fixed_level("fp32", "arm"),
            fixed_level("fp16", "arm")) == ("extended", "extended", "all", "basic")
    model = make_tiny_onnx(tmp_path / "tiny16.onnx", width=16)  # 16 channels: NCHWc-eligible convolutions
    res = cli("build", model, "-t", "linux-ort-fp32", "-t", "android-ort-fp32", "--out", tmp_path / "d", "-c", "digits")
    assert res.exit_code == 0, res.stdout + res.stderr
    for target in ("linux-ort-fp32", "android-ort-fp32"):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(tmp_path / f"{target}.dump.onnx")
        ort.InferenceSession(str(tmp_path / "d" / "tiny16" / target / "model.ort"), so,
                             providers=["CPUExecutionProvider"])
        domains = {n.domain for n in onnx.load(so.optimized_model_filepath).graph.node}
        assert "com.microsoft.nchwc" not in domains, (target, domains)

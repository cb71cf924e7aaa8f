"""The Python API without an ML framework: the data adapters write what the CLI's --calibration .npz reads,
BuildResult (verdict, bundles, raise_for_failures, escaped HTML), edgepack.testing, and the public names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack import api
from edgepack.errors import EdgepackError, InputError
from edgepack.signature import TensorSpec
from edgepack.testing import assert_bundle_passes, edgepack_build  # noqa: F401 - the fixture, named explicitly

REPO = Path(__file__).resolve().parents[2]
ONE = (TensorSpec("input", (None, 1, 4, 4)),)
TWO = (TensorSpec("a", (None, 3)), TensorSpec("b", (None, 2)))


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def test_batches_as_tuples_with_labels_are_stacked_and_capped():
    x, y = _x(50), np.arange(50)
    got = api.collect([(x[i:i + 8], y[i:i + 8]) for i in range(0, 50, 8)], ONE, max_samples=20)
    assert got["input"].shape == (20, 1, 4, 4) and np.array_equal(got["input"], x[:20])
    assert np.array_equal(got["labels"], y[:20])


def test_single_samples_dicts_and_two_inputs_are_told_apart_by_rank():
    x = _x(5)
    one_by_one = api.collect(iter([(x[i], np.int64(i)) for i in range(5)]), ONE)  # a generator of (sample, label)
    assert one_by_one["input"].shape == (5, 1, 4, 4) and one_by_one["labels"].tolist() == [0, 1, 2, 3, 4]
    a, b = np.ones((6, 3), np.float32), np.zeros((6, 2), np.float32)
    dicts = api.collect([{"a": a[:3], "b": b[:3], "label": np.arange(3)}, {"a": a[3:], "b": b[3:], "label": np.arange(3)}], TWO)
    assert dicts["a"].shape == (6, 3) and dicts["b"].shape == (6, 2) and dicts["labels"].shape == (6,)
    nested = api.collect([((a, b), np.arange(6))], TWO)  # ((inputs...), labels)
    assert set(nested) == {"a", "b", "labels"}
    assert set(api.collect([(a, b)], TWO)) == {"a", "b"}  # no labels carried, none made up
    assert api.collect({"input": x, "label": np.arange(5)}, ONE)["labels"].tolist() == [0, 1, 2, 3, 4]


def test_an_endless_iterable_is_read_up_to_max_samples():
    import itertools

    def endless():
        for i in itertools.count():
            yield _x(8, seed=i), np.full(8, i % 10)

    got = api.collect(endless(), ONE, max_samples=100)
    assert got["input"].shape[0] == got["labels"].shape[0] == 100


def test_bad_data_is_one_clear_error():
    with pytest.raises(InputError, match="3 parts; the model takes 1"):
        api.collect([(_x(2), _x(2), _x(2))], ONE)
    with pytest.raises(InputError, match="no samples"):
        api.collect([], ONE)
    with pytest.raises(EdgepackError, match="cannot be a int"):
        api.collect(3, ONE)
    with pytest.raises(InputError, match="some batches carry labels"):
        api.collect([(_x(2), np.arange(2)), _x(2)], ONE)


def test_staged_data_is_the_npz_the_cli_reads(tmp_path):
    from edgepack import calibration

    x, y = _x(40), np.arange(40) % 10
    path = api.stage_data([(x[:20], y[:20]), (x[20:], y[20:])], ONE, tmp_path, "calibration", 2000)
    data = calibration.load(path, ONE)  # the CLI's --calibration file.npz path
    assert data.holdout_labels is not None and sum(data.sizes) >= 40 - 1
    assert api.stage_data("digits", ONE, tmp_path, "calibration", 10) == "digits"  # a recipe stays a recipe


def test_a_path_model_builds_through_the_api_like_the_cli(fake_model, profile, tmp_path, cli):
    p = profile("ok")
    result = edgepack.build(str(fake_model), [str(p)], out=tmp_path / "api")
    res = cli("build", fake_model, "-t", p, "--out", tmp_path / "cli")
    assert result.verdict == "passed" and result.exit_code == res.exit_code == 0 and bool(result)
    assert result.bundles == {"ok": tmp_path / "api" / "linear" / "ok"}
    assert result.report_path == tmp_path / "api" / "linear" / "build-report.json" and result.report_path.is_file()
    assert result.raise_for_failures() is result
    report = assert_bundle_passes(result.bundles["ok"])
    assert report.status == "passed"
    assert edgepack.check(result.bundles["ok"]).status == "passed"
    assert edgepack.verify(result.bundles["ok"])


def test_failures_raise_and_the_html_is_the_terminal_table_escaped(fake_model, profile, tmp_path):
    ok, zeros = profile("ok"), profile("zeros", "fake_noisy", '[options]\nmode = "zeros"\n')
    result = edgepack.build(str(fake_model), [str(ok), str(zeros)], out=tmp_path / "dist")
    assert result.verdict == "failed" and result.exit_code == 1 and not result
    assert [r.status for r in result] == ["passed", "failed"] and result["zeros"].status == "failed"
    with pytest.raises(edgepack.BuildFailed, match=r"1 of 2 target\(s\) did not pass: zeros: FAILED \(.*min_cosine"):
        result.raise_for_failures()
    with pytest.raises(AssertionError, match="verdict is failed"):
        assert_bundle_passes(result.bundles["zeros"])
    html = result._repr_html_()
    assert "parity.min_cosine[logits]" in html and "FAIL" in html and "summary" in html
    hostile = api.BuildResult(tuple(r.model_copy(update={"target": "<img src=x onerror=alert(1)>"})
                                    for r in result.reports))
    html = hostile._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_tampered_bundle_fails_assert_bundle_passes(fake_model, profile, tmp_path):
    result = edgepack.build(str(fake_model), [str(profile("ok"))], out=tmp_path / "dist")
    bundle = result.bundles["ok"]
    model = next(p for p in bundle.iterdir() if p.suffix == ".fakemodel" or p.name.startswith("model"))
    model.write_bytes(model.read_bytes() + b"x")
    with pytest.raises(AssertionError, match="does not match its manifest"):
        assert_bundle_passes(bundle)


def test_the_fixture_builds_under_the_test_folder(edgepack_build, fake_model, profile, tmp_path):
    result = edgepack_build(str(fake_model), str(profile("ok")))
    assert result.bundles["ok"].is_relative_to(tmp_path) and result.verdict == "passed"


def test_plan_is_the_module_and_the_api_call(fake_model, profile):
    from edgepack import plan as plans  # the module the pipeline uses

    the_plan = edgepack.plan(str(fake_model), [str(profile("ok"))])
    assert isinstance(the_plan, plans.Plan) and [r.action for r in the_plan.rows] == ["build"]
    assert edgepack.plan is plans


def test_the_public_api_is_exactly_what_docs_api_md_lists():
    text = (REPO / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^### `edgepack\.(\w+)`", text, re.M))
    assert listed == set(edgepack.__all__) - {"__version__"}
    for name in edgepack.__all__:
        assert getattr(edgepack, name) is not None
    testing = set(re.findall(r"^### `edgepack\.testing\.(\w+)", text, re.M))
    from edgepack import testing as testing_mod

    assert testing == set(testing_mod.__all__)
    with pytest.raises(AttributeError):
        edgepack.not_a_name  # noqa: B018


def test_in_memory_objects_of_unknown_types_are_refused():
    with pytest.raises(EdgepackError, match="cannot take a builtins.dict"):
        edgepack.build({"not": "a model"}, "linux-ort-fp32")
    assert api.model_kind("model.onnx") is None and api.model_kind(Path("m.onnx")) is None


def test_nothing_is_left_in_out_after_a_refused_in_memory_build(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    with pytest.raises(EdgepackError):
        edgepack.build(model, "no-such-target", out=tmp_path / "dist", name="empty")
    leftovers = [p for p in (tmp_path / "dist").rglob("*") if p.name.startswith(".staging")]
    assert not leftovers
    shutil.rmtree(tmp_path / "dist", ignore_errors=True)


def test_the_public_names_import_no_framework():
    import json
    import subprocess
    import sys

    code = ("import sys, json, edgepack\n"
            "[getattr(edgepack, n) for n in edgepack.__all__]\n"
            "import edgepack.testing\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"torch", "tensorflow", "keras", "onnx", "onnxruntime", "openvino", "coremltools", "jax"}

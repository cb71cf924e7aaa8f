"""OpenVINO INT8 accuracy search and accuracy control on the depthwise/SiLU residual network trained at test time
(``trained_dwsilu``): the verdict comes from the independent holdout, the search and the controller only ever see the
tuning split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

REPO = Path(__file__).resolve().parents[2]
PLAIN, ACC = "intel-openvino-int8", "intel-openvino-int8-acc"


def _build(model: Path, targets, out: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from edgepack.cli import app

    args = ["build", str(model), "--input", "input=1x1x32x32", "-c", "digits", "--out", str(out)]
    for t in targets:
        args += ["-t", str(t)]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    return res.exit_code, res.stdout


def _report(out: Path, target: str) -> dict:
    return json.loads((out / "dwsilu" / target / "report.json").read_text())


def _profile(tmp: Path, name: str, base: str, *edits: tuple[str, str], extra: str = "") -> Path:
    text = (REPO / "targets" / f"{base}.toml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / f"{name}.toml"
    path.write_text(text + extra)
    return path


@pytest.fixture(scope="module")
def built(trained_dwsilu, tmp_path_factory):
    """One build of the trained network for the shipped int8 and accuracy-control profiles, plus accuracy control
    with edgepack's parity metric (the default for models without class scores)."""
    tmp = tmp_path_factory.mktemp("ov-search")
    parity = _profile(tmp, "acc-parity", ACC, ('metric = "auto"', 'metric = "parity"'))
    out = tmp / "dist"
    code, log = _build(trained_dwsilu / "dwsilu.onnx", [PLAIN, ACC, parity], out)
    return code, log, out


def _passed_on_holdout(built, target: str) -> dict:
    """The target's report, after checking it passed with ≥ 98% agreement and ≤ 1 point loss on the holdout."""
    code, log, out = built
    assert code == 0, log
    rep = _report(out, target)
    assert rep["status"] == "passed"
    m = rep["parity"]["metrics"]["logits"]
    assert m["top1_agreement"] >= 0.98 and m["accuracy_drop"] <= 0.01, m
    return rep


def test_int8_holds_on_the_independent_holdout_and_reports_the_search(built):
    rep = _passed_on_holdout(built, PLAIN)
    cal = rep["calibration"]
    assert rep["parity"]["samples"] == cal["holdout_samples"] == 400 and cal["tuning_samples"] == 256
    s = rep["artifact"]["accuracy_search"]
    assert s["met_budget_on_tuning"] and s["split"].startswith("tuning (256 samples")
    assert s["trials"] and s["trials"][0]["recipe"] == "plain" and s["trials"][0]["stage"] == "recipe"
    assert s["chosen"]["recipe"] in {t["recipe"] for t in s["trials"] if t["passed"]}
    assert s["chosen"]["settings"]["target_device"] == "cpu"
    assert "parity.min_top1_agreement[logits]" in s["chosen"]["tuning"]["checks"]
    cost = s["cost"]
    assert cost["size_bytes"] > 0 and 0 < cost["int8_compute_share"] <= 1
    assert cost["int8_ms"] > 0 and cost["float_ms"] > 0 and cost["latency_vs_float"] > 0  # measured, interleaved


def test_accuracy_control_is_steered_by_the_tuning_split_only(built):
    rep = _passed_on_holdout(built, ACC)
    cal = rep["calibration"]
    ac = rep["artifact"]["accuracy_control"]
    # the controller saw exactly the tuning split's samples, never the 400 holdout samples that judge the bundle
    assert ac["samples"] == cal["tuning_samples"] == 256 != cal["holdout_samples"]
    assert ac["measured_on"].startswith("tuning split (256 samples") and "holdout" in ac["measured_on"]
    assert ac["metric_option"] == "auto" and ac["metric"] == "top1_agreement"  # class scores → top-1 agreement
    assert ac["reached"] and ac["fp32_metric"] == 1.0
    s = rep["artifact"]["accuracy_search"]
    assert s["split"].startswith("tuning (256 samples") and s["met_budget_on_tuning"]
    assert set(s["chosen"]["float_layers"]) == set(ac["reverted_to_float"])


def test_accuracy_control_with_edgepacks_parity_metric(built):
    """metric = parity: edgepack's own parity score of the profile's budget on the tuning split (works for any
    output kind): 1.0 for the fp32 IR, and what the controller reached is what the search judged."""
    code, log, out = built
    assert code == 0, log
    rep = _report(out, "acc-parity")
    ac = rep["artifact"]["accuracy_control"]
    assert ac["metric"] == "parity" and ac["samples"] == 256 and "parity budget" in ac["reference"]
    assert ac["fp32_metric"] == 1.0 and 0 < ac["final_metric"] <= 1.0
    assert ac["reached"] == (ac["final_drop"] <= ac["max_drop"])
    assert rep["artifact"]["accuracy_search"]["met_budget_on_tuning"] == (ac["final_metric"] == 1.0)


def test_metric_auto_picks_parity_without_class_scores_and_class_metrics_are_refused():
    from edgepack.backends.openvino.quantize import resolve_metric
    from edgepack.errors import ConfigError
    from edgepack.signature import TensorSpec

    emb = (TensorSpec("embedding", (1, 8, 384)),)
    assert resolve_metric("auto", emb) == "parity"
    assert resolve_metric("auto", (TensorSpec("logits", (1, 10)),)) == "top1_agreement"
    with pytest.raises(ConfigError, match="needs a class-score output") as e:
        resolve_metric("top1_agreement", emb)
    assert "parity" in e.value.hint


def test_recipes_are_nncf_settings_cheapest_first():
    from edgepack.backends import registry
    from edgepack.backends.openvino.quantize import nncf_kwargs, recipes
    from edgepack.config import load_profile

    opts = registry.resolve(load_profile(PLAIN)).options
    cnn = recipes(opts, transformer=False)
    assert cnn[0].name == "plain" and cnn[0].settings["fast_bias_correction"] is False
    names = [r.name for r in cnn]
    assert "transformer" not in names and {"fast-bias-correction", "preset-mixed", "ranges-quantile",
                                           "ranges-histogram", "channel-alignment"} <= set(names)
    tr = [r.name for r in recipes(opts, transformer=True)]
    assert tr[:2] == ["plain", "transformer"]  # the transformer scheme comes right after the profile's own
    for r in recipes(opts, transformer=True):  # every recipe is a valid nncf.quantize call
        kw = nncf_kwargs(r.settings, opts.ignored_scope, ("conv1", "conv2|add"))
        assert kw["ignored_scope"].names == ["conv1", "conv2|add"] and not kw["ignored_scope"].validate
    kw = nncf_kwargs({**cnn[0].settings, "smooth_quant_alpha": 0.5, "activations_range": "HISTOGRAM",
                      "channel_alignment": True}, opts.ignored_scope)
    adv = kw["advanced_parameters"]
    assert adv.smooth_quant_alphas.matmul == 0.5 and not adv.disable_channel_alignment
    assert "ignored_scope" not in kw


def test_unmeetable_budget_fails_naming_the_best_recipe(trained_dwsilu, tmp_path):
    """A cosine budget no INT8 build reaches: the search tries the other recipe and NNCF-ranked layers in float,
    then the build fails with the best recipe named; the report shows every trial and the ranking."""
    strict = _profile(tmp_path, "strict", PLAIN,
                      ("min_top1_agreement = 0.98", "min_top1_agreement = 0.98\nmin_cosine = 0.99999"),
                      ("fast_bias_correction = false", "fast_bias_correction = true"),
                      ("subset_size = 300", "subset_size = 100"),
                      ("max_float_layers = 6", 'max_float_layers = 1\nrecipes = ["preset-mixed"]\n'
                                               'sensitivity = "toolkit"'))
    code, log = _build(trained_dwsilu / "dwsilu.onnx", [strict], tmp_path / "dist")
    assert code != 0, log
    rep = _report(tmp_path / "dist", "strict")
    assert rep["status"] == "failed"
    row = next(c for c in rep["checks"] if c["name"] == "accuracy_search.met_budget_on_tuning")
    s = rep["artifact"]["accuracy_search"]
    assert not row["passed"] and not s["met_budget_on_tuning"] and s["searched"]
    assert f"recipe '{s['chosen']['recipe']}'" in row["note"] and "best: recipe" in s["reason"]
    stages = [(t["recipe"], t["stage"]) for t in s["trials"]]
    assert stages[:2] == [("plain", "recipe"), ("preset-mixed", "recipe")] and stages[2][1] == "mixed"
    assert all("parity.min_cosine[logits]" in t["figures"]["failing"] for t in s["trials"])
    sens = s["sensitivity"]
    assert sens["method"] == "toolkit" and sens["layers"] and all("error" in x for x in sens["layers"])
    best = max(s["trials"], key=lambda t: t["score"])
    assert (s["chosen"]["recipe"], s["chosen"]["float_layers"]) == (best["recipe"], best["float_layers"])


def test_transformer_detection_on_attention_graphs():
    """Fused ScaledDotProductAttention (what convert_model makes of exported attention) or MatMul(Q, Kᵀ) + Softmax
    marks a transformer; a CNN is not one."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from edgepack.backends.openvino.quantize import is_transformer

    x = ops.parameter([1, 8, 16], np.float32, name="x")
    w = ops.constant(np.ones((16, 16), np.float32))
    q, k, v = (ops.matmul(x, w, False, False) for _ in range(3))
    fused = ov.Model([ops.scaled_dot_product_attention(q, k, v, causal=False)], [x])
    assert is_transformer(fused) == {"scaled_dot_product_attention": 1}
    att = ops.softmax(ops.matmul(q, k, False, True), -1)
    manual = ov.Model([ops.matmul(att, v, False, False)], [x])
    assert is_transformer(manual)["softmax"] == 1 and is_transformer(manual)["activation_matmul"] == 2
    img = ops.parameter([1, 3, 8, 8], np.float32, name="img")
    conv = ops.convolution(img, ops.constant(np.ones((4, 3, 3, 3), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1])
    assert is_transformer(ov.Model([ops.softmax(ops.reshape(conv, [1, -1], False), -1)], [img])) is None

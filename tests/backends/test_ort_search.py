"""The ORT INT8 accuracy search (issue 11): the depthwise/SiLU residual network trained at test time meets the
INT8 budget on the independent holdout and the report shows the search; a budget that cannot be met fails naming
the best recipe; the same inputs choose the same recipe; transformers are detected and get their recipes (static
transformer recipe, dynamic INT8 and the dynamic profile)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[2]


def _build(cli, model: Path, target: str, out: Path, *extra: str):
    res = cli("build", str(model), "-t", target, "-c", "digits", "-o", str(out), *extra)
    name = Path(target).stem
    report = out / model.stem / name / "report.json"
    assert report.is_file(), res.stdout + res.stderr
    return res, json.loads(report.read_text())


def _profile(tmp_path: Path, name: str, parity: dict, search: dict) -> Path:
    """A copy of android-ort-int8 with other parity limits and [options.accuracy_search] settings."""
    text = (REPO / "targets" / "android-ort-int8.toml").read_text()
    text = re.sub(r"\[budgets\.parity\][^\[]*", "[budgets.parity]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in parity.items()) + "\n", text)
    text = re.sub(r"\[options\.accuracy_search\][^\[]*", "", text)
    text += "\n[options.accuracy_search]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in search.items())
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def dwsilu(trained_dwsilu, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ortsearch")
    model = root / "dwsilu.onnx"
    shutil.copyfile(trained_dwsilu / "dwsilu.onnx", model)
    return model


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from edgepack.cli import app

    def run(*args: str):
        return CliRunner().invoke(app, list(args), catch_exceptions=False)

    return run


def test_dwsilu_int8_holds_on_the_holdout_and_reports_the_search(dwsilu, cli, tmp_path):
    res, report = _build(cli, dwsilu, "android-ort-int8", tmp_path / "dist")
    assert res.exit_code == 0, res.stdout
    m = report["parity"]["metrics"]["logits"]
    assert report["status"] == "passed"
    assert m["top1_agreement"] >= 0.98 and m["accuracy_drop"] <= 0.01
    cal = report["calibration"]
    assert cal["tuning_samples"] > 0 and report["parity"]["samples"] == cal["holdout_samples"]
    s = report["artifact"]["accuracy_search"]
    assert s["split"].startswith(f"tuning ({cal['tuning_samples']} samples")
    assert s["trials"][0]["recipe"] == "plain" and s["trials"][0]["stage"] == "recipe"
    assert s["met_budget_on_tuning"] is True
    chosen = s["chosen"]
    assert any(t["recipe"] == chosen["recipe"] and t["float_layers"] == chosen["float_layers"] and t["passed"]
               for t in s["trials"])
    art = report["artifact"]
    assert art["recipe"] == chosen["recipe"] and art["float_layers"] == chosen["float_layers"]
    assert art["quantized_compute_ops"] == art["compute_ops"] - len(chosen["float_layers"]) > 0
    assert s["cost"]["latency_vs_float"] > 0 and s["cost"]["int8_ms"] > 0 and s["cost"]["float_ms"] > 0


def test_unmeetable_budget_fails_naming_the_best_recipe(dwsilu, cli, tmp_path):
    prof = _profile(tmp_path, "impossible", {"min_top1_agreement": 1.0, "min_cosine": 0.99999,
                                             "max_accuracy_drop": 0.01},
                    {"max_float_layers": 1, "recipes": ["reduce-range"], "sensitivity": "float-one"})
    res, report = _build(cli, dwsilu, str(prof), tmp_path / "dist")
    assert res.exit_code != 0 and report["status"] == "failed"
    row = next(c for c in report["checks"] if c["name"] == "accuracy_search.met_budget_on_tuning")
    s = report["artifact"]["accuracy_search"]
    best = s["chosen"]["recipe"]
    assert row["passed"] is False and f"recipe '{best}'" in row["note"]
    assert s["searched"] is True and s["met_budget_on_tuning"] is False
    # the best candidate: a recipe tried, maybe with 16-bit activations on its most sensitive layers ("+a16xK")
    assert best.split("+a16x")[0] in ("plain", "reduce-range") and len(s["chosen"]["float_layers"]) <= 1
    wide = [t for t in s["trials"] if t["stage"] == "wide"]
    assert wide and all("error" not in t for t in wide)  # 16-bit activations were tried before float layers
    assert [t["stage"] for t in s["trials"]].index("wide") < [t["stage"] for t in s["trials"]].index("mixed")
    assert [t["recipe"] for t in s["trials"] if t["stage"] == "recipe"] == ["plain", "reduce-range"]
    # every quantized layer's error is reported (float-one), and the best candidate is the best score tried among
    # those not rejected for their latency (16-bit activations on every layer can run 3x the plain INT8 time)
    layers = {x["layer"] for x in s["sensitivity"]["layers"]}
    assert len(layers) == report["artifact"]["compute_ops"]
    scores = [t["score"] for t in s["trials"] if t["score"] is not None and not t["figures"].get("latency_rejected")]
    chosen = next(t for t in s["trials"] if t["recipe"] == best and t["float_layers"] == s["chosen"]["float_layers"])
    assert chosen["score"] == max(scores)


def test_same_inputs_choose_the_same_recipe(dwsilu, cli, tmp_path):
    """A budget plain INT8 misses on the tuning split but another recipe meets: searched, and chosen the same way
    twice (same trials, same figures)."""
    prof = _profile(tmp_path, "tight", {"min_top1_agreement": 0.98, "min_cosine": 0.999, "max_accuracy_drop": 0.01},
                    {"recipes": ["symmetric-int8-activations", "reduce-range"], "max_float_layers": 2})
    runs = []
    for i in range(2):
        _, report = _build(cli, dwsilu, str(prof), tmp_path / f"dist{i}")
        runs.append(report["artifact"]["accuracy_search"])
    a, b = runs
    assert a["searched"] is True and a["trials"][0]["passed"] is False
    assert a["chosen"]["recipe"] == b["chosen"]["recipe"] and a["chosen"]["float_layers"] == b["chosen"]["float_layers"]
    assert [(t["recipe"], t["float_layers"], t["figures"]) for t in a["trials"]] == \
        [(t["recipe"], t["float_layers"], t["figures"]) for t in b["trials"]]


# ------------------------------------------------------------------------------------------------ transformers


def make_tiny_transformer(path: Path, seed: int = 0) -> Path:
    """One pre-LN attention block over a digits image read as 32 tokens of 32 features: LayerNorm → Q/K/V MatMuls →
    scores MatMul → + mask → Softmax → MatMul → out MatMul → residual → mean → Gemm (10 logits)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    d = 32

    def w(name, *shape, s=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [w("wq", d, d), w("wk", d, d), w("wv", d, d), w("wo", d, d), w("fc", 10, d, s=0.5),
             numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "b"),
             numpy_helper.from_array(np.array([1, 32, 32], np.int64), "shape"),
             numpy_helper.from_array(np.zeros((1, 1, 32), np.float32), "mask"),
             numpy_helper.from_array(np.array(1 / np.sqrt(d), np.float32), "scale"),
             numpy_helper.from_array(np.array([0, 2, 1], np.int64), "perm_unused")]
    n = helper.make_node
    nodes = [n("Reshape", ["input", "shape"], ["x"], name="tokens"),
             n("LayerNormalization", ["x", "g", "b"], ["xn"], axis=-1, name="ln"),
             n("MatMul", ["xn", "wq"], ["q"], name="q"), n("MatMul", ["xn", "wk"], ["k"], name="k"),
             n("MatMul", ["xn", "wv"], ["v"], name="v"),
             n("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
             n("MatMul", ["q", "kt"], ["s0"], name="scores"), n("Mul", ["s0", "scale"], ["s1"], name="scaled"),
             n("Add", ["s1", "mask"], ["s2"], name="mask_add"), n("Softmax", ["s2"], ["p"], axis=-1, name="softmax"),
             n("MatMul", ["p", "v"], ["a"], name="context"), n("MatMul", ["a", "wo"], ["o"], name="out"),
             n("Add", ["x", "o"], ["r"], name="residual"),
             n("ReduceMean", ["r"], ["pooled"], axes=[1], keepdims=0, name="pool"),
             n("Gemm", ["pooled", "fc"], ["logits"], transB=1, name="head")]
    graph = helper.make_graph(nodes, "tiny-transformer",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_transformer_is_detected_and_gets_its_recipes(tmp_path):
    import onnx

    from edgepack.backends.ort_mobile.search import transformer_nodes

    m = onnx.load(str(make_tiny_transformer(tmp_path / "t.onnx")))
    t = transformer_nodes(m)
    assert t == {"softmax": ["softmax"], "mask_add": ["mask_add"], "layer_norm": ["ln"]}
    from tinymodels import make_tiny_onnx

    assert transformer_nodes(onnx.load(str(make_tiny_onnx(tmp_path / "cnn.onnx")))) is None


def test_transformer_search_and_dynamic_profile(tmp_path, cli):
    """Static INT8 on the transformer block under a budget only float attention can hold: the search reaches the
    transformer recipes (mask Add, Softmax, LayerNorm float) or dynamic INT8 and says why; the dynamic profile
    quantizes the MatMuls with no calibration."""
    model = make_tiny_transformer(tmp_path / "tiny_transformer.onnx")
    prof = _profile(tmp_path, "tr", {"min_cosine": 0.9999, "min_top1_agreement": 0.98},
                    {"recipes": ["transformer", "dynamic"], "max_float_layers": 0})
    _, report = _build(cli, model, str(prof), tmp_path / "dist")
    s = report["artifact"]["accuracy_search"]
    names = [t["recipe"] for t in s["trials"]]
    assert names[0] == "plain"
    assert report["artifact"]["transformer"] == {"softmax": 1, "mask_add": 1, "layer_norm": 1}
    if s["trials"][0]["passed"] is False:
        assert "transformer" in names and s["searched"] is True
        tr = next(t for t in s["trials"] if t["recipe"] == "transformer")
        assert "error" not in tr and tr["figures"]["checks"]
    assert s["chosen"]["why"]
    if s["chosen"]["recipe"] == "transformer":
        assert {"softmax", "mask_add", "ln"} <= set(report["artifact"]["excluded_nodes"])
    # the dynamic profile: no calibration needed, the weight MatMuls and the Gemm quantized
    from edgepack.backends import registry
    from edgepack.config import load_profile

    target = registry.resolve(load_profile("android-ort-int8-dynamic"))
    assert target.backend.needs_calibration(target.profile, target.options) is False
    _, dyn = _build(cli, model, "android-ort-int8-dynamic", tmp_path / "dyn")
    art = dyn["artifact"]
    assert art["quantization"].startswith("dynamic") and art["recipe"] == "plain"
    assert art["quantized_compute_ops"] >= 5  # q, k, v, out, head (score/context MatMuls read no weight)
    assert dyn["parity"]["metrics"]["logits"]["cosine"] > 0.99


# ------------------------------------------------------------------------------------------------ fp16 range


def make_overflow_onnx(path: Path, seed: int = 0) -> Path:
    """Flatten → Gemm → ×300 → ×300 → ×(1/300) → ×(1/300) → Gemm: every weight fits float16, but the activation
    after the second ×300 reaches ~1e5–1e6, beyond float16's 65504 (a plain FP16 build answers inf/NaN)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 1024)) * 0.05).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((10, 32)) * 0.3).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(300, np.float32), "up"),
             numpy_helper.from_array(np.array(1 / 300, np.float32), "down")]
    n = helper.make_node
    nodes = [n("Flatten", ["input"], ["f"], name="flatten"), n("Gemm", ["f", "w1"], ["h"], transB=1, name="fc1"),
             n("Mul", ["h", "up"], ["h1"], name="up1"), n("Mul", ["h1", "up"], ["h2"], name="up2"),
             n("Mul", ["h2", "down"], ["h3"], name="down1"), n("Mul", ["h3", "down"], ["h4"], name="down2"),
             n("Gemm", ["h4", "w2"], ["logits"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fp16_keeps_out_of_range_nodes_in_fp32(tmp_path, cli):
    model = make_overflow_onnx(tmp_path / "overflow.onnx")
    res, report = _build(cli, model, "android-ort-fp16", tmp_path / "dist")
    art = report["artifact"]
    kept = {x["node"]: x["why"] for x in art["fp32_nodes"]}
    assert {"up2", "down1"} <= set(kept) and "activation h2" in kept["up2"], art
    assert "fc1" not in kept and "fc2" not in kept
    assert res.exit_code == 0 and report["status"] == "passed", res.stdout
    assert report["parity"]["metrics"]["logits"]["nonfinite_samples"] == 0


def test_unique_subgraph_initializer_names():
    """Two If branches holding an initializer of the same name (as onnxslim leaves them) convert to FP16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgepack.onnxgraph import unique_initializer_names

    def branch(name, value):
        c = numpy_helper.from_array(np.full(4, value, np.float32), "k")
        return helper.make_graph([helper.make_node("Mul", ["x", "k"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [4])], [c])

    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch("a", 2.0), else_branch=branch("b", 3.0))]
    g = helper.make_graph(nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                        helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(AssertionError):
        convert_float_to_float16(onnx.ModelProto.FromString(m.SerializeToString()), keep_io_types=True)
    assert unique_initializer_names(m) == 1
    m16 = convert_float_to_float16(m, keep_io_types=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(m16.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(4, dtype=np.float32)
    assert np.allclose(sess.run(None, {"x": x, "cond": np.array(True)})[0], 2 * x)
    assert np.allclose(sess.run(None, {"x": x, "cond": np.array(False)})[0], 3 * x)


def test_manifest_details_are_stable_and_check_gets_the_timings_back():
    """The manifest keeps the search without wall-clock figures (rebuilds stay byte-identical); ``check`` takes
    them from the build report only when that report describes the same search."""
    from edgepack.quantsearch import stable, with_timings

    full = {"recipe": "plain", "accuracy_search": {
        "trials": [{"recipe": "plain", "seconds": 1.25, "score": 0.01}],
        "cost": {"size_bytes": 10, "int8_ms": 1.0, "float_ms": 2.0, "latency_vs_float": 0.5}}}
    s = stable(full)
    assert s["accuracy_search"]["trials"] == [{"recipe": "plain", "score": 0.01}]
    assert s["accuracy_search"]["cost"] == {"size_bytes": 10}
    assert with_timings(s, full) == full
    tampered = {**full, "recipe": "other"}
    assert with_timings(s, tampered) == s and with_timings(s, None) == s
    assert stable({"recipe": "x"}) == {"recipe": "x"}


def test_dynamic_int8_on_a_gemm_whose_weight_shape_is_in_value_info(tmp_path, cli):
    """torch's exporter records weight shapes in value_info; ORT's dynamic Gemm → MatMulInteger rewrite left that
    entry stale and shape inference refused the model (the demo CNN's android-ort-int8-dynamic ERROR)."""
    import onnx
    from onnx import helper
    from tinymodels import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "gemmvi.onnx")
    m = onnx.load(str(model))
    w = next(i for i in m.graph.initializer if i.name == "fc_w")
    m.graph.value_info.append(helper.make_tensor_value_info("fc_w", onnx.TensorProto.FLOAT, list(w.dims)))
    onnx.save(m, str(model))
    res, rep = _build(cli, model, "android-ort-int8-dynamic", tmp_path / "d")
    assert res.exit_code == 0 and rep["status"] == "passed", res.stdout + res.stderr
    assert rep["artifact"]["quantization"].startswith("dynamic")


def test_dynamic_int8_of_a_conv_only_model_is_skipped_by_the_plan(tmp_path, cli):
    """Dynamic INT8 quantizes MatMul/Gemm/LSTM/Attention only: on a Conv-only model the plan skips the target
    (without --skip-unavailable) instead of an ERROR "no compute op came out quantized" after conversion; the
    static INT8 target beside it builds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((10, 1, 3, 3)) * 0.3).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["logits"], name="flatten")]
    graph = helper.make_graph(nodes, "convonly",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "convonly.onnx"
    onnx.save(model, str(path))
    res = cli("plan", str(path), "-t", "android-ort-int8-dynamic", "-t", "android-ort-int8",
              "--json", str(tmp_path / "p.json"))
    assert res.exit_code == 0, res.stdout + res.stderr
    rows = {r["target"]: r for r in json.loads((tmp_path / "p.json").read_text())["targets"]}
    dyn = rows["android-ort-int8-dynamic"]
    assert dyn["action"] == "skip" and rows["android-ort-int8"]["action"] == "build"
    assert "dynamic INT8 quantizes MatMul/Gemm/RNN only" in dyn["reason"] and "Conv" in dyn["reason"]
    assert "android-ort-int8" in dyn["hint"]
    res = cli("build", str(path), "-t", "android-ort-int8-dynamic", "-c", "digits", "-o", str(tmp_path / "out"))
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "out" / "convonly" / "build-report.json").read_text())
    assert [t["status"] for t in report["targets"]] == ["skipped"]
    assert not (tmp_path / "out" / "convonly" / "android-ort-int8-dynamic").exists()

def test_sixteen_bit_activations_on_a_chosen_layer(tmp_path):
    """OrtSpace.widen: the chosen layer reads and writes uint16 activations (16-bit Q/DQ around it, ORT's
    mixed-precision fixer converting back to uint8 for the others), its weight stays int8, the model runs and the
    artifact details name the layer."""
    import onnx
    from tinymodels import make_tiny_onnx

    from edgepack.backends.ort_mobile.search import OrtSpace
    from edgepack.backends.ort_mobile.spec import OrtOptions
    from edgepack.signature import TensorSpec

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    m = onnx.load(str(model))
    shape = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]

    class Src:
        inputs = (TensorSpec("input", tuple(shape)),)
        outputs = (TensorSpec("logits", (shape[0], 10)),)

    rng = np.random.default_rng(0)
    cal = {"input": rng.standard_normal((16, *shape[1:])).astype(np.float32)}
    space = OrtSpace(model, model, Src(), cal, OrtOptions(), tmp_path / "s", per_channel=True)
    plain = space.recipes()[0]
    base = space.build(plain, ())
    assert space.layers(base) == ["conv1", "conv2", "fc"]
    wide = space.widen(plain, ("conv2",))
    assert wide is not None and wide.name == "plain+a16x1"
    cand = space.build(wide, ())
    q = onnx.load(str(cand.path))
    inits = {i.name: i for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    consumers = {i: n for n in q.graph.node for i in n.input}
    node = next(n for n in q.graph.node if n.name == "conv2")

    def zp_type(qdq) -> int:
        return inits[qdq.input[2]].data_type

    assert zp_type(producers[node.input[0]]) == onnx.TensorProto.UINT16  # its input activation: uint16
    assert zp_type(producers[node.input[1]]) == onnx.TensorProto.INT8  # its weight: int8
    assert zp_type(consumers[node.output[0]]) == onnx.TensorProto.UINT16  # its output activation: uint16
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    assert zp_type(producers[conv1.input[0]]) == onnx.TensorProto.UINT8  # the others keep uint8
    out = space.run(cand, cal)["logits"]
    assert out.shape == (16, 10) and np.isfinite(out).all()
    d = space.describe(cand)
    assert d["activations_16bit_layers"] == ["conv2"] and d["quantized_compute_ops"] == 3
    space.cleanup()

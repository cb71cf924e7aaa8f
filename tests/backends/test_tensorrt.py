"""TensorRT for Jetson: TRT-ready bundles per profile family, the up-front op refusal (TensorRT 8.5 vs 10.x), host
checks as report rows, host-proxy INT8 parity on real data, the Q/DQ lint on hand-made bad Q/DQ, the calibration
cache format, the build scripts' refusals (fake trtexec, stubbed tensorrt) and a `gpu` test that builds and runs
an engine where a CUDA GPU and the tensorrt package exist."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack import bundle as bundles
from tinymodels import make_layernorm_onnx, make_tiny_onnx

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "edgepack" / "backends" / "tensorrt"
# one profile per family: JetPack 5 (8.5), JetPack 6.0 (8.6), JetPack 6.1 (10.3), JetPack 7 (10.13), DLA, Xavier
TARGETS = ("jetson-orin-jp5-int8", "jetson-xavier-jp5-fp16", "jetson-orin-jp6-fp16", "jetson-orin-jp6-int8",
           "jetson-orin-jp7-int8", "jetson-orin-jp6-dla-int8")
HOST_ROWS = ("trt: opset/IR within the profile", "trt: ops in the TensorRT", "trt: dynamic-shape/profile lint")
INT8_ROWS = ("trt: fp16 overflow scan", "trt: Q/DQ lint", "trt: calibration cache lint")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small CNN built for every profile family in one build."""
    from typer.testing import CliRunner

    from edgepack.cli import app

    root = tmp_path_factory.mktemp("trt")
    model = make_tiny_onnx(root / "cnn.onnx", width=16)
    args = ["build", str(model), "--out", str(root / "dist"), "-c", "digits"]
    for t in TARGETS:
        args += ["-t", t]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.stdout + res.stderr
    return root / "dist" / "cnn", res


def _report(b: Path) -> dict:
    return json.loads((b / "report.json").read_text())


@pytest.mark.parametrize("target", TARGETS)
def test_bundle_per_profile(built, target):
    dist, _ = built
    b = dist / target
    rep, manifest = _report(b), json.loads((b / "manifest.json").read_text())
    int8 = "int8" in target
    for f in ("model.onnx", "build_engine.sh", "build_engine.py", "run_bundle.py", "runner/device.py",
              "golden/inputs.npz", "golden/outputs.npz"):
        assert (b / f).is_file(), f
    assert (b / "model.qdq.onnx").is_file() == int8 and (b / "calibration.cache").is_file() == int8
    assert not (b / "model.engine").exists()  # engines are built on the device
    assert rep["status"] == "passed", [c for c in rep["checks"] if not c["passed"]]
    names = [c["name"] for c in rep["checks"]]
    for row in HOST_ROWS + (INT8_ROWS if int8 else ("trt: fp16 overflow scan",) if "fp16" in target else ()):
        assert any(n.startswith(row) for n in names), (row, names)
    assert rep["parity"]["where"] == "host-proxy" and "host-proxy" in rep["latency"]["runtime"]["runtime"]
    assert manifest["artifact"]["details"]["parity"].startswith("host-proxy")
    assert bundles.verify(b)
    import onnx

    m = onnx.load(str(b / "model.onnx"))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert opset <= manifest["target"]["options"]["max_opset"]
    assert all(vi.type.tensor_type.shape.dim for vi in m.graph.value_info)  # shapes inferred


def test_trtexec_command_per_version(built):
    dist, _ = built
    cmd = {t: json.loads((dist / t / "manifest.json").read_text())["artifact"]["details"]["build"]["trtexec"]
           for t in TARGETS}
    assert "--onnx=model.qdq.onnx" in cmd["jetson-orin-jp6-int8"] and "--stronglyTyped" in cmd["jetson-orin-jp6-int8"]
    assert "--int8" not in cmd["jetson-orin-jp6-int8"] and "--fp16" not in cmd["jetson-orin-jp6-int8"]
    assert "--stronglyTyped" in cmd["jetson-orin-jp7-int8"]
    jp5 = cmd["jetson-orin-jp5-int8"]
    assert "--onnx=model.qdq.onnx" in jp5 and "--int8 --fp16" in jp5 and "--stronglyTyped" not in jp5
    assert "--buildOnly" in jp5 and "--calib" not in jp5
    dla = cmd["jetson-orin-jp6-dla-int8"]
    for flag in ("--onnx=model.onnx", "--int8", "--fp16", "--calib=calibration.cache", "--useDLACore=0",
                 "--allowGPUFallback", "--skipInference"):
        assert flag in dla
    fp16 = cmd["jetson-orin-jp6-fp16"]
    assert "--fp16" in fp16 and "--int8" not in fp16 and "--onnx=model.onnx" in fp16
    for c in cmd.values():
        assert "--memPoolSize=workspace:1024" in c and "--timingCacheFile=$ENGINE_DIR/timing.cache" in c
        assert "--exportLayerInfo=$ENGINE_DIR/model.engine.layers.json" in c and "--profilingVerbosity=detailed" in c
    # the script's own dry run prints the same command
    out = subprocess.run(["bash", str(dist / "jetson-orin-jp6-dla-int8" / "build_engine.sh"), "--dry-run"],
                         capture_output=True, text=True, check=True, env={**os.environ, "EDGEPACK_ENGINE_CACHE": "/e"}
                         ).stdout.split()
    edir = "/e/trt8.6.2-sm87-" + __import__("hashlib").sha256(
        (dist / "jetson-orin-jp6-dla-int8" / "manifest.json").read_bytes()).hexdigest()[:16]
    assert out == dla.replace("$ENGINE_DIR", edir).split()


def test_layernorm_refused_on_jetpack5_named_and_passes_on_jetpack61(tmp_path, cli):
    """Must show: LayerNormalization is 'N' in onnx-tensorrt 8.5-GA and 'Y' in 10.1-GA (vendored tables)."""
    from edgepack.backends.tensorrt import tables

    assert not tables.for_version("8.5.2").ops["LayerNormalization"]["supported"]
    assert tables.for_version("10.3.0").ops["LayerNormalization"]["supported"]
    model = make_layernorm_onnx(tmp_path / "ln.onnx")
    res = cli("build", model, "-t", "jetson-orin-jp5-int8", "--out", tmp_path / "d5")
    assert res.exit_code == 2
    assert "TensorRT 8.5.2 cannot parse op LayerNormalization (node 'block/norm')" in res.stderr, res.stderr
    assert "onnx/onnx-tensorrt@8.5-GA" in res.stderr
    assert "converting with tensorrt" not in res.stdout + res.stderr  # refused by the preflight, before conversion
    assert not (tmp_path / "d5" / "ln" / "jetson-orin-jp5-int8").exists()
    res = cli("build", model, "-t", "jetson-orin-jp6-int8", "--out", tmp_path / "d6")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = _report(tmp_path / "d6" / "ln" / "jetson-orin-jp6-int8")
    assert rep["status"] == "passed"
    row = next(c for c in rep["checks"] if c["name"].startswith("trt: ops in the TensorRT 10.3.0"))
    assert row["passed"] and "nearest vendored table" in row["note"] and "LayerNormalization" in row["note"]


def test_op_refusal_happens_before_any_conversion_work(tmp_path):
    """convert refuses on the source graph: nothing is written to the output folder."""
    from edgepack.artifact import ConvertData
    from edgepack.backends import registry
    from edgepack.config import load_profile
    from edgepack.errors import UnsupportedConversion
    from edgepack.sources import load_source

    source = load_source(str(make_layernorm_onnx(tmp_path / "ln.onnx")))
    t = registry.resolve(load_profile("jetson-orin-jp5-int8"))
    out = tmp_path / "out"
    with pytest.raises(UnsupportedConversion, match=r"LayerNormalization \(node 'block/norm'\)"):
        t.backend.convert(source, t.profile, t.options, ConvertData(), out)
    assert not out.exists() or not any(out.iterdir())


def test_profiles_pin_the_device_and_refuse_inconsistent_ones(tmp_path):
    from edgepack.backends import registry
    from edgepack.config import load_profile
    from edgepack.errors import ConfigError

    opts = {t: registry.resolve(load_profile(t)).options for t in TARGETS}
    assert opts["jetson-orin-jp5-int8"].tensorrt == "8.5.2" and opts["jetson-orin-jp5-int8"].max_opset == 17
    assert opts["jetson-orin-jp6-fp16"].tensorrt == "8.6.2" and opts["jetson-orin-jp6-int8"].tensorrt == "10.3.0"
    assert opts["jetson-orin-jp6-int8"].max_opset == 20 and opts["jetson-xavier-jp5-fp16"].sm == 72
    assert opts["jetson-orin-jp6-dla-int8"].dla_core == 0
    base = 'backend = "tensorrt"\nprecision = "{p}"\n[options]\njetpack = "5.1"\ntensorrt = "{trt}"\n' \
           'l4t = "35.2.1"\nsm = 87\nmax_opset = {opset}\n{extra}'
    for p, trt, opset, extra, msg in (("int8", "10.3.0", 17, "", "ships TensorRT 8.5.2"),
                                      ("int8", "8.5.2", 20, "", "parses ONNX opset <= 17"),
                                      ("fp32", "8.5.2", 17, "dla_core = 0\n", "DLA runs FP16 or INT8 only"),
                                      ("int8", "8.5.2", 17, "dla_core = 2\n", "dla_core 2 does not exist")):
        prof = tmp_path / "bad.toml"
        prof.write_text(base.format(p=p, trt=trt, opset=opset, extra=extra))
        with pytest.raises(ConfigError, match=msg):
            registry.resolve(load_profile(str(prof)))


def test_dla_profile_refuses_dynamic_shapes(tmp_path, cli):
    model = make_tiny_onnx(tmp_path / "dyn.onnx", dynamic_batch=True)
    prof = tmp_path / "dla.toml"
    prof.write_text((REPO / "targets" / "jetson-orin-jp6-dla-int8.toml").read_text().replace(
        "gpu_fallback = true", "gpu_fallback = true\nmax_batch = 4"))
    res = cli("build", model, "-t", prof, "--out", tmp_path / "d")
    assert res.exit_code == 1
    rep = _report(tmp_path / "d" / "dyn" / "dla")
    row = next(c for c in rep["checks"] if c["name"].startswith("trt: dynamic-shape/profile lint"))
    assert not row["passed"] and "DLA takes static shapes only" in row["note"]
    # on the GPU the same model gets an explicit min/opt/max profile in both scripts
    res = cli("build", model, "-t", "jetson-orin-jp6-fp16", "--out", tmp_path / "g")
    assert res.exit_code == 0, res.stdout
    cmd = json.loads((tmp_path / "g" / "dyn" / "jetson-orin-jp6-fp16" / "manifest.json").read_text())[
        "artifact"]["details"]["build"]["trtexec"]
    assert "--minShapes=input:1x1x32x32 --optShapes=input:1x1x32x32 --maxShapes=input:1x1x32x32" in cmd


def test_digits_int8_host_proxy_parity_on_real_data(trained_digits, tmp_path, cli):
    """Must show: the Q/DQ bundle's host-proxy INT8 parity on the real digits holdout meets the INT8 goals
    (≥ 98 % top-1 agreement, ≤ 1 point accuracy loss)."""
    targets = ("jetson-orin-jp6-int8", "jetson-orin-jp5-int8")
    args = ["build", trained_digits / "cnn.onnx", "--out", tmp_path / "d"]
    for t in targets:
        args += ["-t", t]
    res = cli(*args)
    assert res.exit_code == 0, res.stdout
    for t in targets:
        rep = _report(tmp_path / "d" / "cnn" / t)
        m = rep["parity"]["metrics"]["logits"]
        assert rep["parity"]["where"] == "host-proxy" and rep["calibration"]["synthetic"] is False
        assert m["reference_accuracy"] > 0.9, m  # a trained model
        assert m["reference_accuracy"] - m["bundle_accuracy"] <= 0.01 and m["top1_agreement"] >= 0.98
        assert all(c["passed"] for c in rep["checks"])
        print(f"{t}: host-proxy int8 acc {m['bundle_accuracy']:.4f} (ref {m['reference_accuracy']:.4f}), "
              f"agreement {m['top1_agreement']:.4f}, cos p1 {m['sample_cosine_p1']:.5f}")


# ------------------------------------------------------------------------------------------- Q/DQ lint


def _qdq_model(bad: str | None = None):
    """input → Q → DQ → Conv(DQ(int8 weights), bias) → Relu → Q → DQ → output, TensorRT-style unless ``bad``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8)
    wscale = np.full(4, 0.01, np.float32)
    act_zp = np.array(3 if bad == "nonzero_zp" else 0, np.uint8 if bad == "uint8" else np.int8)
    act_scale = np.full(4, 0.02, np.float32) if bad == "per_channel_act" else np.array(0.02, np.float32)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(wscale, "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"), numpy_helper.from_array(act_scale, "a_scale"),
             numpy_helper.from_array(act_zp, "a_zp"), numpy_helper.from_array(np.array(0.02, np.float32), "o_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "o_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "a_scale", "a_zp"], ["xq"], name="q_in", axis=1),
             helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xd"], name="dq_in", axis=1),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=0)]
    if bad == "quantized_bias":
        inits += [numpy_helper.from_array(np.arange(4, dtype=np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 0.0002, np.float32), "b_scale"),
                  numpy_helper.from_array(np.zeros(4, np.int32), "b_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="dq_b", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "b"))
    nodes += [helper.make_node("Conv", ["xd", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"], name="relu"),
              helper.make_node("QuantizeLinear", ["r", "o_scale", "o_zp"], ["rq"], name="q_out"),
              helper.make_node("DequantizeLinear", ["rq", "o_scale", "o_zp"], ["output"], name="dq_out")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])
                                              if bad == "per_channel_act" else
                                              helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    if bad == "per_channel_act":  # 4-channel input so the per-channel activation scale is shape-consistent
        w4 = rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)
        graph.initializer[0].CopyFrom(numpy_helper.from_array(w4, "w_q"))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bad, expected", [
    ("uint8", "UINT8 zero-point"),
    ("nonzero_zp", "non-zero zero-point"),
    ("per_channel_act", "per-channel activation scale"),
    ("quantized_bias", "quantized bias"),
])
def test_qdq_lint_catches_hand_made_bad_qdq(bad, expected):
    from edgepack.backends.tensorrt import qdq

    good = qdq.lint(_qdq_model())
    assert good.passed, good.problems
    assert good.activation_scales == {"input": pytest.approx(0.02), "r": pytest.approx(0.02)}
    lint = qdq.lint(_qdq_model(bad))
    assert not lint.passed and any(expected in p for p in lint.problems), lint.problems


def test_qdq_lint_checks_the_weight_axis():
    import onnx

    from edgepack.backends.tensorrt import qdq

    m = _qdq_model()
    dq_w = next(n for n in m.graph.node if n.name == "dq_w")
    dq_w.attribute[0].CopyFrom(onnx.helper.make_attribute("axis", 1))
    assert any("not the output-channel axis 0" in p for p in qdq.lint(m).problems)


def test_bundled_qdq_passes_the_lint(built):
    import onnx

    from edgepack.backends.tensorrt import qdq

    dist, _ = built
    lint = qdq.lint(onnx.load(str(dist / "jetson-orin-jp6-int8" / "model.qdq.onnx")))
    assert lint.passed and lint.quantized_weighted_ops == lint.weighted_ops == 3


# ------------------------------------------------------------------------------------------- cache


def test_cache_round_trip_and_format(tmp_path):
    from edgepack.backends.tensorrt import cache

    assert cache.version_int("8.5.2") == 8502 and cache.version_int("8.6.2") == 8602
    assert cache.version_int("10.3.0") == 100300 and cache.version_int("10.13.3") == 101303
    assert cache.float_hex(1 / 127) == "3c010204" and cache.hex_float("3c010204") == np.float32(1 / 127)
    scales = {"input": 1.0 / 127, "conv1/out": 6.25 / 127, "logits": np.float32(0.0123).item()}
    path = cache.write(tmp_path / "c.cache", "10.3.0", scales)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and lines[1] == "input: 3c010204"
    header, back = cache.read(path)
    assert header == "TRT-100300-EntropyCalibration2"
    assert back == {k: float(np.float32(v)) for k, v in scales.items()}
    cache.write(tmp_path / "c2.cache", "10.3.0", back)
    assert (tmp_path / "c2.cache").read_bytes() == path.read_bytes()
    tensors = set(scales)
    assert cache.lint(path, "10.3.0", tensors, back).passed
    problems = cache.lint(path, "8.5.2", tensors - {"logits"}, {**back, "input": 0.5, "extra": 0.1}).problems
    text = "\n".join(problems)
    for expected in ("is not 'TRT-8502-EntropyCalibration2'", "'logits' is not in the network",
                     "cache scale 0.007874", "'extra' has no cache entry"):
        assert expected in text, text


def test_bundled_cache_matches_qdq_scales(built):
    import onnx

    from edgepack.backends.tensorrt import cache, qdq

    dist, _ = built
    for target, head in (("jetson-orin-jp6-dla-int8", "TRT-8602-"), ("jetson-orin-jp6-int8", "TRT-100300-")):
        b = dist / target
        header, scales = cache.read(b / "calibration.cache")
        assert header == head + "EntropyCalibration2"
        fmodel, qmodel = onnx.load(str(b / "model.onnx")), onnx.load(str(b / "model.qdq.onnx"))
        want = qdq.float_names(qmodel, fmodel, qdq.lint(qmodel).activation_scales)
        assert scales.keys() == want.keys() and "input" in scales and "logits" in scales
        assert all(np.float32(scales[k]) == np.float32(want[k]) for k in want)


# ------------------------------------------------------------------------------------------- build scripts

FAKE_TRTEXEC = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_LOG"
echo "[I] TensorRT version: 10.3.0"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) echo plan > "${a#--saveEngine=}" ;;
    --exportLayerInfo=*) cat > "${a#--exportLayerInfo=}" <<'JSON'
{"Layers": [{"Name": "conv1", "LayerType": "CaskConvolution", "Outputs": [{"Format/Datatype": "Channel major INT8 format"}]},
            {"Name": "fc", "LayerType": "CaskGemmConvolution", "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}]}]}
JSON
    ;;
  esac
done
"""


def _bundle_copy(built, target, tmp_path) -> Path:
    dist, _ = built
    b = tmp_path / target
    shutil.copytree(dist / target, b)
    return b


def _fake_trtexec(tmp_path) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "trtexec").write_text(FAKE_TRTEXEC)
    (bindir / "trtexec").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "trtexec.args"),
            "EDGEPACK_ENGINE_CACHE": str(tmp_path / "engines")}


def _engine_dir(tmp_path, b: Path) -> Path:
    """Where the scripts put the engine: the cache, outside the signed bundle."""
    import hashlib

    rt = json.loads((b / "manifest.json").read_text())["artifact"]["runtime"]
    digest = hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()[:16]
    return tmp_path / "engines" / f"trt{rt['tensorrt']}-sm{rt['sm']}-{digest}"


@pytest.mark.parametrize("case", ["int8_without_qdq_or_cache", "missing_calib"])
def test_build_engine_sh_refuses_silent_garbage(built, tmp_path, case):
    b = _bundle_copy(built, "jetson-orin-jp6-int8", tmp_path)
    env = _fake_trtexec(tmp_path)
    args = ["--onnx", "model.onnx"] if case == "int8_without_qdq_or_cache" else ["--calib", "nowhere.cache"]
    proc = subprocess.run(["bash", str(b / "build_engine.sh"), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 3
    assert ("fixed dummy ranges" if case == "int8_without_qdq_or_cache" else "random data") in proc.stderr
    assert not (tmp_path / "trtexec.args").exists()  # trtexec never ran
    assert not (tmp_path / "engines").exists()


def test_build_engine_sh_good_case_runs_the_exact_command_and_writes_engine_json(built, tmp_path):
    b = _bundle_copy(built, "jetson-orin-jp6-int8", tmp_path)
    env = _fake_trtexec(tmp_path)
    proc = subprocess.run(["bash", str(b / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "trtexec.args").read_text().split()
    edir = _engine_dir(tmp_path, b)
    expected = json.loads((b / "manifest.json").read_text())["artifact"]["details"]["build"]["trtexec"].replace(
        "$ENGINE_DIR", str(edir)).split()[1:]
    assert argv == expected
    assert (edir / "model.engine").is_file() and bundles.verify(b)  # nothing was added to the signed bundle
    rec = json.loads((edir / "engine.json").read_text())
    import hashlib

    assert rec["tensorrt"] == "10.3.0" and rec["built_with"] == "trtexec"
    assert rec["onnx_sha256"] == hashlib.sha256((b / "model.qdq.onnx").read_bytes()).hexdigest()
    assert rec["command"].split()[1:] == expected and rec["build_seconds"] >= 0
    assert rec["int8_fallback_layers"] == ["fc"] and rec["expected"] == {"tensorrt": "10.3.0", "l4t": "36.4.0",
                                                                         "sm": 87}
    # the calibration cache path is accepted when it exists (DLA profile)
    d = _bundle_copy(built, "jetson-orin-jp6-dla-int8", tmp_path)
    proc = subprocess.run(["bash", str(d / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--calib=calibration.cache" in (tmp_path / "trtexec.args").read_text().split()


STUB_TRT = '''
"""A stand-in for the tensorrt package: records every call into $STUB_LOG (JSON lines)."""
import json, os
__version__ = os.environ.get("STUB_TRT_VERSION", "10.3.0")
def _log(*a):
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps([str(x) for x in a]) + "\\n")
_log("import")
class _Enum:
    def __init__(self, prefix): self.prefix = prefix
    def __getattr__(self, k): return f"{self.prefix}.{k}"
class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1
BuilderFlag = _Enum("BuilderFlag"); MemoryPoolType = _Enum("MemoryPoolType"); DeviceType = _Enum("DeviceType")
ProfilingVerbosity = _Enum("ProfilingVerbosity"); LayerInformationFormat = _Enum("LayerInformationFormat")
class Logger:
    WARNING = 2
    def __init__(self, *a): pass
class IInt8EntropyCalibrator2:
    def __init__(self): pass
class _TimingCache:
    def serialize(self): return b"tc"
class _Config:
    def __init__(self): self.flags = []
    def set_memory_pool_limit(self, pool, size): _log("pool", pool, size)
    def set_flag(self, f): _log("flag", f)
    def create_timing_cache(self, data): return _TimingCache()
    def set_timing_cache(self, c, ignore_mismatch): pass
    def get_timing_cache(self): return _TimingCache()
    def add_optimization_profile(self, p): _log("profile")
    def __setattr__(self, k, v):
        if k == "int8_calibrator": _log("calibrator", v.read_calibration_cache()[:40].decode())
        elif k in ("DLA_core", "default_device_type"): _log(k, v)
        object.__setattr__(self, k, v)
class _Parser:
    num_errors = 0
    def __init__(self, net, logger): pass
    def parse_from_file(self, path): _log("parse", os.path.basename(path)); return True
class Builder:
    def __init__(self, logger): _log("Builder")
    def create_network(self, flags): _log("network_flags", flags); return object()
    def create_builder_config(self): return _Config()
    def create_optimization_profile(self): return self
    def set_shape(self, *a): _log("shape", *a)
    def build_serialized_network(self, net, config): _log("build"); return b"PLAN"
OnnxParser = _Parser
class _Inspector:
    def get_engine_information(self, fmt):
        return json.dumps({"Layers": [{"Name": "conv1", "LayerType": "Convolution",
                                       "Outputs": [{"Format/Datatype": "Int8"}]}]})
class _Engine:
    def create_engine_inspector(self): return _Inspector()
class Runtime:
    def __init__(self, logger): pass
    def deserialize_cuda_engine(self, data): _log("deserialize"); return _Engine()
'''


def _stub_env(tmp_path, version="10.3.0") -> dict:
    stub = tmp_path / "stub"
    (stub / "tensorrt").mkdir(parents=True, exist_ok=True)
    (stub / "tensorrt" / "__init__.py").write_text(STUB_TRT)
    return {**os.environ, "PYTHONPATH": str(stub), "STUB_LOG": str(tmp_path / "trt.log"),
            "STUB_TRT_VERSION": version, "EDGEPACK_ENGINE_CACHE": str(tmp_path / "engines")}


def _calls(tmp_path) -> list[list[str]]:
    p = tmp_path / "trt.log"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


@pytest.mark.parametrize("case", ["int8_without_qdq_or_cache", "missing_calib"])
def test_build_engine_py_refuses_silent_garbage_before_importing_tensorrt(built, tmp_path, case):
    b = _bundle_copy(built, "jetson-orin-jp6-int8", tmp_path)
    args = ["--onnx", "model.onnx"] if case == "int8_without_qdq_or_cache" else ["--calib", "nowhere.cache"]
    proc = subprocess.run([sys.executable, str(b / "build_engine.py"), *args], capture_output=True, text=True,
                          env=_stub_env(tmp_path))
    assert proc.returncode == 3
    assert ("fixed dummy ranges" if case == "int8_without_qdq_or_cache" else "random data") in proc.stderr
    assert _calls(tmp_path) == []  # tensorrt was never imported, let alone asked to build


@pytest.mark.parametrize("target, version, expect", [
    ("jetson-orin-jp6-int8", "10.3.0", [["network_flags", "2"], ["parse", "model.qdq.onnx"]]),
    ("jetson-orin-jp5-int8", "8.5.2", [["network_flags", "1"], ["parse", "model.qdq.onnx"], ["flag", "BuilderFlag.FP16"],
                                       ["flag", "BuilderFlag.INT8"]]),
    ("jetson-orin-jp6-dla-int8", "8.6.2", [["parse", "model.onnx"], ["flag", "BuilderFlag.INT8"],
                                           ["calibrator", "TRT-8602-EntropyCalibration2\ninput: 3c01"],
                                           ["default_device_type", "DeviceType.DLA"], ["DLA_core", "0"],
                                           ["flag", "BuilderFlag.GPU_FALLBACK"]]),
])
def test_build_engine_py_good_case_settings(built, tmp_path, target, version, expect):
    b = _bundle_copy(built, target, tmp_path)
    proc = subprocess.run([sys.executable, str(b / "build_engine.py")], capture_output=True, text=True,
                          env=_stub_env(tmp_path, version))
    assert proc.returncode == 0, proc.stderr
    calls = _calls(tmp_path)
    for e in expect:
        assert e in calls, (e, calls)
    if "--stronglyTyped" in json.loads((b / "manifest.json").read_text())["artifact"]["details"]["build"]["trtexec"]:
        assert ["flag", "BuilderFlag.INT8"] not in calls and ["flag", "BuilderFlag.FP16"] not in calls
    edir = _engine_dir(tmp_path, b)
    rec = json.loads((edir / "engine.json").read_text())
    assert rec["tensorrt"] == version and rec["built_with"] == "python-api"
    assert (edir / "model.engine").read_bytes() == b"PLAN" and bundles.verify(b)


# ------------------------------------------------------------------------------------------- device loader


def _device_module(b: Path):
    spec = importlib.util.spec_from_file_location("trt_device_under_test", b / "runner" / "device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_device_loader_refuses_a_plan_from_another_device_before_deserializing(built, tmp_path, monkeypatch):
    b = _bundle_copy(built, "jetson-orin-jp6-int8", tmp_path)
    env = _stub_env(tmp_path, "10.3.0")
    monkeypatch.syspath_prepend(env["PYTHONPATH"])
    monkeypatch.setenv("STUB_LOG", env["STUB_LOG"])
    monkeypatch.setenv("STUB_TRT_VERSION", "10.3.0")
    assert "tensorrt" not in sys.modules
    dev = _device_module(b)

    class FakeCuda:
        stream = None

        def sm(self):
            return 72  # a Xavier, while the plan says sm_87

    monkeypatch.setattr(dev, "Cuda", FakeCuda)
    monkeypatch.setattr(dev, "l4t_release", lambda: "36.4.0")
    (b / "model.engine").write_bytes(b"PLAN")
    (b / "engine.json").write_text(json.dumps({"tensorrt": "10.3.0", "sm": 87, "l4t": "36.4.0"}))
    art = json.loads((b / "manifest.json").read_text())["artifact"]
    try:
        with pytest.raises(RuntimeError, match=r"refused to deserialize model.engine: .*sm 87 \(plan\) != 72 "
                                               r"\(device\)"):
            dev.load(b, art, art["runtime"], 1)
    finally:
        sys.modules.pop("tensorrt", None)  # the stub
    assert ["import"] in _calls(tmp_path) and ["deserialize"] not in _calls(tmp_path)
    assert dev.mismatches({"tensorrt": "10.3.0.26", "sm": 87, "l4t": None}, {"tensorrt": "10.3.0", "sm": 87,
                                                                             "l4t": "36.4.0"}) == []


def test_device_loader_without_tensorrt_is_runtime_unavailable(built):
    dist, _ = built
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    b = dist / "jetson-orin-jp6-fp16"
    art = json.loads((b / "manifest.json").read_text())["artifact"]
    with pytest.raises(ImportError):
        _device_module(b).load(b, art, art["runtime"], 1)


# ------------------------------------------------------------------------------------------- GPU


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed"
    spec = importlib.util.spec_from_file_location("trt_device_probe", PKG / "device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        mod.Cuda()
    except Exception as e:  # noqa: BLE001
        return f"no CUDA runtime/GPU: {e}"
    return None


@pytest.mark.gpu
def test_gpu_builds_and_runs_an_engine(built, tmp_path):
    """Where a CUDA GPU and the tensorrt pip package exist: build the engine with the bundle's build_engine.py and
    run the golden inputs through runner/device.py; parity by edgepack's own core. Skipped (with the reason) here."""
    reason = _gpu_reason()
    if reason:
        pytest.skip(f"gpu test skipped: {reason}")
    b = _bundle_copy(built, "jetson-orin-jp6-fp16", tmp_path)
    proc = subprocess.run([sys.executable, str(b / "build_engine.py")], capture_output=True, text=True, cwd=b)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((b / "engine.json").read_text())
    assert rec["built_with"] == "python-api" and rec["layers"]
    dev = _device_module(b)
    art = json.loads((b / "manifest.json").read_text())["artifact"]
    infer, facts = dev.load(b, art, art["runtime"], 1)
    from edgepack.core.batching import run_batched
    from edgepack.core.npz import load_npz

    inputs, golden = load_npz(b / "golden" / "inputs.npz"), load_npz(b / "golden" / "outputs.npz")
    out = run_batched(infer, inputs, 1)
    agree = np.mean(out["logits"].argmax(1) == golden["logits"].argmax(1))
    assert facts["runtime"].startswith("tensorrt ") and agree >= 0.98


# ------------------------------------------------------------------------------------------- search, fp16 scan


def test_accuracy_aware_qdq_keeps_the_most_drifting_layer_float(tmp_path, cli):
    model = make_layernorm_onnx(tmp_path / "ln.onnx")
    prof = tmp_path / "ac.toml"
    prof.write_text((REPO / "targets" / "jetson-orin-jp6-int8.toml").read_text()
                    + "\n[options.accuracy_control]\nmax_drop = 0.0\nmax_iterations = 1\n")
    res = cli("build", model, "-t", prof, "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = _report(tmp_path / "d" / "ln" / "ac")
    ac = rep["artifact"]["int8"]["accuracy_control"]
    assert len(ac["steps"]) == 2 and ac["steps"][0]["excluded"] == [] and len(ac["kept_float"]) == 1
    assert ac["steps"][1]["top1_agreement"] >= ac["steps"][0]["top1_agreement"]
    import onnx

    from edgepack.backends.tensorrt import qdq

    lint = qdq.lint(onnx.load(str(tmp_path / "d" / "ln" / "ac" / "model.qdq.onnx")))
    assert lint.passed and lint.quantized_weighted_ops == 1 and lint.weighted_ops == 2


def test_dwsilu_int8_holds_agreement_on_the_independent_holdout(trained_dwsilu, tmp_path, cli):
    """The depthwise/SiLU residual network: explicit Q/DQ INT8 (host proxy) keeps ≥ 98% top-1 agreement and ≤ 1
    point accuracy loss on the holdout, with the accuracy search's record in the report."""
    res = cli("build", trained_dwsilu / "dwsilu.onnx", "-t", "jetson-orin-jp6-int8", "-c", "digits",
              "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = _report(tmp_path / "d" / "dwsilu" / "jetson-orin-jp6-int8")
    m = rep["parity"]["metrics"]["logits"]
    assert m["top1_agreement"] >= 0.98 and m["accuracy_drop"] <= 0.01 and rep["parity"]["samples"] == 400
    s = rep["artifact"]["accuracy_search"]
    assert s["trials"][0]["recipe"] == "minmax" and "tuning" in s["split"] and s["met_budget_on_tuning"]
    assert rep["calibration"]["tuning_samples"] == 256


def test_unmeetable_int8_budget_fails_naming_the_best_recipe(trained_dwsilu, tmp_path, cli):
    prof = tmp_path / "strict.toml"
    prof.write_text((REPO / "targets" / "jetson-orin-jp6-int8.toml").read_text()
                    .replace("min_top1_agreement = 0.98", "min_top1_agreement = 1.0\nmin_cosine = 0.99999")
                    + "\n[options.accuracy_search]\nmax_float_layers = 1\ntime_limit_s = 90\n")
    res = cli("build", trained_dwsilu / "dwsilu.onnx", "-t", prof, "-c", "digits", "--out", tmp_path / "d")
    assert res.exit_code == 1, res.stdout + res.stderr
    rep = _report(tmp_path / "d" / "dwsilu" / "strict")
    s = rep["artifact"]["accuracy_search"]
    tried = [t["recipe"] for t in s["trials"] if t["stage"] == "recipe"]
    assert tried[0] == "minmax" and "percentile-99.999" in tried and not s["met_budget_on_tuning"]
    row = next(c for c in rep["checks"] if c["name"] == "accuracy_search.met_budget_on_tuning")
    assert not row["passed"] and f"best: recipe '{s['chosen']['recipe']}'" in row["note"]


def test_fp16_overflow_scan_flags_activations_beyond_65504(tmp_path, cli):
    import onnx
    from onnx import helper, numpy_helper

    model = make_tiny_onnx(tmp_path / "big.onnx")
    m = onnx.load(str(model))
    m.graph.initializer.append(numpy_helper.from_array(np.array(1e6, np.float32), "huge"))
    m.graph.initializer.append(numpy_helper.from_array(np.array(1e-6, np.float32), "tiny"))
    fc = next(n for n in m.graph.node if n.name == "fc")
    fc.output[0] = "logits_raw"
    i = list(m.graph.node).index(fc)
    m.graph.node.insert(i + 1, helper.make_node("Mul", ["logits_raw", "huge"], ["big"], name="blow_up"))
    m.graph.node.insert(i + 2, helper.make_node("Mul", ["big", "tiny"], ["logits"], name="scale_back"))
    onnx.save(m, str(model))
    res = cli("build", model, "-t", "jetson-orin-jp6-fp16", "--out", tmp_path / "d")
    assert res.exit_code == 1
    rep = _report(tmp_path / "d" / "big" / "jetson-orin-jp6-fp16")
    row = next(c for c in rep["checks"] if c["name"].startswith("trt: fp16 overflow scan"))
    assert not row["passed"] and row["measured"] >= 1 and "'big'" in row["note"], row


def test_check_reruns_host_proxy_parity_and_keeps_the_host_rows(built, tmp_path, cli):
    dist, _ = built
    b = tmp_path / "b"
    shutil.copytree(dist / "jetson-orin-jp6-dla-int8", b)
    res = cli("check", b)
    assert res.exit_code == 0, res.stdout
    rep = _report(b)
    assert rep["parity"]["where"] == "host-proxy" and "host-proxy" in res.stdout
    assert [c["name"] for c in rep["checks"]][:2] == ["integrity (sha256 of every file)",
                                                     "trt: opset/IR within the profile"]


def test_torch_source_is_bridged_once_and_passes(trained_digits, tmp_path, cli):
    res = cli("build", "examples/digits.py:make_cnn", "--weights", trained_digits / "cnn.pt",
              "--input", "input=1x1x32x32", "-t", "jetson-orin-jp6-fp16", "-t", "jetson-orin-jp6-int8",
              "--out", tmp_path / "d")
    assert res.exit_code == 0, res.stdout + res.stderr
    for t in ("jetson-orin-jp6-fp16", "jetson-orin-jp6-int8"):
        rep = _report(tmp_path / "d" / "make_cnn-cnn" / t)
        assert rep["status"] == "passed" and "bridged torch → onnx" in rep["notes"]
        assert rep["parity"]["where"] == "host-proxy"


def test_residual_add_gets_qdq_on_both_inputs(tmp_path):
    """TensorRT fuses a residual Add into the preceding convolution when both its inputs come through Q/DQ."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.backends.tensorrt import qdq

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w0", (8, 1, 3, 3)), ("w1", (8, 8, 3, 3)), ("w2", (8, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["a"], pads=[1] * 4, name="c0"),
             helper.make_node("Relu", ["a"], ["ar"], name="r0"),
             helper.make_node("Conv", ["ar", "w1"], ["b"], pads=[1] * 4, name="c1"),
             helper.make_node("Relu", ["b"], ["br"], name="r1"),
             helper.make_node("Conv", ["br", "w2"], ["c"], pads=[1] * 4, name="c2"),
             helper.make_node("Add", ["c", "ar"], ["s"], name="res_add"),
             helper.make_node("Relu", ["s"], ["out"], name="r2")]
    graph = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "res.onnx"))
    calibration = {"input": rng.standard_normal((16, 1, 16, 16)).astype(np.float32)}
    qdq.quantize(tmp_path / "res.onnx", tmp_path / "res.qdq.onnx", calibration, 1)
    lint = qdq.lint(onnx.load(str(tmp_path / "res.qdq.onnx")))
    assert lint.passed and lint.residual_adds == {"res_add": 2} and lint.quantized_weighted_ops == 3


def test_optimization_profile_follows_the_input_declarations():
    """An ONNX input ?x3x?x? declared --input x=1x3x48x192 (or with dims=AXIS:MIN/OPT/MAX) gets that profile; an
    undeclared dynamic spatial axis is refused with the exact --input to pass."""
    from onnx import TensorProto, helper

    from edgepack.backends import registry
    from edgepack.backends.tensorrt.convert import _shapes
    from edgepack.config import load_profile
    from edgepack.errors import ConfigError
    from edgepack.signature import TensorSpec

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    model = helper.make_model(g)
    opts = registry.resolve(load_profile("jetson-orin-jp6-fp16")).options
    shapes, problems = _shapes(model, opts, (TensorSpec("x", (1, 3, 48, 192)),))
    assert shapes["x"] == {"min": [1, 3, 48, 192], "opt": [1, 3, 48, 192], "max": [1, 3, 48, 192]} and not problems
    spec = TensorSpec("x", (None, 3, None, None), dims=((2, 32, 48, 64), (3, 96, 192, 320)))
    shapes, _ = _shapes(model, opts, (spec,))
    assert shapes["x"] == {"min": [1, 3, 32, 96], "opt": [1, 3, 48, 192], "max": [opts.max_batch, 3, 64, 320]}
    with pytest.raises(ConfigError, match="beyond the batch") as e:
        _shapes(model, opts, ())
    assert "--input 'x=...,dims=2:MIN/OPT/MAX,dims=3:MIN/OPT/MAX'" in e.value.hint  # every undeclared axis, one hint
    assert "(axes 2, 3)" in e.value.message
    with pytest.raises(ConfigError) as e:  # a declared axis is not asked for again
        _shapes(model, opts, (TensorSpec("x", (None, 3, None, None), dims=((2, 32, 48, 64),)),))
    assert "dims=3:MIN/OPT/MAX'" in e.value.hint and "dims=2" not in e.value.hint


def _ctc_onnx(path: Path) -> Path:
    """A tiny CTC-style recognizer returning (T, B, C) = (22, 1, 12): its last Reshape takes its target from Shape
    ops, and its ONNX declares a wrong output shape (1, 264), as a real recognizer's export did."""
    torch = pytest.importorskip("torch")
    import onnx
    from torch import nn

    class Ctc(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.col = nn.Conv2d(16, 16, (8, 1))
            self.fc = nn.Linear(16, 12)

        def forward(self, x):
            y = self.col(torch.relu(self.conv(x)))  # (B, 16, 1, W)
            b, c, h, w = y.shape
            y = self.fc(y.reshape(b, c * h, w).permute(2, 0, 1))  # (T, B, C)
            t, b2, k = y.shape
            return y.softmax(-1).reshape(t, b2, k)

    tmp = path.with_suffix(".export.onnx")
    torch.onnx.export(Ctc().eval(), (torch.randn(1, 3, 8, 22),), str(tmp), input_names=["x"],
                      output_names=["probs"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "b", 3: "w"}, "probs": {0: "t", 1: "b"}})
    m = onnx.load(str(tmp))
    tmp.unlink()
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 8, 22)):
        d.Clear()
        d.dim_value = v
    out = m.graph.output[0].type.tensor_type.shape.dim
    del out[:]
    for v in (1, 22 * 12):  # the wrong declaration
        out.add().dim_value = v
    onnx.save(m, str(path))
    return path


def test_ctc_output_shape_is_kept_and_jetson_int8_profiles_share_one_search(tmp_path, cli):
    """onnxslim folded the Shape-derived Reshape to the wrong declared shape ((22, 1, 12) → (1, 264)); the
    declaration is dropped and the ready model keeps the source's shapes. The two Jetson INT8 profiles quantize the
    same problem: the second reuses the first one's search (one trial) instead of searching again."""
    import onnxruntime as ort

    model = _ctc_onnx(tmp_path / "ctc.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal((120, 3, 8, 22)).astype(np.float32))
    res = cli("build", model, "-t", "jetson-orin-jp6-int8", "-t", "jetson-orin-jp7-int8", "-c", tmp_path / "cal.npz",
              "--out", tmp_path / "d", "--output", "probs=sequence,batch_axis=1")  # time-first: (T, B, C)
    assert res.exit_code in (0, 1), res.stdout + res.stderr
    first, second = (_report(tmp_path / "d" / "ctc" / t) for t in ("jetson-orin-jp6-int8", "jetson-orin-jp7-int8"))
    x = np.zeros((1, 3, 8, 22), np.float32)
    for rep, t in ((first, "jetson-orin-jp6-int8"), (second, "jetson-orin-jp7-int8")):
        a = rep["artifact"]
        assert a["declared_output_shapes_dropped"] == ["probs: declared [1, 264], runs as [22, 1, 12]"]
        assert a["output_shapes"] == "kept: probs [22, 1, 12]"
        assert not any(c["name"].startswith("output ") for c in rep["checks"])  # no structural row failed
        for f in ("model.onnx", "model.qdq.onnx"):
            sess = ort.InferenceSession(str(tmp_path / "d" / "ctc" / t / f), providers=["CPUExecutionProvider"])
            assert sess.run(None, {"x": x})[0].shape == (22, 1, 12), f
    s1, s2 = first["artifact"]["accuracy_search"], second["artifact"]["accuracy_search"]
    assert s1["problem"] == s2["problem"] and len(s1["trials"]) >= 1
    assert [t["stage"] for t in s2["trials"]] == ["reused"]
    assert s2["reason"].startswith("same quantization problem as target jetson-orin-jp6-int8")
    assert s2["chosen"]["recipe"] == s1["chosen"]["recipe"]
    assert s2["chosen"]["float_layers"] == s1["chosen"]["float_layers"]

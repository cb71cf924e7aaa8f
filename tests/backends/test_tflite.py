"""TFLite backend: profiles, refusals, Keras builds with host parity, the device loader against the host runner,
Flex/custom-op refusal, silent-float detection, calibration sanity (holdout ranges only), the litert-torch fp32
cache key, and (slow) Keras/SavedModel/PyTorch × fp32/fp16/int8 bundles of the digits CNN on real data.

Tiny models are generated at test time in a worker process (this process imports neither TensorFlow nor torch).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from edgepack import bundle as bundles  # noqa: E402
from edgepack import pipeline  # noqa: E402
from edgepack.artifact import Artifact, ConvertData  # noqa: E402
from edgepack.backends import registry  # noqa: E402
from edgepack.config import load_profile  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from edgepack.errors import ConfigError, EdgepackError, UnsupportedConversion  # noqa: E402
from edgepack.isolation import run_isolated  # noqa: E402
from edgepack.signature import TensorSpec  # noqa: E402
from edgepack.sources import Source  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEVICE_PY = REPO / "edgepack" / "backends" / "tflite" / "device.py"
TFLITE_TARGETS = ("android-tflite-fp32", "android-tflite-fp16", "android-tflite-int8", "android-tflite-int8-io",
                  "android-tflite-int8-dynamic")


# ------------------------------------------------------------------------------------------ worker-side helpers


def _make_models(folder: str) -> None:
    """Tiny models for the fast tests (runs in a worker: imports TensorFlow)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    d = Path(folder)
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4, name="scores")(x)
    model = keras.Model(inp, out)
    # sharpen the random model so its top-1 is decisive (parity on near-ties measures noise, not conversion)
    w, b = model.get_layer("scores").get_weights()
    model.get_layer("scores").set_weights([w * 8.0, b])
    model.save(d / "tiny.keras")

    class Flex(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 3, 3), tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.linalg.det(x)[:, None] + tf.reduce_sum(x, axis=[1, 2])[:, None]}

    flex = Flex()
    tf.saved_model.save(flex, str(d / "flex_savedmodel"), signatures={"serving_default": flex.serve})

    inp3 = keras.Input((4, 8, 8, 1), name="volume")
    y = keras.layers.Conv3D(4, 3, padding="same")(inp3)
    y = keras.layers.GlobalAveragePooling3D(name="pooled")(y)
    keras.Model(inp3, y).save(d / "conv3d.keras")


def _convert_jobs(jobs: list[tuple[Source, str, ConvertData, str]]) -> list[dict]:
    """Run several backend.convert calls in one worker; errors come back as values."""
    out = []
    for source, target, data, folder in jobs:
        Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            t = registry.resolve(load_profile(target))
            art = t.backend.convert(source, t.profile, t.options, data, Path(folder))
            out.append({"artifact": art.to_dict()})
        except EdgepackError as e:
            out.append({"error": type(e).__name__, "message": e.message, "hint": e.hint})
    return out


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tflite-models")
    run_isolated(_make_models, str(d), what="making tiny TensorFlow models")
    return d


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random 8x8 'images' in [0, 1] (NHWC)."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 4, 4, 1)).astype(np.float32)
    return np.clip(base.repeat(2, 1).repeat(2, 2) + 0.05 * rng.standard_normal((n, 8, 8, 1)), 0, 1).astype(np.float32)


def _data(calibration: dict[str, np.ndarray], holdout: dict[str, np.ndarray]) -> ConvertData:
    """What the pipeline hands a backend: the calibration split and only the holdout's ranges."""
    return ConvertData(calibration=calibration, holdout_ranges=ConvertData.ranges(holdout))


def _profile(folder: Path, name: str, body: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(body)
    return str(path)


TINY = Source(kind="tf", format="keras", path="", name="tiny", inputs=(TensorSpec("image", (None, 8, 8, 1)),),
              outputs=(TensorSpec("scores", (None, 4)),))


# ------------------------------------------------------------------------------------------ no framework needed


def test_registered_with_profiles_and_tolerances():
    from edgepack.parity.tolerances import TOLERANCES

    backend = registry.get("tflite")
    assert backend.accepts == {"tf", "torch"}
    for name in TFLITE_TARGETS:
        p = load_profile(name)
        assert p.backend == "tflite"
        assert ("tflite", p.precision) in TOLERANCES and TOLERANCES[("tflite", p.precision)].reason
    assert set(backend.precisions) <= {prec for (b, prec) in TOLERANCES if b == "tflite"}
    assert backend.device_file() == DEVICE_PY and DEVICE_PY.is_file()
    assert {t: backend.needs_calibration(load_profile(t), None) for t in TFLITE_TARGETS} == {
        "android-tflite-fp32": False, "android-tflite-fp16": False, "android-tflite-int8": True,
        "android-tflite-int8-io": True, "android-tflite-int8-dynamic": False}
    # the calibrated int8 profiles search on the tuning split (options.accuracy_search is on by default)
    tunes = {t: backend.tunes_on_data(load_profile(t), registry.resolve(load_profile(t)).options)
             for t in TFLITE_TARGETS}
    assert tunes == {"android-tflite-fp32": False, "android-tflite-fp16": False, "android-tflite-int8": True,
                     "android-tflite-int8-io": True, "android-tflite-int8-dynamic": False}
    assert registry.resolve(load_profile("android-tflite-int8")).options.io_type == "float32"
    assert registry.resolve(load_profile("android-tflite-int8-io")).options.io_type == "int8"


def test_device_loader_is_numpy_and_litert_only():
    tree = ast.parse(DEVICE_PY.read_text())
    imported = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert imported <= {"__future__", "pathlib", "importlib", "numpy", "ai_edge_litert", "tflite_runtime"}, imported


def test_runtime_spec_is_the_io_description():
    backend = registry.get("tflite")
    io = {"tflite_name": "serving_default_image:0", "dtype": "int8", "scale": 0.5, "zero_point": -3, "transpose": True}
    spec = backend.Runtime(inputs=[io], outputs=[{**io, "tflite_name": "out", "transpose": False}])
    dumped = spec.model_dump(mode="json")
    assert dumped["signature"] == "serving_default" and dumped["inputs"] == [io] and dumped["flex_ops"] == []
    with pytest.raises(ValidationError):
        backend.Runtime(inputs=[{**io, "shape": [1, 2]}], outputs=[])


def test_package_has_no_import_cycle():
    """No module of the package imports the package's __init__ (not even for type checking, not even inside a
    function): the __init__ imports convert/runner lazily and spec at module level, so any such import is a cycle."""
    folder = DEVICE_PY.parent
    package = "edgepack.backends.tflite"
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        targets = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert package not in targets, path.name
        assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), path.name
        if path.name in ("flatbuffer.py", "metadata.py", "spec.py", "device.py"):  # helpers: never the workers' code
            assert not targets & {f"{package}.convert", f"{package}.runner"}, path.name
    assert f"{package}.metadata" not in (folder / "flatbuffer.py").read_text()


def test_unknown_option_is_refused_with_suggestion(tmp_path):
    path = _profile(tmp_path, "bad", 'backend = "tflite"\nprecision = "int8"\n[options]\nio_typ = "int8"\n')
    with pytest.raises(ConfigError) as e:
        registry.resolve(load_profile(path))
    assert "io_typ" in e.value.message and "io_type" in e.value.hint


def test_onnx_source_refused_naming_the_routes(tmp_path):
    src = Source(kind="onnx", format="onnx", path="m.onnx", name="m", inputs=(TensorSpec("x", (1, 3)),))
    t = registry.resolve(load_profile("android-tflite-fp32"))
    with pytest.raises(UnsupportedConversion) as e:
        t.backend.convert(src, t.profile, t.options, ConvertData(), tmp_path)
    # the pipeline bridges ONNX sources (onnx → torch); a direct convert call names that route and its extra
    assert "onnx → torch bridge" in e.value.hint and "onnx2torch" in e.value.hint and "Keras" in e.value.hint
    assert t.backend.refusals["onnx"] == e.value.hint


def test_runner_transposes_and_dequantizes_at_its_edges():
    from edgepack.backends.tflite.device import dequantize, from_file_layout, quantize, to_file_layout

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert to_file_layout(x).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(from_file_layout(to_file_layout(x)), x)
    v = np.linspace(-1, 1, 11, dtype=np.float32)
    q = quantize(v, "int8", 1 / 127, 0)
    assert q.dtype == np.int8 and np.abs(dequantize(q, 1 / 127, 0) - v).max() <= 0.5 / 127 + 1e-7


# ------------------------------------------------------------------------------------------ Keras build (fast)


def test_keras_fp32_and_int8_bundles_pass_parity_verify_and_device_runner(models, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, image=_images(800))  # 400 held out: enough to prove the fp32 row's 99 % top-1 agreement
    tdir = tmp_path / "targets"
    _profile(tdir, "t-fp32", 'backend = "tflite"\nprecision = "fp32"\n')
    _profile(tdir, "t-int8", 'backend = "tflite"\nprecision = "int8"\nmin_calibration_samples = 100\n'
                             '[options]\nio_type = "int8"\nmin_quantized_share = 1.0\n')
    results = pipeline.build(str(models / "tiny.keras"), ["t-fp32", "t-int8"], calibration=str(data),
                             out=tmp_path / "dist", targets_dir=tdir)
    assert [r.status for r in results] == ["passed", "passed"], [r.checks for r in results]
    for r in results:
        bundle = Path(r.bundle)
        assert bundles.verify(bundle)
        art = bundles.read_manifest(bundle).artifact.to_dict()
        assert art["primary"] == "model.tflite" and art["layout"] == "nhwc" and art["files"] == ["model.tflite"]
        assert art["inputs"][0]["name"] == "image" and art["outputs"][0]["name"] == "scores"
        assert (bundle / "runner" / "device.py").read_bytes() == DEVICE_PY.read_bytes()
        run = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), "--repeats", "3"],
                             capture_output=True, text=True, timeout=300)
        verdict = json.loads(run.stdout)
        assert run.returncode == 0 and verdict["passed"], run.stdout + run.stderr
        assert verdict["runtime"]["runtime"].startswith(("ai_edge_litert", "tflite_runtime"))
        assert r.latency.runtime["delegate"] == "XNNPACK"  # counted once the signature has run
    int8 = bundles.read_manifest(Path(results[1].bundle)).artifact.to_dict()
    for name in ("image", "scores"):
        q = int8["quantization"][name]
        assert q["dtype"] == "int8" and q["scale"] > 0 and isinstance(q["zero_point"], int)
        ios = int8["runtime"]["inputs"] + int8["runtime"]["outputs"]
        rec = next(io for io in ios if io["tflite_name"] == q["tflite_name"])
        assert (rec["dtype"], rec["scale"], rec["zero_point"]) == ("int8", q["scale"], q["zero_point"])
        assert rec["transpose"] is False
    assert int8["details"]["quantized_share"] == 1.0 and "quantized_share" not in int8["runtime"]
    assert results[1].artifact["quantized_share"] == 1.0  # the report carries the converter's details
    assert any(n.startswith("tensorflow ") for n in results[1].notes)
    fp32_size = results[0].size_bytes
    assert results[1].size_bytes < fp32_size


@pytest.fixture(scope="module")
def converted(models, tmp_path_factory) -> dict[str, tuple[Artifact, Path, dict]]:
    """The tiny Keras model converted for fp32 and int8 (int8 I/O) by Backend.convert in one worker (no pipeline)."""
    d = tmp_path_factory.mktemp("tflite-convert")
    tdir = d / "targets"
    fp32 = _profile(tdir, "fp32", 'backend = "tflite"\nprecision = "fp32"\n')
    int8 = _profile(tdir, "int8", 'backend = "tflite"\nprecision = "int8"\n[options]\nio_type = "int8"\n')
    tiny = Source(**{**TINY.__dict__, "path": str(models / "tiny.keras")})
    holdout = {"image": _images(24, seed=5)}
    data = _data({"image": _images(120, seed=2)}, holdout)
    jobs = {"fp32": (fp32, d / "fp32"), "int8": (int8, d / "int8")}
    results = run_isolated(_convert_jobs, [(tiny, p, data, str(f)) for p, f in jobs.values()],
                           what="tiny tflite conversions")
    return {k: (Artifact.model_validate(r["artifact"]), f, holdout) for (k, (_, f)), r in zip(jobs.items(), results)}


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_device_loader_matches_host_runner(converted, kind):
    """The bundle's device.py (loaded by path, as run_bundle.py does) gives bit-identical outputs to the host
    runner, which runs that same loader."""
    art, folder, holdout = converted[kind]
    backend = registry.get("tflite")
    assert backend.runtime_spec(art).signature == "serving_default"
    spec = importlib.util.spec_from_file_location("edgepack_tflite_device_test", DEVICE_PY)
    device = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device)
    infer, facts = device.load(folder, art.to_dict(), art.to_dict()["runtime"], 1)
    assert facts["runtime"].startswith(("ai_edge_litert", "tflite_runtime")) and facts["threads"] == 1
    with backend.runner(art, folder, threads=1) as r:
        for i in range(len(holdout["image"])):
            feed = {"image": holdout["image"][i:i + 1]}
            host, dev = r.infer(feed), infer(feed)
            assert host.keys() == dev.keys() == {"scores"}
            assert host["scores"].dtype == dev["scores"].dtype == np.float32  # int8 I/O dequantized at the edge
            assert np.array_equal(host["scores"], dev["scores"])
            assert np.array_equal(r.infer_for_latency(feed)["scores"], host["scores"])
        assert r.facts["delegate"] == facts["delegate"] == "XNNPACK"


def test_convert_splits_runtime_details_and_notes(converted):
    art, folder, _ = converted["int8"]
    assert art.files == ["model.tflite"] and sorted(p.name for p in folder.iterdir()) == ["model.tflite"]
    assert set(art.runtime) == {"signature", "inputs", "outputs", "flex_ops"}
    (inp,), (out,) = art.runtime["inputs"], art.runtime["outputs"]
    assert set(inp) == {"tflite_name", "dtype", "scale", "zero_point", "transpose"}
    assert inp["dtype"] == out["dtype"] == "int8" and inp["scale"] > 0 and inp["transpose"] is False
    assert {"convert_s", "ops", "weight_bytes", "quantized_share", "model_name"} <= set(art.details)
    assert art.details["model_name"] == "tiny" and "io" not in art.details and "notes" not in art.details
    assert art.notes[0].startswith("tensorflow ") and "representative dataset: 120 calibration samples" in art.notes


# ------------------------------------------------------------------------------------------ refusals and checks


@pytest.fixture(scope="module")
def refusals(models, tmp_path_factory) -> dict[str, dict]:
    """Every refusal/warning scenario converted in one worker (one TensorFlow start-up)."""
    d = tmp_path_factory.mktemp("tflite-refusals")
    tdir = d / "targets"
    fp32 = _profile(tdir, "fp32", 'backend = "tflite"\nprecision = "fp32"\n')
    flex_ok = _profile(tdir, "flex", 'backend = "tflite"\nprecision = "fp32"\n[options]\nallow_flex_ops = true\n')
    strict = _profile(tdir, "strict", 'backend = "tflite"\nprecision = "int8"\n')
    fallback = _profile(tdir, "fallback", 'backend = "tflite"\nprecision = "int8"\n[options]\nfloat_fallback = true\n')
    int8_io = _profile(tdir, "int8io", 'backend = "tflite"\nprecision = "int8"\n[options]\nio_type = "int8"\n')
    flex = Source(kind="tf", format="savedmodel", path=str(models / "flex_savedmodel"), name="flex",
                  signature="serving_default", inputs=(TensorSpec("x", (None, 3, 3)),), outputs=(TensorSpec("y", (None, 1)),))
    conv3d = Source(kind="tf", format="keras", path=str(models / "conv3d.keras"), name="conv3d",
                    inputs=(TensorSpec("volume", (None, 4, 8, 8, 1)),), outputs=(TensorSpec("pooled", (None, 4)),))
    tiny = Source(**{**TINY.__dict__, "path": str(models / "tiny.keras")})
    rng = np.random.default_rng(0)
    vol = {"volume": rng.random((40, 4, 8, 8, 1), dtype=np.float32)}
    vol_data = _data(vol, vol)
    good = _images(120)
    raw = np.round(_images(120, seed=1) * 255).astype(np.float32)  # raw 0-255 pixels where the model wants 0-1
    wrong = _data({"image": raw}, {"image": good})
    right = _data({"image": _images(120, seed=2)}, {"image": good})
    jobs = {
        "flex": (flex, fp32, ConvertData()),
        "flex_allowed": (flex, flex_ok, ConvertData()),
        "conv3d_strict": (conv3d, strict, vol_data),
        "conv3d_fallback": (conv3d, fallback, vol_data),
        "wrong_scale": (tiny, int8_io, wrong),
        "right_scale": (tiny, int8_io, right),
        "small_scale": (tiny, int8_io, _data({"image": good / 255}, {"image": good})),
        "no_calibration": (tiny, int8_io, ConvertData()),
    }
    results = run_isolated(_convert_jobs, [(s, t, c, str(d / k)) for k, (s, t, c) in jobs.items()],
                           what="tflite refusal scenarios")
    return dict(zip(jobs, results))


def test_flex_only_op_is_refused_with_the_op_named(refusals):
    r = refusals["flex"]
    assert r.get("error") == "UnsupportedConversion", r
    assert "MatrixDeterminant" in r["message"] and "allow_flex_ops" in r["hint"]
    allowed = refusals["flex_allowed"]["artifact"]
    assert any(op.startswith("FlexMatrixDeterminant") for op in allowed["details"]["ops"])
    assert any(op.startswith("FlexMatrixDeterminant") for op in allowed["runtime"]["flex_ops"])


def test_int8_without_calibration_data_is_refused(refusals):
    r = refusals["no_calibration"]
    assert r.get("error") == "InputError" and "calibration" in r["message"] and "--calibration" in r["hint"], r


def test_int8_build_that_stays_float_fails(refusals):
    r = refusals["conv3d_fallback"]
    assert r.get("error") == "ConversionFailed", r
    assert "came out float" in r["message"] and "CONV_3D" in r["message"]
    strict = refusals["conv3d_strict"]
    assert strict.get("error") == "ConversionFailed" and "float_fallback" in strict["hint"], strict


def test_wrongly_scaled_calibration_warns(refusals):
    art = refusals["wrong_scale"]["artifact"]
    text = "\n".join(art["warnings"])
    assert "raw pixel values" in text and "preprocessed differently" in text and "int8 input levels" in text
    small = "\n".join(refusals["small_scale"]["artifact"]["warnings"])
    assert "saturate" in small and "preprocessed differently" in small
    assert not [w for w in refusals["right_scale"]["artifact"]["warnings"] if "CALIBRATION" in w]


def test_calibration_warnings_need_only_the_holdout_ranges():
    """The holdout checks work from (min, max) alone; a holdout inside the int8 input range is quiet."""
    from edgepack.backends.tflite.flatbuffer import calibration_warnings

    cal = {"x": np.linspace(0, 1, 1000, dtype=np.float32)}
    io = {"x": {"dtype": "int8", "scale": 1 / 255, "zero_point": -128}}
    assert calibration_warnings(cal, {"x": (0.0, 1.0)}, ["x"], io) == []
    far = calibration_warnings(cal, {"x": (-1.0, 2.0)}, ["x"], io)
    assert len(far) == 1 and "saturate" in far[0] and "[-1, 2]" in far[0]
    narrow = calibration_warnings(cal, {"x": (0.0, 0.02)}, ["x"], io)
    assert any("int8 input levels" in w for w in narrow) and any("preprocessed differently" in w for w in narrow)
    assert calibration_warnings(cal, {}, ["x"], io) == []  # no holdout ranges: calibration checks only
    assert calibration_warnings(cal, {}, ["x"], {}, input_mean=(127.5,), input_std=(127.5,)) == []  # [-1, 1]
    norm = calibration_warnings(cal, {}, ["x"], {}, input_mean=(0.0,), input_std=(1.0,))  # expects 0-255
    assert len(norm) == 1 and "normalization" in norm[0]


def test_fp32_cache_key_follows_weights_inputs_and_layout(tmp_path):
    """The litert-torch fp32 cache is keyed by what determines that conversion (no torch needed to check)."""
    from edgepack.backends.tflite.convert import _fp32_key

    code, weights = tmp_path / "net.py", tmp_path / "w.pt"
    code.write_text("def make():\n    pass\n")
    weights.write_bytes(b"one")
    src = Source(kind="torch", format="factory", path=f"{code}:make", name="make", weights=str(weights),
                 inputs=(TensorSpec("input", (1, 1, 8, 8)),), outputs=(TensorSpec("output", (1, 4)),))
    key = _fp32_key(src, True, "0.10")
    assert key == _fp32_key(src, True, "0.10")
    assert key != _fp32_key(src, False, "0.10") and key != _fp32_key(src, True, "0.11")
    assert key != _fp32_key(src.with_inputs((TensorSpec("input", (1, 1, 16, 16)),)), True, "0.10")
    weights.write_bytes(b"two")
    assert key != _fp32_key(src, True, "0.10")
    weights.write_bytes(b"one")
    code.write_text("def make():\n    return None\n")
    assert key != _fp32_key(src, True, "0.10")


# ------------------------------------------------------------------------------------------ slow: digits matrix


def _train_digits(folder: str, epochs: int) -> dict:
    """Keras digits CNN (.keras + SavedModel) — worker with TensorFlow only."""
    sys.path.insert(0, str(REPO))
    from examples.digits_keras import train

    return train(Path(folder), epochs=epochs, width=16)


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory, trained_digits) -> dict[str, str]:
    d = tmp_path_factory.mktemp("digits-keras")
    run_isolated(_train_digits, str(d), 8, what="training the Keras digits CNN")
    return {"keras": str(d / "cnn.keras"), "savedmodel": str(d / "cnn_savedmodel"),
            "torch": str(trained_digits / "cnn.pt")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "savedmodel", "torch"])
def test_digits_fp32_fp16_int8_bundles(digits_models, tmp_path, kind):
    """Real data, disjoint calibration/holdout: every bundle passes verify and host parity with default tolerances;
    int8 accuracy within 1 point of fp32, agreement ≥ 98 %, int8 file ≤ 0.30× fp32."""
    targets = ["android-tflite-fp32", "android-tflite-fp16", "android-tflite-int8"]
    if kind == "torch":
        results = pipeline.build(f"{REPO / 'examples' / 'digits.py'}:make_cnn", targets, calibration="digits",
                                 weights=digits_models["torch"], inputs=(TensorSpec("input", (1, 1, 32, 32)),),
                                 out=tmp_path)
    else:
        results = pipeline.build(digits_models[kind], targets, calibration="digits-nhwc", out=tmp_path)
    assert [r.status for r in results] == ["passed"] * 3, [r.checks for r in results]
    for r in results:
        assert bundles.verify(Path(r.bundle))
    fp32, _, int8 = (next(iter(r.parity.metrics.values())) for r in results)
    assert int8["bundle_accuracy"] >= fp32["bundle_accuracy"] - 0.01
    assert int8["top1_agreement"] >= 0.98
    ratio = results[2].size_bytes / results[0].size_bytes
    assert ratio <= 0.30, ratio
    if kind == "torch":
        art = bundles.read_manifest(Path(results[2].bundle)).artifact.to_dict()
        assert art["layout"] == "nhwc" and art["inputs"][0]["shape"] == [1, 32, 32, 1]
        assert art["runtime"]["inputs"][0]["transpose"] is True
        # one persistent tflite worker: litert-torch converted the model once, fp16/int8 reused its fp32 result
        reused = ["float conversion reused" in " ".join(r.notes) for r in results]
        assert reused == [False, True, True], [r.notes for r in results]

"""TFLite backend: profiles, refusals, Keras builds with host parity, Flex/custom-op refusal, silent-float detection,
calibration sanity, and (slow) Keras/SavedModel/PyTorch × fp32/fp16/int8 bundles of the digits CNN on real data.

Tiny models are generated at test time in a worker process (this process imports neither TensorFlow nor torch).
"""

from __future__ import annotations

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
from edgepack.backends import registry  # noqa: E402
from edgepack.calibration import CalibrationData  # noqa: E402
from edgepack.config import load_profile  # noqa: E402
from edgepack.errors import ConfigError, EdgepackError, UnsupportedConversion  # noqa: E402
from edgepack.isolation import run_isolated  # noqa: E402
from edgepack.signature import TensorSpec  # noqa: E402
from edgepack.sources import Source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TFLITE_TARGETS = ("android-tflite-fp32", "android-tflite-fp16", "android-tflite-int8", "android-tflite-int8-dynamic")


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


def _convert_jobs(jobs: list[tuple[Source, str, CalibrationData | None, str]]) -> list[dict]:
    """Run several backend.convert calls in one worker; errors come back as values."""
    backend = registry.get("tflite")
    out = []
    for source, target, calib, folder in jobs:
        Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            art = backend.convert(source, load_profile(target), calib, Path(folder))
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
    from edgepack.runner.run_bundle import LOADERS

    assert "tflite" in LOADERS


def test_unknown_option_is_refused_with_suggestion(tmp_path):
    path = _profile(tmp_path, "bad", 'backend = "tflite"\nprecision = "int8"\n[options]\nio_typ = "int8"\n')
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    assert "io_typ" in e.value.message and "io_type" in e.value.hint


def test_onnx_source_refused_naming_the_routes(tmp_path):
    src = Source(kind="onnx", format="onnx", path="m.onnx", name="m", inputs=(TensorSpec("x", (1, 3)),))
    with pytest.raises(UnsupportedConversion) as e:
        registry.get("tflite").convert(src, load_profile("android-tflite-fp32"), None, tmp_path)
    assert "Keras" in e.value.hint and "PyTorch" in e.value.hint and "onnx2tf" in e.value.hint


def test_runner_transposes_and_dequantizes_at_its_edges():
    from edgepack.backends.tflite import dequantize, from_file_layout, quantize, to_file_layout

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert to_file_layout(x).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(from_file_layout(to_file_layout(x)), x)
    v = np.linspace(-1, 1, 11, dtype=np.float32)
    q = quantize(v, "int8", 1 / 127, 0)
    assert q.dtype == np.int8 and np.abs(dequantize(q, 1 / 127, 0) - v).max() <= 0.5 / 127 + 1e-7


# ------------------------------------------------------------------------------------------ Keras build (fast)


def test_keras_fp32_and_int8_bundles_pass_parity_verify_and_device_runner(models, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, image=_images(240))
    tdir = tmp_path / "targets"
    _profile(tdir, "t-fp32", 'backend = "tflite"\nprecision = "fp32"\n')
    _profile(tdir, "t-int8", 'backend = "tflite"\nprecision = "int8"\nmin_calibration_samples = 100\n'
                             '[options]\nio_type = "int8"\nmin_quantized_share = 1.0\n')
    results = pipeline.build(str(models / "tiny.keras"), ["t-fp32", "t-int8"], calibration=str(data),
                             out=tmp_path / "dist", targets_dir=tdir)
    assert [r.status for r in results] == ["passed", "passed"], [r.report.get("checks") for r in results]
    for r in results:
        assert bundles.verify(r.bundle)
        manifest = bundles.read_manifest(r.bundle)
        art = manifest["artifact"]
        assert art["primary"] == "model.tflite" and art["layout"] == "nhwc"
        assert art["inputs"][0]["name"] == "image" and art["outputs"][0]["name"] == "scores"
        run = subprocess.run([sys.executable, str(r.bundle / "run_bundle.py"), "--repeats", "3"],
                             capture_output=True, text=True, timeout=300)
        verdict = json.loads(run.stdout)
        assert run.returncode == 0 and verdict["passed"], run.stdout + run.stderr
    int8 = bundles.read_manifest(results[1].bundle)["artifact"]
    for name in ("image", "scores"):
        q = int8["quantization"][name]
        assert q["dtype"] == "int8" and q["scale"] > 0 and isinstance(q["zero_point"], int)
    assert int8["info"]["quantized_share"] == 1.0
    fp32_size = results[0].report["size_bytes"]
    assert results[1].report["size_bytes"] < fp32_size


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
    vol_data = CalibrationData("vol", calibration=vol, holdout=vol)
    good = _images(120)
    raw = np.round(_images(120, seed=1) * 255).astype(np.float32)  # raw 0-255 pixels where the model wants 0-1
    wrong = CalibrationData("wrong", calibration={"image": raw}, holdout={"image": good})
    right = CalibrationData("right", calibration={"image": _images(120, seed=2)}, holdout={"image": good})
    jobs = {
        "flex": (flex, fp32, None),
        "flex_allowed": (flex, flex_ok, None),
        "conv3d_strict": (conv3d, strict, vol_data),
        "conv3d_fallback": (conv3d, fallback, vol_data),
        "wrong_scale": (tiny, int8_io, wrong),
        "right_scale": (tiny, int8_io, right),
        "small_scale": (tiny, int8_io, CalibrationData("small", calibration={"image": good / 255}, holdout={"image": good})),
    }
    results = run_isolated(_convert_jobs, [(s, t, c, str(d / k)) for k, (s, t, c) in jobs.items()],
                           what="tflite refusal scenarios")
    return dict(zip(jobs, results))


def test_flex_only_op_is_refused_with_the_op_named(refusals):
    r = refusals["flex"]
    assert r.get("error") == "UnsupportedConversion", r
    assert "MatrixDeterminant" in r["message"] and "allow_flex_ops" in r["hint"]
    allowed = refusals["flex_allowed"]["artifact"]
    assert any(op.startswith("FlexMatrixDeterminant") for op in allowed["info"]["ops"])


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
    assert [r.status for r in results] == ["passed"] * 3, [r.report.get("checks") for r in results]
    for r in results:
        assert bundles.verify(r.bundle)
    fp32, _, int8 = (next(iter(r.report["parity"]["metrics"].values())) for r in results)
    assert int8["bundle_accuracy"] >= fp32["bundle_accuracy"] - 0.01
    assert int8["top1_agreement"] >= 0.98
    ratio = results[2].report["size_bytes"] / results[0].report["size_bytes"]
    assert ratio <= 0.30, ratio
    if kind == "torch":
        art = bundles.read_manifest(results[2].bundle)["artifact"]
        assert art["layout"] == "nhwc" and art["inputs"][0]["shape"] == [1, 32, 32, 1]
        assert art["info"]["io"]["inputs"][0]["transpose"] is True

"""TensorFlow/Keras sources: .keras (safe mode), SavedModel (signature by name), .h5 (trusted only), names as the
model declares them, reference outputs and the tf2onnx bridge. TensorFlow runs only in worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgepack.errors import ConfigError, EdgepackError  # noqa: E402
from edgepack.isolation import run_isolated  # noqa: E402
from edgepack.signature import TensorSpec  # noqa: E402
from edgepack.sources import detect_kind, load_source  # noqa: E402
from edgepack.sources import keras as keras_source  # noqa: E402


def _make(folder: str) -> None:
    """A two-input, two-output Keras model (.keras, .h5, SavedModel) and one with a Lambda layer (worker side)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    d = Path(folder)
    a = keras.Input((6, 6, 2), name="pixels")
    b = keras.Input((3,), name="extra")
    x = keras.layers.Conv2D(4, 3, activation="relu")(a)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, b])
    model = keras.Model([a, b], {"logits": keras.layers.Dense(5)(x), "score": keras.layers.Dense(1)(x)})
    model.save(d / "two.keras")
    model.save(d / "two.h5")

    class Mod(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.normal((4, 3), seed=1))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="features")])
        def serve(self, features):
            return {"probs": tf.nn.softmax(features @ self.w)}

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="features")])
        def raw(self, features):
            return {"scores": features @ self.w}

    m = Mod()
    tf.saved_model.save(m, str(d / "sm"), signatures={"serving_default": m.serve, "raw": m.raw})
    inp = keras.Input((4,), name="v")
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp)).save(d / "lambda.keras")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keras-src")
    run_isolated(_make, str(d), what="making Keras test models")
    return d


def test_detects_keras_forms(made):
    assert detect_kind(str(made / "two.keras")) == "tf"
    assert detect_kind(str(made / "two.h5")) == "tf"
    assert detect_kind(str(made / "sm")) == "tf"


def test_keras_names_shapes_and_reference(made):
    src = load_source(str(made / "two.keras"))
    assert src.kind == "tf" and src.format == "keras" and src.signature is None
    assert [(t.name, t.shape) for t in src.inputs] == [("pixels", (None, 6, 6, 2)), ("extra", (None, 3))]
    assert sorted(t.name for t in src.outputs) == ["logits", "score"]
    rng = np.random.default_rng(0)
    feeds = {"pixels": rng.random((70, 6, 6, 2), dtype=np.float32), "extra": rng.random((70, 3), dtype=np.float32)}
    ref = keras_source.reference(src, feeds)
    assert ref["logits"].shape == (70, 5) and ref["score"].shape == (70, 1)


@pytest.mark.slow
def test_onnx_bridge_keeps_names_and_numbers(made, tmp_path):
    src = load_source(str(made / "two.keras"))
    rng = np.random.default_rng(0)
    feeds = {"pixels": rng.random((70, 6, 6, 2), dtype=np.float32), "extra": rng.random((70, 3), dtype=np.float32)}
    ref = keras_source.reference(src, feeds)
    onnx_path = tmp_path / "two.onnx"
    notes = keras_source.to_onnx(src, onnx_path)
    assert notes and "tf2onnx" in notes[0]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in sess.get_inputs()) == ["extra", "pixels"]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for name in ("logits", "score"):
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5)


def test_savedmodel_signature_by_name(made):
    src = load_source(str(made / "sm"))
    assert src.format == "savedmodel" and src.signature == "serving_default"
    assert [t.name for t in src.inputs] == ["features"] and [t.name for t in src.outputs] == ["probs"]
    with pytest.raises(ConfigError) as e:
        load_source(str(made / "sm"), signature="nope")
    assert "raw" in e.value.hint and "serving_default" in e.value.hint


@pytest.mark.slow
def test_other_signature_and_input_override(made):
    raw = load_source(str(made / "sm"), signature="raw", inputs=(TensorSpec("features", (8, 4)),))
    assert [t.name for t in raw.outputs] == ["scores"] and raw.inputs[0].shape == (8, 4)


def test_code_carrying_models_need_trust(made):
    with pytest.raises(ConfigError) as e:
        load_source(str(made / "two.h5"))
    assert "--trust-model-code" in e.value.hint
    with pytest.raises(ConfigError) as e:
        load_source(str(made / "lambda.keras"))
    assert "--trust-model-code" in e.value.hint
    with pytest.raises(ConfigError):
        load_source(str(made / "two.keras"), signature="serving_default")
    with pytest.raises(EdgepackError):
        load_source(str(made / "two.keras"), weights=str(made / "two.h5"))


@pytest.mark.slow
def test_trusted_h5_and_lambda_load(made):
    assert [t.name for t in load_source(str(made / "two.h5"), trust_code=True).inputs] == ["pixels", "extra"]
    src = load_source(str(made / "lambda.keras"), trust_code=True)
    out = keras_source.reference(src, {"v": np.ones((2, 4), np.float32)})
    np.testing.assert_allclose(next(iter(out.values())), 2.0)

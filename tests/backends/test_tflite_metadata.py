"""TFLite Support metadata written without tflite-support: the flatbuffer round trip, the model entry and packed
labels.txt (the file is also a zip), unchanged inference in LiteRT, and the backend hook.

Tiny models are converted at test time in one worker process (this process imports neither TensorFlow nor torch).
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.backends.tflite import metadata as tm

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None
                              or importlib.util.find_spec("ai_edge_litert") is None,
                              reason="needs tensorflow (worker) and ai_edge_litert")

LABELS = ("cat", "dog", "bird")
FULL = tm.AppMetadata(name="tiny", description="Three-class toy classifier.", version="1.2.3", author="edgepack tests",
                      license="Apache-2.0", input_mean=(127.5, 127.0, 126.0), input_std=(127.5, 64.0, 32.0),
                      labels=LABELS)


# ------------------------------------------------------------------------------------------ worker side


def _convert_all(folder: str) -> dict:
    """Tiny Keras models converted plainly and through the backend (runs in a worker: imports TensorFlow)."""
    import keras
    import tensorflow as tf

    from edgepack.artifact import ConvertData
    from edgepack.backends import registry
    from edgepack.config import load_profile
    from edgepack.signature import TensorSpec
    from edgepack.sources import Source

    keras.utils.set_random_seed(0)
    d = Path(folder)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="scores")(x))
    (d / "plain.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    model.save(d / "tiny.keras")

    src = Source(kind="tf", format="keras", path=str(d / "tiny.keras"), name="tiny",
                 inputs=(TensorSpec("image", (None, 8, 8, 3)),), outputs=(TensorSpec("scores", (None, 3)),))
    images = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    data = ConvertData(calibration={"image": images}, holdout_ranges=ConvertData.ranges({"image": images}),
                       class_names=list(LABELS))
    profiles = {
        "with_meta": 'backend = "tflite"\nprecision = "fp32"\n[metadata]\nauthor = "me"\nlicense = "MIT"\n'
                     'version = "2.0"\ndescription = "toy"\n[options]\ninput_mean = [127.5]\ninput_std = [127.5]\n',
        "bare": 'backend = "tflite"\nprecision = "fp32"\n',
    }
    out = {}
    for name, body in profiles.items():
        (d / f"{name}.toml").write_text(body)
        target = d / name
        target.mkdir()
        t = registry.resolve(load_profile(str(d / f"{name}.toml")))
        art = t.backend.convert(src, t.profile, t.options, data if name == "with_meta" else ConvertData(), target)
        out[name] = {"artifact": art.to_dict(), "model": str(target / art.primary)}
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    from edgepack.isolation import run_isolated

    d = tmp_path_factory.mktemp("tflite-metadata")
    out = run_isolated(_convert_all, str(d), what="tiny TFLite conversions")
    out["plain"] = d / "plain.tflite"
    return out


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_content=model).get_signature_runner()
    (name,) = sig.get_input_details()
    return next(iter(sig(**{name: x}).values()))


# ------------------------------------------------------------------------------------------ no model needed


def test_builder_round_trips_every_field():
    meta = tm.ModelMetadata(
        name="m", description="d", version="1", author="a", license="l",
        inputs=(tm.TensorMetadata("x", "in", color_space=1, mean=(1.0, 2.0), std=(3.0, 4.0), stats_min=(-1.0,),
                                  stats_max=(1.0,)),),
        outputs=(tm.TensorMetadata("y", associated_files=(tm.AssociatedFile(tm.LABELS_FILE, "names"),)),
                 tm.TensorMetadata("z")))
    buf = tm.build(meta)
    assert buf[4:8] == tm.FILE_IDENTIFIER
    got = tm.parse(buf)
    assert {k: got[k] for k in ("name", "description", "version", "author", "license", "min_parser_version")} == \
        {"name": "m", "description": "d", "version": "1", "author": "a", "license": "l", "min_parser_version": "1.0.0"}
    (sg,) = got["subgraph_metadata"]
    assert sg["input_tensor_metadata"] == [{
        "name": "x", "description": "in", "content": "image", "color_space": "RGB",
        "normalization": {"mean": [1.0, 2.0], "std": [3.0, 4.0]}, "stats": {"max": [1.0], "min": [-1.0]}}]
    assert sg["output_tensor_metadata"] == [
        {"name": "y", "description": "", "content": "feature",
         "associated_files": [{"name": "labels.txt", "description": "names", "type": tm.TENSOR_AXIS_LABELS}]},
        {"name": "z", "description": "", "content": "feature"}]
    with pytest.raises(ValueError, match="M001"):
        tm.parse(b"\0" * 16)


def test_nothing_to_write_is_falsy():
    assert not tm.AppMetadata(name="only-a-name")
    assert tm.AppMetadata(name="x", labels=("a",)) and tm.AppMetadata(license="MIT")


# ------------------------------------------------------------------------------------------ on a real model


@needs_tf
def test_metadata_in_model_reads_back_is_a_zip_and_runs_unchanged(converted):
    plain = converted["plain"].read_bytes()
    out, summary, warnings = tm.embed(plain, FULL, nhwc=True)
    assert warnings == []
    assert out[4:8] == tm.TFLITE_IDENTIFIER and len(out) > len(plain)  # still a TFL3 flatbuffer, now longer

    # (a) every field, read back with our own reader
    got = tm.read(out)
    assert {k: got[k] for k in ("name", "description", "version", "author", "license", "min_parser_version")} == {
        "name": "tiny", "description": "Three-class toy classifier.", "version": "1.2.3", "author": "edgepack tests",
        "license": "Apache-2.0", "min_parser_version": "1.0.0"}
    (sg,) = got["subgraph_metadata"]
    (image,) = sg["input_tensor_metadata"]
    assert image["name"] == "image" and image["content"] == "image" and image["color_space"] == "RGB"
    assert image["normalization"] == {"mean": [127.5, 127.0, 126.0], "std": [127.5, 64.0, 32.0]}
    np.testing.assert_allclose(image["stats"]["min"], [-1.0, -127 / 64, -126 / 32], rtol=1e-6)
    np.testing.assert_allclose(image["stats"]["max"], [1.0, 128 / 64, 129 / 32], rtol=1e-6)
    (scores,) = sg["output_tensor_metadata"]
    assert scores["associated_files"] == [{"name": "labels.txt", "description": "class names, one per line",
                                           "type": tm.TENSOR_AXIS_LABELS}]
    entries = tm.model_metadata(out)
    assert list(entries).count(tm.METADATA_NAME) == 1 and "min_runtime_version" in entries
    assert summary["labels"] == {"file": "labels.txt", "count": 3, "output": scores["name"]}
    assert summary["normalization"]["inputs"] == ["image"] and summary["min_runtime_version"]

    # (b) the model file is a zip holding exactly labels.txt, stored uncompressed
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert zf.namelist() == ["labels.txt"]
        assert zf.read("labels.txt") == b"cat\ndog\nbird\n"
        assert zf.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED

    # (c) LiteRT loads it and computes exactly what it did without metadata
    x = np.random.default_rng(1).random((1, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(_run(out, x), _run(plain, x))

    # writing again replaces instead of stacking; the packed files follow
    again, _, _ = tm.embed(out, FULL, nhwc=True)
    assert again == out


@needs_tf
def test_labels_that_match_no_output_warn_and_pack_nothing(converted):
    plain = converted["plain"].read_bytes()
    out, summary, warnings = tm.embed(plain, tm.AppMetadata(name="tiny", labels=("a", "b")), nhwc=True)
    assert len(warnings) == 1 and "2 class names" in warnings[0] and "labels.txt was not packed" in warnings[0]
    assert "labels" not in summary and tm.packed_files(out) == []
    assert tm.read(out)["subgraph_metadata"][0]["output_tensor_metadata"][0].get("associated_files") is None


@needs_tf
def test_backend_writes_profile_metadata_and_class_names(converted):
    art = converted["with_meta"]["artifact"]
    model = Path(converted["with_meta"]["model"]).read_bytes()
    md = art["details"]["metadata"]
    assert md["author"] == "me" and md["license"] == "MIT" and md["version"] == "2.0" and md["description"] == "toy"
    assert md["name"] == "tiny" and md["associated_files"] == ["labels.txt"]
    assert md["labels"] == {"file": "labels.txt", "count": 3, "output": "scores"}
    assert md["normalization"] == {"mean": [127.5], "std": [127.5], "inputs": ["image"]}
    got = tm.read(model)
    assert (got["name"], got["author"], got["license"], got["version"]) == ("tiny", "me", "MIT", "2.0")
    assert got["subgraph_metadata"][0]["output_tensor_metadata"][0]["name"] == "scores"
    assert got["packed_files"] == ["labels.txt"]
    assert not [w for w in art["warnings"] if "METADATA" in w]

    bare = converted["bare"]
    assert "metadata" not in bare["artifact"]["details"]
    bare_model = Path(bare["model"]).read_bytes()
    assert tm.read(bare_model) is None and tm.packed_files(bare_model) == []
    x = np.random.default_rng(2).random((1, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(_run(model, x), _run(bare_model, x))

"""SavedModels are programs: real ones written by TensorFlow (here, at test time) pass the op allowlist when they
only compute, and are refused — naming the op — when a serving function or a resource initializer touches files.
The decision reads saved_model.pb without importing TensorFlow; the canary proves nothing ran."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.errors import ConfigError
from edgepack.sources import screen

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")

MAKE = r'''
import sys
from pathlib import Path
import tensorflow as tf, keras
out, canary = Path(sys.argv[1]), sys.argv[2]
m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                      keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(10),
                      keras.layers.Softmax()])
m.export(str(out / "keras_export"), verbose=False)

class Table(tf.Module):
    def __init__(self):
        self.v = tf.Variable(tf.ones((4,)))
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer([1, 2], [3, 4]), -1)
    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.nn.relu(x * self.v) + tf.cast(self.table.lookup(tf.constant(1)), tf.float32)}
t = Table(); tf.saved_model.save(t, str(out / "module_table"), signatures={"serving_default": t.serve})

class WritesInServe(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def serve(self, x):
        tf.io.write_file(canary, "ran")
        return {"y": x}
w = WritesInServe(); tf.saved_model.save(w, str(out / "writes_in_serve"), signatures={"serving_default": w.serve})

class Resource(tf.saved_model.experimental.TrackableResource):
    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.string, shape=[])
    def _initialize(self):
        tf.io.write_file(canary, "ran at load")
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=tf.io.read_file("/etc/hostname"))

class WritesInInit(tf.Module):
    def __init__(self):
        self.r = Resource()
    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def serve(self, x):
        return {"y": x}
i = WritesInInit(); tf.saved_model.save(i, str(out / "writes_in_init"), signatures={"serving_default": i.serve})
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("savedmodels")
    canary = out / "CANARY"
    proc = subprocess.run([sys.executable, "-c", MAKE, str(out), str(canary)], capture_output=True, text=True,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    if canary.exists():
        canary.unlink()  # tracing the serving function may run it once while saving
    return out


@pytest.mark.parametrize("name", ["keras_export", "module_table"])
def test_computing_savedmodels_pass_the_allowlist(models, name):
    assert screen(str(models / name), "tf", trust_code=False) == []


@pytest.mark.parametrize("name,where", [("writes_in_serve", "serve"), ("writes_in_init", "initialize")])
def test_savedmodels_touching_files_are_refused_naming_the_op(models, name, where, cli):
    with pytest.raises(ConfigError, match="WriteFile") as e:
        screen(str(models / name), "tf", trust_code=False)
    assert "--trust-model-code" in e.value.hint and where in e.value.message
    reasons = screen(str(models / name), "tf", trust_code=True)
    assert any("WriteFile" in r for r in reasons)  # what the manifest records when the user opts in
    for command in (["inspect", models / name], ["build", models / name, "-t", "android-ort-fp32", "--out",
                                                  models / "out"]):
        res = cli(*command)
        assert res.exit_code == 2 and "WriteFile" in res.stderr and "Traceback" not in res.stderr
    assert not (models / "CANARY").exists()

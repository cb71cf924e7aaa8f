"""The zoo file's schema and the cells' content keys (no conversion: the plan only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from zoohelpers import make_zoo
from tinymodels import make_tiny_onnx

from edgepack.errors import ConfigError
from edgepack.zoo import cells, spec


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "zoo.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("body, message, hint", [
    ('name = "a"\nsource = "a.onnx"\ntargets = ["linux-ort-fp32"]\ncalibraton = "digits"\n',
     "model 'a': unknown key 'calibraton'", "did you mean 'calibration'?"),
    ('name = "a"\nsource = "a.onnx"\n', "model 'a': missing required key 'targets'", None),
    ('name = "a"\nsource = "a.onnx"\ntargets = []\n', "model 'a': invalid value for 'targets'", None),
    ('name = "a b"\nsource = "a.onnx"\ntargets = "all"\n', "model 'a b': invalid value for 'name'", None),
    ('name = "a"\nsource = "a.onnx"\ntargets = "all"\n[model.inputs.input]\nshape = "1x1xZ"\n',
     "model 'a': inputs: cannot parse --input 'input=1x1xZ'", None),
    ('name = "a"\nsource = "a.onnx"\ntargets = "all"\n[model.outputs]\nlogits = "nonsense"\n',
     "model 'a': outputs.logits", None),
    ('name = "a"\nsource = "a.onnx"\ntargets = "all"\n[model.budgets]\nsize_bm = 5\n',
     "model 'a': [budgets]", None),
])
def test_errors_name_the_model_and_the_key(tmp_path, body, message, hint):
    with pytest.raises(ConfigError) as e:
        spec.load(_write(tmp_path, "[[model]]\n" + body))
    assert message in e.value.message
    if hint:
        assert e.value.hint == hint


def test_duplicate_model_names_are_refused(tmp_path):
    body = '[[model]]\nname = "a"\nsource = "a.onnx"\ntargets = "all"\n'
    with pytest.raises(ConfigError, match="model names must be unique: a"):
        spec.load(_write(tmp_path, body + body))


def test_model_config_shape_is_parsed_by_the_model_config_parser(tmp_path):
    zoo = spec.load(_write(tmp_path, '[[model]]\nname = "a"\nsource = "a.onnx"\ntargets = "all"\n'
                                     '[model.inputs.state]\nshape = "2x?x8"\nbatch_axis = 1\n'
                                     '[model.outputs]\nlogits = "sequence,batch_axis=1"\n'))
    inputs, outputs = spec.declarations(zoo, zoo.model[0])
    assert inputs[0].name == "state" and inputs[0].shape == (2, None, 8) and inputs[0].batch_axis == 1
    assert outputs["logits"].kind == "sequence"


def _keys(zoo_file: Path) -> dict[str, str]:
    return {c.id: c.key for c in cells.plan(spec.load(zoo_file)).cells}


def test_keys_are_stable_across_folders_and_change_with_what_the_cell_is_made_of(tmp_path):
    zoo_file = make_zoo(tmp_path / "one")
    first = _keys(zoo_file)
    assert len(first) == 2 and all(len(k) == 64 for k in first.values())
    assert len(set(first.values())) == 2  # two models: two keys
    assert _keys(zoo_file) == first  # same inputs → same keys
    moved = tmp_path / "elsewhere" / "two"
    shutil.copytree(zoo_file.parent, moved)
    assert _keys(moved / "zoo.toml") == first  # no path goes into a key
    make_tiny_onnx(moved / "beta.onnx", seed=7)  # beta's weights change: only beta's key does
    changed = _keys(moved / "zoo.toml")
    assert changed["alpha/fast-ort"] == first["alpha/fast-ort"]
    assert changed["beta/fast-ort"] != first["beta/fast-ort"]
    import numpy as np

    np.savez(moved / "calib.npz", input=np.zeros((96, 1, 32, 32), np.float32))  # the data is in every key
    assert not set(_keys(moved / "zoo.toml").values()) & set(changed.values())
    again = _keys(moved / "zoo.toml")
    (moved / "fast-ort.toml").write_text((moved / "fast-ort.toml").read_text() + "\n[resources]\nnum_cpus = 2\n")
    assert _keys(moved / "zoo.toml") == again  # scheduling resources are not part of what is built
    profile = moved / "fast-ort.toml"
    profile.write_text(profile.read_text().replace("max_size_mb = 50", "max_size_mb = 9"))
    assert _keys(moved / "zoo.toml") != again  # the resolved profile is


def test_plan_cli_json_lists_every_cell_with_action_reason_and_key(tmp_path, cli, zoo_file, monkeypatch):
    # a machine without onnx2torch: the TFLite cells of these ONNX models cannot be built (the onnx → torch bridge
    # is missing), so the plan skips them with that reason
    from edgepack.backends import base

    real = base._installed
    monkeypatch.setattr(base, "_installed", lambda mod: False if mod == "onnx2torch" else real(mod))
    text = zoo_file.read_text().replace('targets = ["fast-ort.toml"]', 'targets = ["fast-ort.toml", '
                                        '"android-tflite-fp32"]')
    zoo_file.write_text(text)
    r = cli("zoo", "plan", zoo_file, "--json", "-")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    by = {c["id"]: c for c in doc["cells"]}
    assert set(by) == {"alpha/fast-ort", "alpha/android-tflite-fp32", "beta/fast-ort", "beta/android-tflite-fp32"}
    assert by["alpha/fast-ort"]["action"] == "build" and by["alpha/fast-ort"]["reason"] is None
    assert by["alpha/android-tflite-fp32"]["action"] == "skip"
    assert "onnx → torch bridge needs onnx2torch" in by["alpha/android-tflite-fp32"]["reason"]
    assert by["alpha/fast-ort"]["versions"]["onnxruntime"]
    assert by["alpha/fast-ort"]["key"] == _keys(zoo_file)["alpha/fast-ort"]
    zoo_file.write_text(text.replace("skip_unavailable = true", "skip_unavailable = false"))
    r = cli("zoo", "plan", zoo_file)
    assert r.exit_code == 2  # a refused cell


def test_matrix_lists_the_cells_to_build(cli, zoo_file):
    r = cli("zoo", "matrix", zoo_file, "--format", "github")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"include": [{"cell": "alpha/fast-ort"}, {"cell": "beta/fast-ort"}]}
    r = cli("zoo", "matrix", zoo_file, "--format", "gitlab")
    assert '- "beta/fast-ort"' in r.stdout and "--cell \"$CELL\"" in r.stdout
    r = cli("zoo", "matrix", zoo_file, "--format", "jenkins")
    assert r.exit_code == 2


def test_doctor_says_whether_the_scale_extra_is_installed(cli):
    import importlib.util

    r = cli("doctor")
    assert r.exit_code == 0
    line = " ".join(r.stdout.split("scale extra", 1)[1].split())
    if importlib.util.find_spec("ray") and importlib.util.find_spec("s3fs"):
        from importlib import metadata

        assert line.startswith("(edgepack zoo --executor ray, cache URLs): installed")
        assert f"ray {metadata.version('ray')}" in line
    else:
        assert "missing" in line and ".[scale]" in line


def test_an_unknown_target_names_the_model(tmp_path, zoo_file):
    zoo_file.write_text(zoo_file.read_text().replace('targets = ["fast-ort.toml"]', 'targets = ["linux-ort-fp33"]', 1))
    with pytest.raises(ConfigError) as e:
        cells.plan(spec.load(zoo_file))
    assert "model 'alpha': targets: unknown target 'linux-ort-fp33'" in e.value.message
    assert "linux-ort-fp32" in e.value.hint

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.backends import registry
from edgepack.config import available_targets, load_profile, load_recipe
from edgepack.errors import ConfigError
from edgepack.signature import MODEL_SHAPE, TensorSpec, parse_input_spec


def _profile(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "my-target.toml"
    p.write_text(text)
    return p


def test_shipped_profiles_all_validate():
    found = available_targets()
    assert {"android-ort-fp32", "android-ort-fp16", "android-ort-int8"} <= set(found)
    for name in found:
        target = registry.resolve(load_profile(name))
        assert target.profile.name == name and target.options is not None


def test_unknown_target_suggests_close_match():
    with pytest.raises(ConfigError) as e:
        load_profile("android-ort-in8")
    assert "unknown target 'android-ort-in8'" in e.value.message
    assert "android-ort-int8" in e.value.hint


def test_unknown_key_is_refused_with_suggestion(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobile"\nprecison = "fp32"\nprecision = "fp32"\n')
    with pytest.raises(ConfigError) as e:
        load_profile(str(p))
    assert "unknown key 'precison'" in e.value.message and "precision" in e.value.hint


def test_nested_unknown_key(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobile"\nprecision = "fp32"\n[budgets]\nmax_size_m = 3\n')
    with pytest.raises(ConfigError) as e:
        load_profile(str(p))
    assert "budgets.max_size_m" in e.value.message and "max_size_mb" in e.value.hint


def test_unsupported_precision_names_allowed_values(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobile"\nprecision = "int4"\n')
    with pytest.raises(ConfigError) as e:
        registry.resolve(load_profile(str(p)))
    assert "does not support precision 'int4'" in e.value.message
    assert "fp16" in e.value.hint and "int8" in e.value.hint


def test_unknown_backend_suggests(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobil"\nprecision = "fp32"\n')
    with pytest.raises(ConfigError) as e:
        registry.resolve(load_profile(str(p)))
    assert "unknown backend 'ort_mobil'" in e.value.message and "ort_mobile" in e.value.hint


def test_bad_backend_option(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobile"\nprecision = "int8"\n[options]\ncalibration_method = "magic"\n')
    with pytest.raises(ConfigError) as e:
        registry.resolve(load_profile(str(p)))
    assert "options.calibration_method" in e.value.message
    p = _profile(tmp_path, 'backend = "ort_mobile"\nprecision = "int8"\n[options]\nper_chanel = true\n')
    with pytest.raises(ConfigError) as e:
        registry.resolve(load_profile(str(p)))
    assert "options.per_chanel" in e.value.message and "per_channel" in e.value.hint


def test_invalid_toml_names_file(tmp_path):
    p = _profile(tmp_path, 'backend = "ort_mobile\n')
    with pytest.raises(ConfigError) as e:
        load_profile(str(p))
    assert str(p) in e.value.message and "TOML" in e.value.message


def test_recipe_lookup_and_suggestion():
    assert load_recipe("digits").data.kind == "sklearn-digits"
    with pytest.raises(ConfigError) as e:
        load_recipe("digts")
    assert "digits" in e.value.hint


@pytest.mark.parametrize("text,expected", [
    ("input=1x3x224x224", TensorSpec("input", (1, 3, 224, 224), "float32")),
    ("x=?x8:int64", TensorSpec("x", (None, 8), "int64")),
    ("state=2x?x128,batch_axis=1,state=stateN", TensorSpec("state", (2, None, 128), batch_axis=1, state_from="stateN")),
    ("sr=:int64,value=16000", TensorSpec("sr", MODEL_SHAPE, "int64", batch_axis=None, value=16000.0)),
    ("img=1x3x?x?,layout=nchw,dims=2:320/640/960,dims=3:320/640/960",
     TensorSpec("img", (1, 3, None, None), layout="nchw", dims=((2, 320, 640, 960), (3, 320, 640, 960)))),
    ("h=1x4,batch_axis=none", TensorSpec("h", (1, 4), batch_axis=None)),
])
def test_parse_input_spec(text, expected):
    assert parse_input_spec(text) == expected


@pytest.mark.parametrize("text", ["input", "input=1x0x3", "input=1x3:float128", "=1x3", "input=axb",
                                  "x=1x2,batch_axis=-1", "x=1x2,value=nan", "x=1x2,value=abc", "x=1x2,dims=1:5/2/9",
                                  "x=1x2,dims=1:1/2", "x=1x2,layout=abcd", "x=1x2,colour=red", "x=1x2,batch_axis"])
def test_parse_input_spec_errors(text):
    with pytest.raises(ConfigError):
        parse_input_spec(text)

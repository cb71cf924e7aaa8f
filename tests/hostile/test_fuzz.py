"""Property-based fuzz of the parsers users feed directly: manifest.json, target profiles, calibration recipes and
``--input``. Each either returns a valid value or raises one EdgepackError (never another exception)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgepack import safety  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                           max_leaves=30)


# ------------------------------------------------------------------------------------------ manifest


@pytest.fixture(scope="module")
def valid_manifest(tmp_path_factory) -> dict:
    import fakes  # noqa: F401
    import numpy as np
    from fakes.source import make

    from edgepack import pipeline

    d = tmp_path_factory.mktemp("fuzz")
    model = make(d / "linear.fakemodel")
    np.savez(d / "cal.npz", input=np.zeros((8, 1, 32, 32), np.float32))
    (d / "t.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    [r] = pipeline.build(str(model), [str(d / "t.toml")], out=d / "out", calibration=str(d / "cal.npz"))
    return json.loads((Path(r.bundle) / "manifest.json").read_text())


def _read_manifest(raw: bytes):
    from edgepack import bundle as bundles

    with tempfile.TemporaryDirectory() as d:
        Path(d, "manifest.json").write_bytes(raw)
        try:
            m = bundles.read_manifest(Path(d))
        except EdgepackError as e:
            assert e.message and "\n" not in safety.shown(e.message)
            return None
        assert all(safety.is_safe_relative(p) for p in bundles.manifest_paths(m))
        return m


@SETTINGS
@given(st.binary(max_size=300))
def test_manifest_bytes(raw):
    _read_manifest(raw)


@SETTINGS
@given(json_values)
def test_manifest_any_json(value):
    _read_manifest(json.dumps(value).encode())


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@SETTINGS
@given(st.data())
def test_manifest_mutations(valid_manifest, data):
    m = json.loads(json.dumps(valid_manifest))
    paths = list(_paths(m))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            value = data.draw(st.one_of(json_values, st.sampled_from(["../x", "/etc/passwd", "a/../../b", "",
                                                                      "x\n", "C:\\x", "./a"])))
            try:
                parent[path[-1]] = value
            except (IndexError, TypeError, KeyError):
                pass
        paths = list(_paths(m))
    _read_manifest(json.dumps(m).encode())


# ------------------------------------------------------------------------------------------ profiles and recipes


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


toml_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=30))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=4))
profile_keys = st.sampled_from(["name", "backend", "precision", "device", "description", "calibration",
                                "min_calibration_samples", "layout", "dynamic_batch", "x"])
sections = st.sampled_from(["latency", "budgets", "budgets.parity", "outputs", "options", "metadata", "zzz"])
section_keys = st.sampled_from(["warmup", "repeats", "threads", "max_size_mb", "max_latency_p50_ms", "min_cosine",
                                "max_abs_error", "judge", "mode", "logits", "author", "weird"])


@st.composite
def toml_docs(draw, top_keys, section_names, inner_keys) -> str:
    lines = [f"{k} = {_toml_value(draw(toml_values))}" for k in draw(st.lists(top_keys, max_size=5, unique=True))]
    for s in draw(st.lists(section_names, max_size=3, unique=True)):
        lines.append(f"[{s}]")
        lines += [f"{k} = {_toml_value(draw(toml_values))}"
                  for k in draw(st.lists(inner_keys, max_size=4, unique=True))]
    return "\n".join(lines) + "\n"


def _load_profile(raw: bytes) -> None:
    from edgepack.backends import registry
    from edgepack.config import load_profile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "fuzz.toml")
        p.write_bytes(raw)
        try:
            profile = load_profile(str(p))
            registry.resolve(profile)
        except EdgepackError as e:
            assert e.message
            return
        safety.check_name(profile.name, "name")
        assert profile.latency.repeats <= 100_000


@SETTINGS
@given(toml_docs(profile_keys, sections, section_keys))
def test_profile_documents(doc):
    _load_profile(('backend = "fake_identity"\nprecision = "fp32"\n' + doc
                   if "backend" not in doc.split("[")[0] else doc).encode())


@SETTINGS
@given(st.binary(max_size=200))
def test_profile_bytes(raw):
    _load_profile(raw)


recipe_keys = st.sampled_from(["name", "description", "input", "labels", "x"])
recipe_sections = st.sampled_from(["data", "preprocess", "split", "zzz"])
recipe_inner = st.sampled_from(["kind", "path", "extensions", "resize", "center_crop", "scale", "mean", "std",
                                "layout", "color", "dtype", "seed", "calibration", "holdout", "weird"])


@SETTINGS
@given(toml_docs(recipe_keys, recipe_sections, recipe_inner))
def test_recipe_documents(doc):
    from edgepack.config import load_recipe

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "r.toml")
        p.write_text(doc)
        try:
            r = load_recipe(str(p))
        except EdgepackError as e:
            assert e.message
            return
        if r.data.path is not None:
            assert safety.is_safe_relative(r.data.path)
        assert r.split.calibration is None or r.split.calibration <= 1_000_000


# ------------------------------------------------------------------------------------------ --input


@SETTINGS
@given(st.one_of(st.text(max_size=60),
                 st.builds(lambda n, dims, dt, rest: f"{n}={'x'.join(dims)}{dt}{''.join(rest)}", st.text(max_size=8),
                           st.lists(st.one_of(st.sampled_from(["?", "0", "-1", "99999999999999999999"]),
                                              st.integers(0, 2**40).map(str)), max_size=10),
                           st.sampled_from(["", ":float32", ":int8", ":complex", ":"]),
                           st.lists(st.one_of(
                               st.sampled_from([",batch_axis=1", ",batch_axis=none", ",batch_axis=-3", ",value=16000",
                                                ",value=nan", ",value=1e400", ",layout=nchw", ",layout=zz",
                                                ",dims=2:1/2/3", ",dims=2:3/2/1", ",dims=x", ",state=s", ",=", ","]),
                               st.text(max_size=12).map(lambda t: "," + t)), max_size=4))))
def test_input_spec(text):
    from edgepack.signature import MAX_ELEMENTS, MODEL_SHAPE, parse_input_spec

    try:
        spec = parse_input_spec(text)
    except EdgepackError as e:
        assert e.message
        return
    assert spec.name and (spec.batch_axis is None or 0 <= spec.batch_axis < 16)
    assert spec.value is None or spec.value == spec.value  # finite numbers only
    assert all(0 < lo <= opt <= hi for _, lo, opt, hi in spec.dims)
    if spec.shape == MODEL_SHAPE:  # no shape given: the model's own
        return
    n = 1
    for d in spec.shape:
        assert d is None or d > 0
        n *= d or 1
    assert n <= MAX_ELEMENTS and spec.name

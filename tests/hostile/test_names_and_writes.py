"""`--name` rescues a model file whose own name is not a valid folder name; `plan --json` writes through the no-follow
atomic writer (a planted symlink is replaced, its target untouched); malformed settings are refused, not ignored."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import fakes  # noqa: F401 - registers the fake source and backends

from edgepack import isolation
from edgepack.errors import ConfigError


@pytest.fixture
def model(tmp_path):
    from fakes.source import make

    m = make(tmp_path / "linear.fakemodel")
    np.savez(tmp_path / "cal.npz", input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
    (tmp_path / "ok.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    return m


@pytest.mark.parametrize("stem", ["my model", "modèle", "a..b c"])
def test_name_rescues_a_model_file_whose_stem_is_not_a_folder_name(model, tmp_path, cli, stem):
    odd = shutil.copy(model, tmp_path / f"{stem}.fakemodel")
    args = ["build", odd, "-t", tmp_path / "ok.toml", "-c", tmp_path / "cal.npz", "--out", tmp_path / "out",
            "--judge", "point"]  # the subject is the name, not parity on a handful of samples
    refused = cli(*args)
    assert refused.exit_code == 2 and "--name" in refused.stderr  # the hint names the way out
    built = cli(*args, "--name", "my-model")
    assert built.exit_code == 0, built.stderr
    assert (tmp_path / "out" / "my-model" / "ok" / "manifest.json").is_file()
    assert cli("plan", odd, "-t", tmp_path / "ok.toml").exit_code == 2  # plan has no --name: still one clear line


def test_plan_json_replaces_a_planted_symlink_and_never_writes_through_it(model, tmp_path, cli):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    os.symlink(victim, tmp_path / "plan.json")
    res = cli("plan", model, "-t", tmp_path / "ok.toml", "--json", tmp_path / "plan.json")
    assert res.exit_code == 0, res.stderr
    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / "plan.json").is_symlink()
    assert json.loads((tmp_path / "plan.json").read_text())["targets"][0]["action"] == "build"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "nan", "inf", "1e400"])
def test_a_malformed_memory_limit_is_refused_not_read_as_no_limit(monkeypatch, value):
    monkeypatch.setenv("EDGEPACK_WORKER_MEMORY_MB", value)
    with pytest.raises(ConfigError, match="EDGEPACK_WORKER_MEMORY_MB"):
        isolation.memory_limit_mb()
    with pytest.raises(ConfigError) as e:
        isolation.check_settings()
    assert "unset it" in e.value.hint


@pytest.mark.parametrize("value,limit", [("0", 0), ("2048", 2048), ("", None)])
def test_valid_memory_limits_still_work(monkeypatch, value, limit):
    monkeypatch.setenv("EDGEPACK_WORKER_MEMORY_MB", value)
    got = isolation.memory_limit_mb()
    assert got == limit if limit is not None else got > 0

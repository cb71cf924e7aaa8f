"""--weights given a training checkpoint: what the file holds, FILE:KEY to select the nested state dict, missing and
unexpected keys named as such, --weights-non-strict for extra keys (recorded in the manifest)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

NET = '''
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
'''


@pytest.fixture
def net(tmp_path):
    """A factory file and three weight files: a training checkpoint, a state dict with a loss's extra parameters,
    and a state dict of another model."""
    (tmp_path / "net.py").write_text(NET)
    import importlib.util

    spec = importlib.util.spec_from_file_location("ux_net", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.make()
    state = model.state_dict()
    torch.save({"step": 1200, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []}},
               tmp_path / "ckpt.pt")
    torch.save({**state, "loss.weight": torch.ones(3)}, tmp_path / "extra.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("3.")}, tmp_path / "partial.pt")
    return tmp_path


@pytest.fixture(scope="module", autouse=True)
def _warm_workers():
    """One warm torch worker for the module's plans and build (the CLI uses an active Workers block)."""
    from edgepack.isolation import Workers

    with Workers() as w:
        yield w


def _plan(cli, net, weights, *extra):
    return cli("plan", f"{net / 'net.py'}:make", "--input", "x=1x16", "--weights", weights,
               "-t", "android-ort-fp32", "--out", net / "dist", *extra)


def test_a_checkpoint_says_what_it_holds_and_how_to_select_the_state_dict(cli, net):
    res = _plan(cli, net, net / "ckpt.pt")
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert "is a checkpoint, not a state dict: it holds step, model_state, optimizer_state" in err
    assert "state dicts under model_state" in err
    assert f"--weights {net / 'ckpt.pt'}:model_state" in err
    assert "['" not in err and "Traceback" not in err

    res = _plan(cli, net, f"{net / 'ckpt.pt'}:model_state", "--json", "-")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["source"]["weights_key"] == "model_state"
    assert plan["targets"][0]["bundle"] == str(net / "dist" / "make-ckpt" / "android-ort-fp32")

    res = _plan(cli, net, f"{net / 'ckpt.pt'}:nope")
    assert res.exit_code == 2 and "has no key 'nope' (it holds: step, model_state, optimizer_state)" in res.stderr


def test_missing_and_unexpected_keys_are_named_as_such(cli, net):
    res = _plan(cli, net, net / "partial.pt")
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2
    assert "missing keys (the model has, the file lacks): 3.weight, 3.bias" in err
    assert "--weights-non-strict" not in err  # missing keys are never waved through

    res = _plan(cli, net, net / "extra.pt")
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2
    assert "unexpected keys (the file has, the model lacks): loss.weight" in err and "missing keys" not in err
    assert "--weights-non-strict" in err and "['" not in err


def test_non_strict_loads_extra_keys_and_the_manifest_records_it(cli, net):
    assert _plan(cli, net, net / "partial.pt", "--weights-non-strict").exit_code == 2  # still missing keys
    res = cli("build", f"{net / 'net.py'}:make", "--input", "x=1x16", "--weights", net / "extra.pt",
              "--weights-non-strict", "-t", "android-ort-fp32", "--synthetic-calibration", "--out", net / "dist")
    assert res.exit_code == 0, res.stdout + res.stderr
    manifest = json.loads((net / "dist" / "make-extra" / "android-ort-fp32" / "manifest.json").read_text())
    assert manifest["source"]["weights_strict"] is False
    assert any(o.startswith("--weights-non-strict") for o in manifest["opt_ins"])


def test_a_state_dict_with_a_stray_entry_is_still_read_as_one(cli, net):
    state = torch.load(net / "extra.pt", weights_only=True)
    torch.save({**state, "epoch": 7}, net / "stray.pt")  # not all tensors, but the model's keys: a state dict
    res = _plan(cli, net, net / "stray.pt")
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2 and "unexpected keys (the file has, the model lacks): loss.weight, epoch" in err
    assert _plan(cli, net, net / "stray.pt", "--weights-non-strict").exit_code == 0

"""Bundles never lie: the verdict is in the manifest and `verify` fails a failed bundle unless --allow-failed; every
opt-in is recorded; the bundle runner checks its files and imports nothing from the bundle folder, however it is
started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fakes  # noqa: F401 - registers the fake source and backends

from edgepack import bundle as bundles
from edgepack import pipeline


@pytest.fixture
def made(tmp_path):
    from fakes.source import make

    model = make(tmp_path / "linear.fakemodel")
    # 800 samples: 400 held out, enough to prove the fp32 row's 99 % top-1 agreement (fewer is INCONCLUSIVE)
    np.savez(tmp_path / "cal.npz", input=np.random.default_rng(0).standard_normal((800, 1, 32, 32)).astype(np.float32))
    for name, body in {"ok": "", "zeros": '[options]\nmode = "zeros"\n'}.items():
        backend = "fake_identity" if name == "ok" else "fake_noisy"
        (tmp_path / f"{name}.toml").write_text(f'backend = "{backend}"\nprecision = "fp32"\n{body}')
    return tmp_path, model


def test_failed_verdict_is_recorded_and_verify_refuses_it(made, cli):
    tmp, model = made
    res = cli("build", model, "-t", tmp / "zeros.toml", "-c", tmp / "cal.npz", "--out", tmp / "out")
    assert res.exit_code == 1
    b = tmp / "out" / "linear" / "zeros"
    assert bundles.read_manifest(b).verdict == "failed"
    res = cli("verify", b)
    assert res.exit_code == 1 and "verdict was failed" in res.stdout
    assert cli("verify", b, "--allow-failed").exit_code == 0
    # the verdict is covered by the manifest: editing it is editing the manifest, which the runner/verify read
    ok = cli("build", model, "-t", tmp / "ok.toml", "-c", tmp / "cal.npz", "--out", tmp / "out")
    assert ok.exit_code == 0 and bundles.read_manifest(tmp / "out" / "linear" / "ok").verdict == "passed"
    assert cli("verify", tmp / "out" / "linear" / "ok").exit_code == 0


def test_opt_ins_are_recorded_in_the_manifest(made, monkeypatch):
    tmp, model = made
    real = pipeline.load_source

    def trusted(*args, **kwargs):  # as if --trust-model-code had let a code-carrying model through
        from dataclasses import replace

        return replace(real(*args, **kwargs), trusted=("the SavedModel: op WriteFile in function f",))

    monkeypatch.setattr(pipeline, "load_source", trusted)
    [r] = pipeline.build(str(model), [str(tmp / "ok.toml")], out=tmp / "out", synthetic=True, trust_code=True)
    m = bundles.read_manifest(Path(r.bundle))
    assert m.opt_ins == ["--trust-model-code (the SavedModel: op WriteFile in function f)", "--synthetic-calibration"]
    assert m.source.trusted_code == ["the SavedModel: op WriteFile in function f"]


@pytest.mark.parametrize("how", ["cwd", "relative", "absolute", "symlinked-folder", "python-path-env",
                                 "python-path-runner"])
def test_bundle_runner_imports_nothing_from_the_bundle(made, how):
    tmp, model = made
    [r] = pipeline.build(str(model), [str(tmp / "ok.toml")], out=tmp / "out", calibration=str(tmp / "cal.npz"))
    b = Path(r.bundle)
    canary = tmp / "CANARY"
    for planted in ("numpy.py", "json.py", "argparse.py", "hashlib.py", "runner/numpy.py", "platform.py"):
        (b / planted).write_text(f"open({str(canary)!r}, 'a').write({planted!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    if how == "cwd":
        cmd, cwd = [sys.executable, "run_bundle.py"], b
    elif how == "relative":
        cmd, cwd = [sys.executable, os.path.relpath(b / "run_bundle.py", tmp)], tmp
    elif how == "absolute":
        cmd, cwd = [sys.executable, str(b / "run_bundle.py")], "/"
    elif how == "symlinked-folder":
        (tmp / "link").symlink_to(b)
        cmd, cwd = [sys.executable, "run_bundle.py"], tmp / "link"
    else:
        cmd, cwd = [sys.executable, str(b / "run_bundle.py")], "/"
        env["PYTHONPATH"] = f"{b}/" if how == "python-path-env" else f"{b}/runner/./"
    out = subprocess.run([*cmd, "--repeats", "1", "--warmup", "0"], cwd=cwd, env=env, capture_output=True, text=True)
    assert not canary.exists(), f"imported from the bundle folder: {canary.read_text()}"
    result = json.loads(out.stdout)
    assert out.returncode == 1 and not result["passed"]
    assert any("unexpected file: numpy.py" in p for p in result["integrity"]["problems"]), result


def test_bundle_runner_refuses_tampered_runner_before_loading_it(made):
    tmp, model = made
    [r] = pipeline.build(str(model), [str(tmp / "ok.toml")], out=tmp / "out", calibration=str(tmp / "cal.npz"))
    b = Path(r.bundle)
    canary = tmp / "CANARY"
    with open(b / "runner" / "edgepack_core" / "metrics.py", "a") as f:
        f.write(f"\nopen({str(canary)!r}, 'w')\n")
    out = subprocess.run([sys.executable, str(b / "run_bundle.py")], cwd="/", capture_output=True, text=True)
    assert out.returncode == 1 and not canary.exists()
    assert "nothing was loaded" in json.loads(out.stdout)["error"]

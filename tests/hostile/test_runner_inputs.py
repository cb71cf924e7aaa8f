"""The bundle runner (``run_bundle.py``, numpy core only) refuses hostile bundle contents the way the host does:
a pickled golden array, a golden zip bomb, a bit-flipped model file or a manifest that is not an object end with exit
2 and one JSON error (no traceback); the archive limits it applies are the numpy core's, shared with ``check``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import corpus as hostile
import fakes  # noqa: F401 - registers the fake source and backends

from edgepack import pipeline, safety
from edgepack.core import npz
from edgepack.errors import InputError


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    from fakes.source import make

    d = tmp_path_factory.mktemp("runner")
    model = make(d / "linear.fakemodel")
    np.savez(d / "cal.npz", input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
    (d / "ok.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    [r] = pipeline.build(str(model), [str(d / "ok.toml")], out=d / "dist", calibration=str(d / "cal.npz"),
                         judge="point")  # a handful of samples proves no rate budget: the subject is the runner
    assert r.passed
    return Path(r.bundle)


def _run(bundle: Path, *extra: str) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, "-I", str(bundle / "run_bundle.py"), "--repeats", "2", "--warmup", "0",
                        *extra], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]
    return p.returncode, json.loads(p.stdout), p.stderr


def _copy(good: Path, tmp: Path, mutate, resign: bool = True) -> Path:
    b = tmp / "b"
    shutil.copytree(good, b)
    mutate(b)
    if resign:
        hostile.resign(b)
    return b


def test_a_pickled_golden_array_is_one_json_error_and_never_unpickled(good_bundle, tmp_path):
    canary = tmp_path / "CANARY"
    b = _copy(good_bundle, tmp_path, lambda b: hostile.npz_raw(b / "golden/inputs.npz", {
        "input.npy": hostile.npy_header((1,), "|O") + hostile.pickle_payload(canary)}))
    code, out, _ = _run(b)
    assert code == 2 and "not numeric" in out["error"] and out["passed"] is False
    assert not canary.exists()


def test_a_golden_zip_bomb_is_refused_before_it_is_inflated(good_bundle, tmp_path):
    b = _copy(good_bundle, tmp_path, lambda b: hostile.zip_bomb(b / "golden/inputs.npz", "input.npy", 1 << 30,
                                                                  hostile.npy_header((1 << 28,))))
    t0 = time.monotonic()
    code, out, _ = _run(b)
    assert code == 2 and "decompression bomb" in out["error"] and out["hint"]
    assert time.monotonic() - t0 < 20  # inflating 1 GiB and failing took far longer (and 1.4 GB of memory)


def test_a_bit_flipped_model_file_is_one_json_error(good_bundle, tmp_path):
    def flip(b: Path) -> None:
        data = bytearray((b / "model.npz").read_bytes())
        for i in (40, 60, 80):
            data[i] ^= 0xFF
        (b / "model.npz").write_bytes(bytes(data))

    code, out, _ = _run(_copy(good_bundle, tmp_path, flip))  # re-signed: the loader itself meets the bad bytes
    assert code == 2 and out["error"].startswith("cannot run the bundle")
    code, out, _ = _run(_copy(good_bundle, tmp_path / "plain", flip, resign=False))
    assert code == 1 and out["error"].startswith("integrity check failed") and "nothing was loaded" in out["error"]
    assert out["integrity"]["problems"] == ["content changed: model.npz"]


def test_a_manifest_that_is_not_an_object_is_one_json_error(good_bundle, tmp_path):
    b = _copy(good_bundle, tmp_path, lambda b: (b / "manifest.json").write_text("[1, 2]"), resign=False)
    code, out, _ = _run(b)
    assert code == 2 and out["error"].startswith("cannot read manifest")


def test_a_golden_path_out_of_the_bundle_is_refused(good_bundle, tmp_path):
    (tmp_path / "outside.npz").write_bytes((good_bundle / "golden/inputs.npz").read_bytes())
    b = _copy(good_bundle, tmp_path, lambda b: None,
              resign=False)
    hostile.resign(b, lambda m: m["golden"].update(inputs="../outside.npz"))
    code, out, _ = _run(b)
    assert code == 2 and "not a path inside the bundle" in out["error"]


def test_the_host_and_the_runner_share_one_archive_rule(tmp_path, monkeypatch):
    bomb = hostile.zip_bomb(tmp_path / "x.npz", "input.npy", 96 << 20, hostile.npy_header((24 << 20,)))
    with pytest.raises(npz.ArchiveError, match="decompression bomb") as core_err:
        npz.load_npz(bomb)
    with pytest.raises(InputError) as host_err:
        safety.load_arrays(bomb, "array file")
    assert host_err.value.message == core_err.value.message
    monkeypatch.setenv("EDGEPACK_MAX_UNPACKED_MB", "abc")
    with pytest.raises(npz.ArchiveError, match="not a positive number"):
        npz.max_unpacked_bytes()
    with pytest.raises(InputError, match="EDGEPACK_MAX_UNPACKED_MB=abc is not a positive number"):
        safety.load_arrays(bomb, "array file")

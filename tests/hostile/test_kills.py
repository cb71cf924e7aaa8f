"""Kill -9 anywhere, SIGTERM, and the workers' memory limit, with the fake backends (no framework needed).

* 20 builds killed with SIGKILL at random moments leave nothing at the final path that ``verify`` refuses (it is
  either absent or a complete bundle), no worker outlives them, and the next build succeeds with no staging left.
* SIGTERM during a conversion ends the whole process group: exit 143, one ``error:`` line, no orphan, no staging.
* A worker that allocates past its memory limit is stopped; the error names the stage and the limit.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hostile_summary import SUMMARY

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
CLI = ["-c", "import fakes; from edgepack.cli import main; main()"]  # the real CLI, with the test fakes registered


def _env(marker: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env["EDGEPACK_TEST_MARK"] = marker
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _marked(marker: str) -> list[int]:
    """Live processes (zombies excluded) whose environment carries ``marker``: the build and its workers."""
    found = []
    needle = f"EDGEPACK_TEST_MARK={marker}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(d.name))
        except OSError:
            continue
    return found


def _wait_gone(marker: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = _marked(marker)
        if not alive:
            return []
        time.sleep(0.1)
    return _marked(marker)


@pytest.fixture
def setup(tmp_path):
    from fakes.source import make

    model = make(tmp_path / "linear.fakemodel")
    np.savez(tmp_path / "cal.npz", input=np.random.default_rng(0).standard_normal((64, 1, 32, 32)).astype(np.float32))
    (tmp_path / "ident.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    (tmp_path / "slow.toml").write_text('backend = "fake_noisy"\nprecision = "fp32"\n[options]\nmode = "slow"\n')
    (tmp_path / "hog.toml").write_text('backend = "fake_noisy"\nprecision = "fp32"\n[options]\nmode = "hog"\n')
    return tmp_path, model


def _build(tmp: Path, model: Path, target: str, marker: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *CLI, "build", str(model), "-t", str(tmp / target), "--out",
                             str(tmp / "out"), "-c", str(tmp / "cal.npz"),
                             "--judge", "point"], env=_env(marker, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*") if p.name.startswith((".staging-", ".old-")))


def test_kill_9_at_random_moments_leaves_no_lying_bundle(setup):
    from edgepack import bundle as bundles

    tmp, model = setup
    final = tmp / "out" / "linear" / "ident"
    t0 = time.monotonic()
    p = _build(tmp, model, "ident.toml", "calibrate")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    full = time.monotonic() - t0
    rng = random.Random(14)
    outcomes = {"absent": 0, "complete": 0}
    for i in range(20):
        if i % 2 == 0 and final.exists():  # half the kills land on an empty destination, half replace a bundle
            shutil.rmtree(final)
        marker = uuid.uuid4().hex
        p = _build(tmp, model, "ident.toml", marker)
        time.sleep(rng.uniform(0.0, full * 1.1))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        assert not _wait_gone(marker), f"kill {i}: workers outlived the killed build"
        if final.exists() or final.is_symlink():
            result = bundles.verify(final)
            assert result, f"kill {i}: a bundle at the final path fails verify: {result.problems}"
            outcomes["complete"] += 1
        else:
            outcomes["absent"] += 1
    marker = uuid.uuid4().hex
    p = _build(tmp, model, "ident.toml", marker)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert bundles.verify(final)
    assert not _leftovers(tmp / "out"), _leftovers(tmp / "out")
    assert not _wait_gone(marker)
    SUMMARY.append(f"kill -9: 20 builds killed within 0-{full * 1.1:.1f} s: final path absent {outcomes['absent']}, "
          f"complete and verified {outcomes['complete']}; the next build succeeded")


def test_sigterm_ends_the_process_group_and_removes_staging(setup):
    tmp, model = setup
    marker = uuid.uuid4().hex
    p = _build(tmp, model, "slow.toml", marker)
    deadline = time.monotonic() + 60
    staging = []
    while time.monotonic() < deadline and not staging:  # the conversion is under way once its file is staged
        staging = list((tmp / "out").rglob("half-written.bin"))
        time.sleep(0.05)
    assert staging, "the slow conversion never started"
    workers = [pid for pid in _marked(marker) if pid != p.pid]
    assert workers, "no worker process"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143, (p.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[0]] and "SIGTERM" in lines[0], err
    assert any(ln.startswith("hint:") for ln in lines)
    assert not _wait_gone(marker, 5), "a worker outlived SIGTERM"
    assert not _leftovers(tmp / "out") and not list((tmp / "out").rglob("half-written.bin"))
    assert not (tmp / "out" / "linear" / "slow").exists()
    # "nothing was left half-written": the build's holdout is staged too, published only when the build ends
    assert not list((tmp / "out").rglob("*.npz")), sorted((tmp / "out").rglob("*"))
    SUMMARY.append(f"SIGTERM during a conversion: exit 143, {len(workers)} worker(s) gone, no staging left")


def test_sigint_too(setup):
    tmp, model = setup
    marker = uuid.uuid4().hex
    p = _build(tmp, model, "slow.toml", marker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp / "out").rglob("half-written.bin")):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "SIGINT" in err and "Traceback" not in err, err
    assert not _wait_gone(marker, 5)
    assert not list((tmp / "out").rglob("*.npz")), sorted((tmp / "out").rglob("*"))
    assert not _leftovers(tmp / "out")


def test_worker_memory_limit_is_a_one_line_error(setup):
    tmp, model = setup
    marker = uuid.uuid4().hex
    p = _build(tmp, model, "hog.toml", marker, EDGEPACK_WORKER_MEMORY_MB="1024")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    lines = err.strip().splitlines()
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and "Traceback" not in err
    assert "hog conversion ran out of memory" in lines[0] and "1024 MB" in lines[0], lines[0]
    assert any("EDGEPACK_WORKER_MEMORY_MB" in ln for ln in lines if ln.startswith("hint:"))
    SUMMARY.append(f"memory limit: {lines[0]}")
    assert not _leftovers(tmp / "out") and not _wait_gone(marker, 5)


def test_worker_wall_clock_limit_is_a_one_line_error(setup):
    tmp, model = setup
    marker = uuid.uuid4().hex
    p = _build(tmp, model, "slow.toml", marker, EDGEPACK_TIMEOUT="3")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    first = err.strip().splitlines()[0]
    assert "slow conversion did not finish within 3 s" in first, first
    assert not _leftovers(tmp / "out") and not _wait_gone(marker, 5)


def test_sigterm_during_a_real_ort_conversion(tmp_path):
    """The real-conversion variant: onnxruntime quantization + the ORT converter's subprocess, stopped by SIGTERM."""
    pytest.importorskip("onnxruntime")
    from tinymodels import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "tiny.onnx", width=64)
    marker = uuid.uuid4().hex
    p = subprocess.Popen([sys.executable, "-m", "edgepack", "build", str(model), "-t", "android-ort-int8", "-c",
                          "digits", "--out", str(tmp_path / "out")], env=_env(marker), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "out").rglob(".staging-*")):
        time.sleep(0.02)
    assert list((tmp_path / "out").rglob(".staging-*")), "the conversion never started"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, (p.returncode, err)
    assert "Traceback" not in err and err.strip().splitlines()[0].startswith("error: interrupted (SIGTERM)")
    assert not _wait_gone(marker, 5), "a worker (or the converter's subprocess) outlived SIGTERM"
    assert not _leftovers(tmp_path / "out") and not (tmp_path / "out" / "tiny" / "android-ort-int8").exists()

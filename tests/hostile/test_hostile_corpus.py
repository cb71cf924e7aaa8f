"""A hostile corpus of ≥ 80 inputs (generated here): each is refused with exit 2, exactly one ``error:`` line and a
hint; 0 code executions (canary files), 0 writes outside the output folder (planted victims: every file of the case
folder is compared before and after), 0 hangs, 0 tracebacks, 0 signal deaths, nothing left behind.

Most cases run through ``driver.py`` (one Python start-up, one fork per case, ``edgepack.cli.main`` as
``python -m edgepack`` calls it); the cases marked ``real_cli`` also run as ``python -m edgepack`` processes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import corpus as hostile
import corpus_devices
from hostile_summary import SUMMARY

pytest.importorskip("onnx")

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
UNDER_TEST = os.environ.get("EDGEPACK_UNDER_TEST", str(REPO))  # another checkout's edgepack, to see the harness bite
DUMP = os.environ.get("EDGEPACK_HOSTILE_DUMP")  # write every case's verdict and error line here
ONLY = [w for w in os.environ.get("EDGEPACK_HOSTILE_ONLY", "").split(",") if w]  # classes or case names to run
TIMEOUT = float(os.environ.get("EDGEPACK_HOSTILE_TIMEOUT", "30"))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and symlink under ``root`` (symlinks not followed) with its content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                st = p.stat()
                if st.st_size > (64 << 20):  # the sparse 9 GB file and the bombs: size + mtime is enough
                    out[rel] = f"{st.st_size}:{st.st_mtime_ns}"
                else:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not p.is_dir():
                out[rel] = "special"
    return out


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([UNDER_TEST, str(TESTS), env.get("PYTHONPATH", "")])
    env.update({"EDGEPACK_TIMEOUT": "20", "EDGEPACK_WORKER_MEMORY_MB": "4096", "OPENBLAS_NUM_THREADS": "1",
                "COLUMNS": "100"})
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def fake_bundle(tmp_path_factory) -> Path:
    import fakes  # noqa: F401
    from fakes.source import make

    from edgepack import pipeline

    d = tmp_path_factory.mktemp("bundle")
    model = make(d / "linear.fakemodel")
    np.savez(d / "cal.npz", input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
    (d / "ident.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    [r] = pipeline.build(str(model), [str(d / "ident.toml")], out=d / "dist", calibration=str(d / "cal.npz"),
                         judge="point")  # 16 samples prove no rate budget; the subject is hostile input
    assert r.passed
    return Path(r.bundle)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, fake_bundle):
    from tinymodels import make_tiny_onnx

    root = tmp_path_factory.mktemp("hostile")
    tiny = make_tiny_onnx(root / "tiny.onnx")
    kw = dict(fake_model=fake_bundle.parent.parent.parent / "linear.fakemodel", tiny_onnx=tiny, bundle=fake_bundle)
    cases = hostile.build(root / "cases", **kw)
    for name in hostile.CORPUS_MODULES:
        cases += importlib.import_module(name).build(root / "cases", **kw)
    cases += corpus_devices.build(root / "cases", bundle=fake_bundle)  # the device harness (issue 21)
    before = {c.name: _snapshot(root / "cases" / c.name) for c in cases}
    return root, cases, before


def _judge(case: hostile.Case, res: dict, folder: Path, before: dict[str, str]) -> dict[str, str]:
    """The faults of one run (empty: refused cleanly)."""
    faults = {}
    text = res["stdout"] + res["stderr"]
    if res["hung"]:
        faults["hang"] = f"no answer within {TIMEOUT:.0f} s"
    if res["signal"] is not None:
        faults["signal"] = f"killed by signal {res['signal']}"
    if "Traceback" in text:
        faults["traceback"] = res["stderr"][-400:]
    if (folder / "CANARY").exists():
        faults["code"] = "the canary file exists: a payload ran"
    if Path("/tmp/edgepack-hostile-abs").exists():  # where the absolute profile name would write
        faults["outside_write"] = "/tmp/edgepack-hostile-abs was written"
    after = _snapshot(folder)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k != "CANARY")
    outside = [k for k in changed if not k.startswith("out/")]
    inside = [k for k in changed if k.startswith("out/")]
    if outside:
        faults["outside_write"] = ", ".join(outside[:5])
    if inside:
        faults["left_behind"] = ", ".join(inside[:5])
    if not res["hung"] and res["signal"] is None and case.entry == "runner":
        # a bundle's runner answers in JSON on stdout: one object with an error, exit 2, nothing on stderr
        try:
            verdict = json.loads(res["stdout"])
        except ValueError:
            verdict = None
        if res["exit_code"] != case.expect_exit:
            faults["exit"] = f"exit {res['exit_code']}: {res['stdout'][-300:]} {res['stderr'][-300:]}"
        if not isinstance(verdict, dict) or verdict.get("passed") is not False or not verdict.get("error"):
            faults["lines"] = f"not one JSON error: {res['stdout'][-300:]!r}"
        elif case.fragment and case.fragment not in verdict["error"]:
            faults["message"] = f"'{case.fragment}' not in {verdict['error'][-300:]!r}"
        if res["stderr"].strip():
            faults["stderr"] = res["stderr"][-300:]
    elif not res["hung"] and res["signal"] is None and case.expect_exit == 0:
        if res["exit_code"] != 0:
            faults["exit"] = f"exit {res['exit_code']}: {res['stderr'][-300:]}"
        missing = [w for w in case.stdout_has if w not in res["stdout"]]
        if missing:
            faults["message"] = f"{missing} not in {res['stdout'][-600:]!r}"
    elif not res["hung"] and res["signal"] is None:
        errors = [ln for ln in res["stderr"].splitlines() if ln.startswith("error:")]
        hints = [ln for ln in res["stderr"].splitlines() if ln.startswith("hint:")]
        if res["exit_code"] != 2:
            faults["exit"] = f"exit {res['exit_code']}: {res['stderr'][-300:]}"
        if len(errors) != 1 or not hints:
            faults["lines"] = f"{len(errors)} error lines, {len(hints)} hint lines: {res['stderr'][-300:]!r}"
        if case.fragment and case.fragment not in res["stderr"]:
            faults["message"] = f"'{case.fragment}' not in {res['stderr'][-300:]!r}"
    if res.get("orphans"):
        faults["orphan"] = "a process of the case outlived it"
    return faults


def _report(kind: str, cases, results, faults) -> list[str]:
    by_class = Counter(c.cls for c in cases)
    counts = Counter(k for f in faults.values() for k in f)
    lines = [
        f"{kind}: {len(cases)} hostile inputs ({', '.join(f'{k} {v}' for k, v in sorted(by_class.items()))}); "
        f"refused cleanly {sum(1 for f in faults.values() if not f)}; "
        f"code executions {counts['code']}, outside writes {counts['outside_write']}, hangs {counts['hang']}, "
        f"tracebacks {counts['traceback']}, signal deaths {counts['signal']}, left behind {counts['left_behind']}, "
        f"orphans {counts['orphan']}, wrong exit {counts['exit']}, not one error line + hint {counts['lines']}; "
        f"slowest {max(r['seconds'] for r in results):.2f} s, total {sum(r['seconds'] for r in results):.1f} s",
    ]
    return lines


def test_hostile_corpus_is_refused_cleanly(generated):
    root, cases, before = generated
    assert len(cases) >= 80
    modules = [importlib.import_module(name) for name in hostile.CORPUS_MODULES]
    assert {c.cls for c in cases} == set(hostile.CLASSES).union(*(m.CLASSES for m in modules))
    for m in modules:  # each module's own share of the corpus
        assert sum(c.cls in m.CLASSES for c in cases) >= m.MIN_CASES, m.__name__
    if ONLY:
        cases = [c for c in cases if c.cls in ONLY or c.name in ONLY]
    payload = [{**asdict(c), "argv_dir": str(root / "cases" / c.name)} for c in cases]
    (root / "cases.json").write_text(json.dumps(payload))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / "driver.py"), str(root / "cases.json"),
                           str(root / "results.json"), str(TIMEOUT)], env=_env(), capture_output=True, text=True,
                          timeout=60 * 20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((root / "results.json").read_text())
    faults = {c.name: _judge(c, r, root / "cases" / c.name, before[c.name]) for c, r in zip(cases, results)}
    SUMMARY.extend(_report("corpus (driver)", cases, results, faults))
    if DUMP:
        Path(DUMP).write_text("\n".join(
            f"{c.cls:10} {c.name:45} exit={r['exit_code']} {r['seconds']:.2f}s faults={sorted(faults[c.name])} | "
            + " / ".join(ln for ln in r["stderr"].splitlines() if ln.startswith(("error:", "hint:")))
            for c, r in zip(cases, results)) + "\n")
    SUMMARY.append(f"  wall time {time.monotonic() - t0:.1f} s")
    bad = {k: v for k, v in faults.items() if v}
    assert not bad, json.dumps(bad, indent=1)[:6000]


def test_hostile_cases_through_python_m_edgepack(generated):
    """The same judgement for the cases marked real_cli, each its own `python -m edgepack` process."""
    root, cases, before = generated
    chosen = [c for c in cases if c.real_cli]
    assert len(chosen) >= 8
    results = []
    for c in chosen:
        folder = root / "cases" / c.name
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-m", "edgepack", *c.argv], cwd=folder, env=_env(c.env),
                               capture_output=True, text=True, timeout=TIMEOUT, start_new_session=True)
            res = {"hung": False, "signal": -p.returncode if p.returncode < 0 else None,
                   "exit_code": p.returncode if p.returncode >= 0 else None, "stdout": p.stdout, "stderr": p.stderr}
        except subprocess.TimeoutExpired as e:
            res = {"hung": True, "signal": None, "exit_code": None, "stdout": str(e.stdout or ""),
                   "stderr": str(e.stderr or "")}
        res["seconds"] = time.monotonic() - t0
        results.append(res)
    faults = {c.name: _judge(c, r, root / "cases" / c.name, before[c.name]) for c, r in zip(chosen, results)}
    SUMMARY.extend(_report("python -m edgepack", chosen, results, faults))
    bad = {k: v for k, v in faults.items() if v}
    assert not bad, json.dumps(bad, indent=1)[:6000]

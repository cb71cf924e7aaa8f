"""The device harness against hostile data, at each mechanism (issue 21): quoting of every template value, a
remote folder of the harness's own, no-follow writes, read-only histories, killed process groups (time-out,
SIGINT/SIGTERM), and a report that runs no script in a real browser. No ML framework needed."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from edgepack.devices import history, regressions, report, runs
from edgepack.devices.inventory import Device
from edgepack.devices.transports import CommandTransport, execute, with_marker
from edgepack.devices.verdicts import INFRA, NOT_RUN, PASS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "hostile"))
from corpus_devices import foreign_db, good_history, result_row  # noqa: E402

GOOD = {"passed": True, "parity": {"samples": 4, "checks": [{"name": "c", "passed": True}], "metrics": {}},
        "latency": {"p50_ms": 1.0, "samples_ms": [1.0, 1.1]}}


def _bundle(folder: Path, runner: str = "print('runner')\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "model.ort").write_bytes(b"\0" * 16)
    (folder / "run_bundle.py").write_text(runner)
    (folder / "manifest.json").write_text(json.dumps({"target": {"name": "android-ort-int8"},
                                                      "files": [{"path": "model.ort"}],
                                                      "artifact": {"backend": "ort_mobile",
                                                                   "runtime": {"model": "model.ort"}}}))
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _procs_with(token: str) -> list[int]:
    """Live processes (zombies excluded) whose command line holds ``token``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if token.encode() in (d / "cmdline").read_bytes() and \
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(d.name))
        except OSError:
            continue
    return found


def _gone(token: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _procs_with(token):
        time.sleep(0.1)
    return _procs_with(token)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    return env


# ------------------------------------------------------------------ code execution from data


def test_every_command_template_value_is_shell_quoted(tmp_path):
    """A bundle folder whose name is shell (`{name}` used to be substituted raw) is one word to the template."""
    evil = "x;touch CANARY;$(touch CANARY2)`touch CANARY3`"
    b = _bundle(tmp_path / "b" / evil, f"import json; print(json.dumps({GOOD!r}))\n")
    seen = tmp_path / "seen.txt"
    dev = Device(name="cmd", kind="command", retries=0, remote=str(tmp_path / "remote" / "{name}"),
                 push=f"printf '%s|%s|%s' {{name}} {{remote}} {{bundle}} > {seen}",
                 run=f"{sys.executable} {{bundle}}/run_bundle.py")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = runs.run_one(dev, b, "parity", repeats=1, warmup=0)
    finally:
        os.chdir(cwd)
    assert not list(tmp_path.glob("CANARY*")), "a bundle name ran as shell"
    assert seen.read_text() == f"{evil}|{tmp_path / 'remote' / evil}|{b}"
    assert r.status == PASS, r


def test_device_run_refuses_a_bundle_name_that_is_not_a_name(tmp_path):
    from typer.testing import CliRunner

    from edgepack.cli import app

    _bundle(tmp_path / "bundles" / "ok;touch CANARY")
    (tmp_path / "devices.toml").write_text('[[device]]\nname = "c"\nkind = "command"\npush = "echo {name}"\n'
                                           'run = "echo {name}"\n')
    res = CliRunner().invoke(app, ["device", "run", str(tmp_path / "bundles"), "--devices",
                                   str(tmp_path / "devices.toml"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "bundle folder name" in res.stderr and "hint:" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the harness deletes only what it created

FAKE_ADB = """#!{python}
import shutil, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    shutil.copytree(args[1].rstrip("/."), args[2], dirs_exist_ok=True)
    sys.exit(0)
if args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", " ".join(args[1:])]).returncode)
sys.exit(1)
"""


@pytest.mark.parametrize("remote", ["{phone}", "{phone}/", "{phone}/{{name}}"], ids=["folder", "slash", "name"])
def test_adb_works_in_a_fresh_folder_of_its_own_and_removes_only_that(tmp_path, remote):
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    phone = tmp_path / "phone"
    phone.mkdir()
    (phone / "precious.txt").write_text("the board keeps this\n")
    (phone / "run_bundle.py").write_text("kept too\n")
    dev = Device(name="p", kind="adb", serial="s", adb=str(adb), python=sys.executable, retries=0,
                 remote=remote.format(phone=phone))
    b = _bundle(tmp_path / "b" / "android-ort-int8", f"import json; print(json.dumps({GOOD!r}))\n")
    r = runs.run_one(dev, b, "parity", repeats=1, warmup=0)
    assert r.status == PASS, r
    assert sorted(p.name for p in phone.iterdir()) == ["precious.txt", "run_bundle.py"]
    assert (phone / "run_bundle.py").read_text() == "kept too\n"


def test_adb_latency_only_run_also_keeps_the_folder(tmp_path):
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    perf = tmp_path / "perf"
    perf.write_text(f"#!/bin/sh\ncat {HERE / 'fixtures' / 'onnxruntime_perf_test_pixel.txt'}\n")
    perf.chmod(0o755)
    phone = tmp_path / "phone"
    phone.mkdir()
    (phone / "precious.txt").write_text("x")
    dev = Device(name="p", kind="adb", serial="s", adb=str(adb), ort_perf_test=str(perf), retries=0,
                 remote=str(phone))
    r = runs.run_one(dev, _bundle(tmp_path / "b" / "t"), "parity", repeats=5, warmup=1)
    assert r.status == NOT_RUN and [p.name for p in phone.iterdir()] == ["precious.txt"]


# ------------------------------------------------------------------ writes through symlinks


def test_report_and_run_outputs_replace_a_planted_symlink_never_follow_it(tmp_path):
    from typer.testing import CliRunner

    from edgepack.cli import app

    victim = tmp_path / "victim.txt"
    victim.write_text("must stay\n")
    good_history(tmp_path / "h.sqlite")
    rep = tmp_path / "rep"
    rep.mkdir()
    for name in ("report.md", "report.html"):
        os.symlink(victim, rep / name)
    res = CliRunner().invoke(app, ["device", "report", "--history", str(tmp_path / "h.sqlite"), "--out", str(rep)])
    assert res.exit_code == 0, res.stderr
    assert victim.read_text() == "must stay\n"
    assert not (rep / "report.html").is_symlink() and "<svg" in (rep / "report.html").read_text()
    record = {"id": "r1", "started": "2026-12-01T00:00:00+00:00", "results": [{**result_row(), "attempts": ["PASS"]}]}
    for writer, name in ((runs.write_json, "r1.json"), (runs.write_junit, "r1.junit.xml")):
        os.symlink(victim, tmp_path / name)
        writer(record, tmp_path / name)
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).stat().st_size > 0
    assert victim.read_text() == "must stay\n"


# ------------------------------------------------------------------ the history: read-only, edgepack's only


def test_report_opens_the_history_read_only(tmp_path):
    h = good_history(tmp_path / "h.sqlite", runs=3)
    before, mtime = _sha(h), h.stat().st_mtime_ns
    data = history.series(h)
    assert len(data) == 1 and len(next(iter(data.values()))) == 3
    assert _sha(h) == before and h.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("h.sqlite-*"))  # no journal or WAL left either
    os.chmod(h, 0o444)  # a history on a read-only share is readable
    try:
        assert history.series(h)
    finally:
        os.chmod(h, 0o644)


@pytest.mark.parametrize("make", ["empty", "foreign", "newer"])
def test_neither_report_nor_run_writes_into_a_file_that_is_not_a_history(tmp_path, make):
    h = tmp_path / "h.sqlite"
    if make == "empty":
        h.write_bytes(b"")
    elif make == "foreign":
        foreign_db(h)
    else:
        good_history(h)
        con = sqlite3.connect(h)
        con.execute("PRAGMA user_version = 7")
        con.commit()
        con.close()
    before = _sha(h)
    with pytest.raises(history.HistoryError):
        history.series(h)
    with pytest.raises(history.HistoryError):
        history.check_appendable(h)
    with pytest.raises(history.HistoryError):
        history.append(h, {"id": "x", "started": "s", "results": []})
    assert _sha(h) == before


def test_a_history_from_before_the_mark_is_read_and_upgraded_on_append(tmp_path):
    h = tmp_path / "old.sqlite"
    con = sqlite3.connect(h)  # the schema of earlier releases: no budget/host columns, no application_id
    con.executescript(history.SCHEMA.replace(", budget TEXT, host TEXT", ""))
    con.execute("INSERT INTO results (run_id, started, device, bundle, target, config, status, samples_ms, parity, "
                "runtime) VALUES ('r0', '2026-01-01', 'd', 'm/t', 't', 'parity', 'PASS', '[1.0]', '{}', '{}')")
    con.commit()
    con.close()
    assert history.series(h)[("d", "m/t", "parity")][0]["budget"] == {}
    history.append(h, {"id": "r1", "started": "2026-01-02", "results": [result_row()]})
    con = sqlite3.connect(h)
    assert con.execute("PRAGMA application_id").fetchone()[0] == history.APPLICATION_ID
    con.close()
    assert sum(len(v) for v in history.series(h).values()) == 2


# ------------------------------------------------------------------ processes: time-outs and signals


def test_a_hung_push_is_killed_with_its_process_group(tmp_path):
    token = f"{uuid.uuid4().int % 10**6 + 10**6}"
    b = _bundle(tmp_path / "b" / "t")
    dev = Device(name="cmd", kind="command", retries=0, timeout_s=1.0, remote=str(tmp_path / "r"),
                 push=f"sh -c 'sleep {token}' & sleep {token}", run="true")
    t0 = time.monotonic()
    raw = CommandTransport(dev).run(b, repeats=1, warmup=0, config="parity")
    assert time.monotonic() - t0 < 15
    assert raw.infra == "push timed out after 1 s (its process group was killed)", raw
    assert not _gone(token), "the push template's children outlived its time-out"
    assert runs.run_one(dev, b, "parity", repeats=1, warmup=0).status == INFRA


def test_an_interrupted_wait_kills_the_device_side_group():
    token = f"{uuid.uuid4().int % 10**6 + 2 * 10**6}"

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(["sh", "-c", with_marker(f"sleep {token} & sleep {token}")], 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not _gone(token)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_signals_during_device_run_end_every_device_group(tmp_path, sig, code, word):
    token = f"{uuid.uuid4().int % 10**6 + 3 * 10**6}"
    _bundle(tmp_path / "bundles" / "t")
    (tmp_path / "devices.toml").write_text(
        f'[[device]]\nname = "c"\nkind = "command"\npush = "true"\nretries = 0\n'
        f'run = "sh -c \'sleep {token}\' & sleep {token}; true"\n')
    p = subprocess.Popen([sys.executable, "-m", "edgepack", "device", "run", str(tmp_path / "bundles"), "--devices",
                          str(tmp_path / "devices.toml"), "--out", str(tmp_path / "out")], cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_procs_with(token)) < 2:
        time.sleep(0.05)
    assert len(_procs_with(token)) >= 2, "the device-side run never started"
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == code, (p.returncode, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and [ln for ln in lines if ln.startswith("error:")] == [lines[0]], err
    assert lines[0].startswith(f"error: interrupted ({word})") and any(ln.startswith("hint:") for ln in lines)
    assert not _gone(token), "a device-side process outlived the interrupted run"
    assert not (tmp_path / "out" / "history.sqlite").exists()


# ------------------------------------------------------------------ a hostile history's report in a browser

PAYLOAD = "<script>document.title='XSS-RAN'</script><img src=x onerror=\"document.title='XSS-RAN'\">"


def _hostile_history(path: Path) -> None:
    evil = result_row(device=f"d{PAYLOAD}", target=f"t{PAYLOAD}", config=f"c{PAYLOAD}", status=PAYLOAD,
                      reason=PAYLOAD, latency_where=PAYLOAD, runtime={"runtime": PAYLOAD,
                                                                     "inference_precision": PAYLOAD})
    evil["budget"] = {"status": PAYLOAD, "class": PAYLOAD, "rows": [{"name": PAYLOAD, "limit": 1.0, "measured": 2.0}]}
    for i in range(3):
        history.append(path, {"id": f"r{i}", "started": f"2026-11-0{i + 1}", "results": [evil, result_row()]})


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (scripts/setup-devices.sh, or apt-get install chromium)")
    return found


def _dump_dom(chromium: str, page: Path, tmp_path: Path) -> str:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                           "--virtual-time-budget=2000", "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def test_a_hostile_history_runs_no_script_in_chromium(tmp_path):
    chromium = _chromium()
    _hostile_history(tmp_path / "h.sqlite")
    data = history.series(tmp_path / "h.sqlite")
    page = report.html_page(data, regressions.check_all(data))
    assert "<script" not in page and "onerror=\"" not in page
    assert "<meta http-equiv=\"Content-Security-Policy\"" in page and "script-src 'none'" in page
    (tmp_path / "report.html").write_text(page)
    dom = _dump_dom(chromium, tmp_path / "report.html", tmp_path)
    assert "<title>edgepack device runs</title>" in dom and "XSS-RAN</title>" not in dom, dom[:400]
    assert f">{report.UNKNOWN}</b>" in dom  # the forged status is shown as unknown, not as markup
    # the policy holds on its own: the same page with a script spliced in past the escaping still runs nothing
    spliced = page.replace("</h1>", "</h1><script>document.title='XSS-RAN'</script>"
                                    "<img src=x onerror=\"document.title='XSS-RAN'\">")
    (tmp_path / "spliced.html").write_text(spliced)
    dom = _dump_dom(chromium, tmp_path / "spliced.html", tmp_path)
    assert "<title>edgepack device runs</title>" in dom and "XSS-RAN</title>" not in dom
    # and the check can fail: without the policy the spliced script does run
    (tmp_path / "bare.html").write_text(spliced.replace(page[page.index("<meta http-equiv"):page.index("<title>")],
                                                        ""))
    assert "XSS-RAN</title>" in _dump_dom(chromium, tmp_path / "bare.html", tmp_path)


# ------------------------------------------------------------------ a device's output is data too


@pytest.mark.parametrize("verdict", [
    {**GOOD, "parity": [1]}, {**GOOD, "parity": {**GOOD["parity"], "checks": ["x"]}}, {**GOOD, "latency": [1.0]},
    {**GOOD, "runtime": "ort"}, {"passed": False, "integrity": {"problems": 5}},
    {**GOOD, "parity": {**GOOD["parity"], "metrics": {"y": 3}}},
], ids=["parity-list", "checks-strings", "latency-list", "runtime-string", "problems-number", "metric-number"])
def test_a_malformed_verdict_from_the_device_is_infra_not_a_crash(tmp_path, verdict):
    b = _bundle(tmp_path / "b" / "t", f"import json, sys; print(json.dumps({verdict!r})); sys.exit(0)\n")
    r = runs.run_one(Device(name="l", retries=0), b, "parity", repeats=1, warmup=0)
    assert r.status == INFRA and "no verdict" in r.reason, r


def test_odd_numbers_from_the_device_never_poison_the_history(tmp_path):
    odd = {**GOOD, "latency": {"p50_ms": float("nan"), "p90_ms": "slow", "samples_ms": [1.0, "x", None, 1e309, 2.0],
                               "tool": "t"},
           "parity": {**GOOD["parity"], "metrics": {"y": {"cosine": "high", "top1_agreement": 0.5}}},
           "runtime": {"runtime": "ort", "nested": {"a": 1}}}
    b = _bundle(tmp_path / "b" / "t", f"print({json.dumps(odd)!r})\n")  # NaN and Infinity as a runner may print
    r = runs.run_one(Device(name="l", retries=0), b, "parity", repeats=1, warmup=0)
    assert r.status == PASS, r
    assert r.latency == {"samples_ms": [1.0, 2.0], "tool": "t"} and r.parity == {"y": {"top1_agreement": 0.5}}
    record = {"id": "r1", "started": "2026-12-01", "results": [__import__("dataclasses").asdict(r)]}
    runs.write_json(record, tmp_path / "r1.json")
    history.append(tmp_path / "h.sqlite", record)
    [row] = history.series(tmp_path / "h.sqlite")[("l", "b/t", "parity")]
    assert row["samples_ms"] == [1.0, 2.0] and row["runtime"]["runtime"] == "ort"


def test_the_markdown_report_carries_no_markup_from_the_history(tmp_path):
    _hostile_history(tmp_path / "h.sqlite")
    data = history.series(tmp_path / "h.sqlite")
    md = report.markdown(data, regressions.check_all(data))
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| d")]
    assert rows and all(ln.count(" | ") == 11 for ln in rows)  # no cell break smuggled in through a "|"
    assert all(f"| {report.UNKNOWN} |" in ln for ln in rows if "&lt;script" in ln.split(" | ")[0])


@pytest.mark.parametrize("make", ["fifo", "devzero", "list", "strings", "nan"])
def test_the_bundles_host_report_is_data(tmp_path, make):
    b = _bundle(tmp_path / "b" / "t", f"import json; print(json.dumps({GOOD!r}))\n")
    rep = b / "report.json"
    if make == "fifo":
        os.mkfifo(rep)
    elif make == "devzero":
        os.symlink("/dev/zero", rep)
    else:
        rep.write_text({"list": "[1, 2]", "strings": '{"parity": {"passed": "yes"}, "latency": {"p50_ms": "fast"}}',
                        "nan": '{"parity": {"passed": true}, "latency": {"p50_ms": NaN, "runtime": []}}'}[make])
    t0 = time.monotonic()
    if make == "devzero":  # in a child whose files cannot pass 64 MB: a copy through the link must not fill the disk
        code = ("import json, dataclasses, pathlib; from edgepack.devices import runs; "
                "from edgepack.devices.inventory import Device; "
                f"r = runs.run_one(Device(name='l', retries=0), pathlib.Path({str(b)!r}), 'parity', repeats=1, "
                "warmup=0); print(json.dumps(dataclasses.asdict(r)))")
        p = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20)))
        assert p.returncode == 0, p.stderr[-2000:]
        r = runs.Result(**json.loads(p.stdout.strip().splitlines()[-1]))
    else:
        r = runs.run_one(Device(name="l", retries=0), b, "parity", repeats=1, warmup=0)
    assert time.monotonic() - t0 < 60
    if make == "fifo":  # the copy to the device refuses it (and `device run` refuses the bundle before any copy)
        assert r.status == INFRA and "named pipe" in r.reason, r
        with pytest.raises(__import__("edgepack.errors").errors.BundleError, match="not a regular file"):
            runs.check_bundle(b)
    else:
        assert r.status == PASS, r
    assert r.host in ({}, {"where": "host", "passed": None, "parity": {}, "p50_ms": None, "p90_ms": None,
                           "inference_precision": None},
                      {"where": "host", "passed": True, "parity": {}, "p50_ms": None, "p90_ms": None,
                       "inference_precision": None})
    runs.write_json({"id": "r", "started": "s", "results": [__import__("dataclasses").asdict(r)]}, tmp_path / "r.json")

"""Hostile inputs for the device harness (`edgepack device run|report|setup`), judged like the rest of the corpus
(``test_hostile_corpus.py``): exit 2, one ``error:`` line + hint, no traceback, no canary, every file of the case
folder unchanged (a history a report refuses is not written to; nothing is created under ``out/``), no hang, no
process left.

Surfaces: the inventory (``devices.toml``: files, TOML, types, bounds, templates, option injection), bundle folders
and manifests as ``device run`` finds them (names substituted into device commands), histories (empty, foreign,
corrupt, wrong schema, malformed rows) for ``device report`` and ``device run``, and Rich markup in names and paths.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

from corpus import Case, fifo, make_case, symlink

RUN = ["device", "run", "{D}/bundles", "--devices", "{D}/devices.toml", "--out", "{D}/out"]
REPORT = ["device", "report", "--history", "{D}/h.sqlite", "--out", "{D}/out/rep"]
LOCAL = '[[device]]\nname = "host"\nkind = "local"\n'


def result_row(**over) -> dict:
    """One result as ``runs.run_all`` records it (a plausible PASS on a board)."""
    row = {"device": "board", "kind": "ssh", "device_class": "jetson", "bundle": "/b/m/android-ort-int8",
           "target": "android-ort-int8", "backend": "ort_mobile", "config": "parity", "status": "PASS", "reason": "",
           "diagnosis": "", "latency_where": "device", "seconds": 1.0,
           "latency": {"p50_ms": 1.0, "p90_ms": 1.2, "samples_ms": [1.0, 1.1, 0.9, 1.0, 1.2]},
           "parity": {"scores": {"top1_agreement": 0.99, "sample_cosine_p1": 0.999}},
           "runtime": {"runtime": "onnxruntime 1.20"}, "budget": {}, "host": {}}
    row.update(over)
    return row


def good_history(path: Path, runs: int = 2) -> Path:
    from edgepack.devices import history

    for i in range(runs):
        history.append(path, {"id": f"run{i}", "started": f"2026-11-0{i + 1}T02:00:00+00:00", "build_host": "ci",
                              "results": [result_row()]})
    return path


def tampered_history(sql: str, *params) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        good_history(d / "h.sqlite")
        con = sqlite3.connect(d / "h.sqlite")
        con.execute(sql, params)
        con.commit()
        con.close()
    return setup


def foreign_db(path: Path, app_id: int = 0, version: int = 0, tables: str = "CREATE TABLE users (id, name)") -> Path:
    con = sqlite3.connect(path)
    con.executescript(tables)
    con.execute(f"PRAGMA application_id = {app_id}")
    con.execute(f"PRAGMA user_version = {version}")
    con.execute("INSERT INTO users VALUES (1, 'alice')") if "users" in tables else None
    con.commit()
    con.close()
    return path


def build(root: Path, bundle: Path) -> list[Case]:
    """Write every device-harness case under ``root/<name>/``; ``bundle`` is a finished fake bundle."""
    cases: list[Case] = []

    def case(name: str, cls: str, argv: list[str], setup: Callable[[Path], None] | None = None, **kw) -> None:
        cases.append(make_case(root, f"device-{name}", cls, argv, setup, **kw))

    def bundles(d: Path, name: str = "ident") -> Path:
        (d / "bundles").mkdir(exist_ok=True)
        return Path(shutil.copytree(bundle, d / "bundles" / name))

    def inventory(text: str | bytes, with_bundle: bool = True) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            if with_bundle:
                bundles(d)
            path = d / "devices.toml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return setup

    def device(body: str, name: str = "board") -> str:
        return f'[[device]]\nname = "{name}"\n{body}\n'

    # ---------------------------------------------------------------- the inventory file itself
    case("inventory-fifo", "hangs", RUN, lambda d: (bundles(d), fifo(d / "devices.toml")), fragment="FIFO",
         real_cli=True)
    case("inventory-devzero", "hangs", RUN, lambda d: (bundles(d), symlink(d / "devices.toml", "/dev/zero")),
         fragment="device")
    case("inventory-folder", "files", RUN, lambda d: (bundles(d), (d / "devices.toml").mkdir()), fragment="folder")
    case("inventory-huge", "files", RUN, inventory(b"# " + b"x" * (20 << 20) + b"\n"), fragment="limit")
    case("inventory-non-utf8", "tracebacks", RUN, inventory(b'[[device]]\nname = "\xff\xfe"\n'), fragment="UTF-8")
    case("inventory-garbage", "tracebacks", RUN, inventory(b"\x00\x01[[[==="), fragment="TOML")
    case("inventory-deep-nesting", "tracebacks", RUN, inventory("a = " + "[" * 5000 + "]" * 5000 + "\n"))
    case("inventory-device-not-array", "tracebacks", RUN, inventory("device = 1\n"), fragment="array of tables")
    case("inventory-device-entry-string", "tracebacks", RUN, inventory('device = ["x"]\n'), fragment="not a table")
    case("inventory-no-devices", "tracebacks", RUN, inventory("# nothing here\n"), fragment="no device")
    case("inventory-only-ios", "tracebacks", RUN, inventory(device('kind = "ios"')), fragment="no device")
    case("inventory-no-device-takes-the-backend", "tracebacks", RUN,
         inventory(device('kind = "local"\nbackends = ["tensorrt"]')), fragment="backends")
    case("inventory-top-level-typo", "tracebacks", RUN, inventory('[[devices]]\nname = "x"\n'), fragment="devices")

    # ---------------------------------------------------------------- types and bounds (the error names the key)
    for tag, body, key in (
        ("timeout-inf", "timeout_s = inf", "timeout_s"),
        ("timeout-nan", "timeout_s = nan", "timeout_s"),
        ("timeout-1e300", "timeout_s = 1e300", "timeout_s"),
        ("timeout-negative", "timeout_s = -5", "timeout_s"),
        ("timeout-string", 'timeout_s = "10"', "timeout_s"),
        ("retries-1e9", "retries = 1000000000", "retries"),
        ("retries-negative", "retries = -1", "retries"),
        ("retries-float", "retries = 2.5", "retries"),
        ("port-string", 'kind = "ssh"\nhost = "h"\npython = "python3"\nport = "22"', "port"),
        ("port-huge", 'kind = "ssh"\nhost = "h"\npython = "python3"\nport = 70000', "port"),
        ("unknown-key", 'hots = "h"', "hots"),
        ("unknown-kind", 'kind = "phone"', "kind"),
        ("backends-not-strings", "backends = [1, 2]", "backends"),
        ("name-not-string", None, "name"),
        ("name-missing", "", "name"),
        ("python-newline", 'python = "python3\\nrm -rf /"', "python"),
        ("latency-emulated-string", 'latency_emulated = "yes"', "latency_emulated"),
    ):
        text = ("[[device]]\nname = 5\n" if tag == "name-not-string" else
                f"[[device]]\n{body}\n" if tag == "name-missing" else device(body))
        case(f"inventory-{tag}", "hangs" if tag.startswith(("timeout", "retries")) else "tracebacks", RUN,
             inventory(text), fragment=key)
    case("inventory-markup-names-twice", "tracebacks", RUN,
         inventory(device('kind = "local"', "[bold red]x[/]") * 2), fragment="[bold red]x[/]")
    case("inventory-unknown-device-markup", "tracebacks", [*RUN, "--device", "[/]nope"], inventory(LOCAL),
         fragment="[/]nope")

    # ---------------------------------------------------------------- templates and option injection
    cmd = 'kind = "command"\npush = "true"\nrun = "true"\n'
    case("template-attribute", "code", RUN,
         inventory(device(cmd.replace('push = "true"', 'push = "echo {bundle.__class__.__init__.__globals__}"'))),
         fragment="placeholder")
    case("template-unknown-placeholder", "code", RUN,
         inventory(device(cmd.replace('run = "true"', 'run = "echo {home}"'))), fragment="{home}")
    case("template-unbalanced", "tracebacks", RUN,
         inventory(device(cmd.replace('run = "true"', 'run = "echo {"'))), fragment="template")
    case("remote-name-in-the-middle", "paths", RUN,
         inventory(device('kind = "adb"\nserial = "s"\nremote = "/data/{name}/x"')), fragment="remote")
    case("remote-option", "paths", RUN, inventory(device('kind = "adb"\nserial = "s"\nremote = "-rf"')),
         fragment="remote")
    case("ssh-host-proxycommand", "code", RUN,
         inventory(device('kind = "ssh"\nhost = "-oProxyCommand=touch CANARY"\npython = "python3"')),
         fragment="host", real_cli=True)
    case("ssh-user-option", "code", RUN,
         inventory(device('kind = "ssh"\nhost = "h"\nuser = "-oProxyCommand=touch CANARY"\npython = "python3"')),
         fragment="user")
    case("adb-serial-option", "code", RUN, inventory(device('kind = "adb"\nserial = "-H evil"')), fragment="serial")
    case("adb-client-missing", "tracebacks", RUN,
         inventory(device('kind = "adb"\nserial = "s"\nadb = "/nonexistent/adb"')), fragment="adb client")

    # ---------------------------------------------------------------- bundle folders as `device run` finds them
    inject = device('kind = "command"\npush = "echo {name}"\nrun = "echo {name}"\nremote = "/tmp/{name}"')
    for tag, name in (("semicolon", "x;touch CANARY;y"), ("dollar", "$(touch CANARY)"), ("backtick", "`touch CANARY`"),
                      ("newline", "x\ntouch CANARY"), ("markup", "[bold]b[red]"), ("dash", "-rf"),
                      ("space", "a b")):
        case(f"bundle-name-{tag}", "code" if "CANARY" in name else "tracebacks", RUN,
             lambda d, n=name: (bundles(d, n), (d / "devices.toml").write_text(inject)),
             fragment="bundle folder name", real_cli=tag == "semicolon")

    def manifest(raw: bytes | None = None, make: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            b = bundles(d)
            (d / "devices.toml").write_text(LOCAL)
            (b / "manifest.json").unlink()
            if raw is not None:
                (b / "manifest.json").write_bytes(raw)
            if make:
                make(b / "manifest.json")
        return setup

    case("manifest-list", "tracebacks", RUN, manifest(b"[1, 2, 3]"), fragment="JSON list")
    case("manifest-invalid-json", "tracebacks", RUN, manifest(b'{"target": '), fragment="JSON")
    case("manifest-non-utf8", "tracebacks", RUN, manifest(b'{"target": "\xff"}'), fragment="UTF-8")
    case("manifest-no-target", "tracebacks", RUN, manifest(b'{"artifact": {"backend": "x"}}'), fragment="target")
    case("manifest-target-not-table", "tracebacks", RUN,
         manifest(b'{"target": "x", "artifact": {"backend": 1}}'), fragment="target")
    case("manifest-deep-nesting", "tracebacks", RUN, manifest(b"[" * 100_000 + b"]" * 100_000))
    case("manifest-huge", "files", RUN, manifest(b'{"a": "' + b"x" * (20 << 20) + b'"}'), fragment="limit")
    case("manifest-fifo", "hangs", RUN, manifest(make=fifo), fragment="FIFO")
    case("manifest-devzero", "hangs", RUN, manifest(make=lambda p: symlink(p, "/dev/zero")), fragment="device")
    for tag, make, word in (("fifo", lambda b: fifo(b / "golden.npz"), "FIFO"),
                            ("report-json-fifo", lambda b: ((b / "report.json").unlink(missing_ok=True),
                                                            fifo(b / "report.json")), "FIFO"),
                            ("devzero-link", lambda b: symlink(b / "zeros.bin", "/dev/zero"), "symlink"),
                            ("link-out", lambda b: symlink(b / "runner.py", "../../victim/keep.txt"), "symlink")):
        case(f"bundle-holds-{tag}", "hangs" if "fifo" in tag or "zero" in tag else "paths", RUN,
             lambda d, m=make: (m(bundles(d)), (d / "devices.toml").write_text(LOCAL)), fragment=word)
    case("bundles-path-markup", "tracebacks", ["device", "run", "{D}/[/]none", "--devices", "{D}/devices.toml",
                                               "--out", "{D}/out"],
         lambda d: (d / "devices.toml").write_text(LOCAL), fragment="[/]none")

    # ---------------------------------------------------------------- histories read by `device report`
    case("history-empty", "files", REPORT, lambda d: (d / "h.sqlite").write_bytes(b""), fragment="empty file",
         real_cli=True)
    case("history-text", "files", REPORT, lambda d: (d / "h.sqlite").write_text("not a database\n"),
         fragment="not an SQLite")
    case("history-foreign-db", "files", REPORT, lambda d: foreign_db(d / "h.sqlite"), fragment="not an edgepack")
    case("history-foreign-app-id", "files", REPORT, lambda d: foreign_db(d / "h.sqlite", app_id=0x1234),
         fragment="another application")
    case("history-foreign-same-tables", "files", REPORT,
         lambda d: foreign_db(d / "h.sqlite", tables="CREATE TABLE runs (x); CREATE TABLE results (y);"),
         fragment="column")
    case("history-newer-schema", "files", REPORT,
         lambda d: (good_history(d / "h.sqlite"), _pragma(d / "h.sqlite", "user_version = 99")),
         fragment="schema version 99")

    def corrupt(d: Path) -> None:
        p = good_history(d / "h.sqlite", runs=30)
        data = bytearray(p.read_bytes())
        for i in range(4096 + 16, len(data), 97):  # every page after the first: garbage
            data[i] = 0xA5
        p.write_bytes(bytes(data))

    case("history-corrupt", "files", REPORT, corrupt, fragment="corrupt")
    case("history-truncated", "files", REPORT,
         lambda d: (good_history(d / "h.sqlite", runs=30),
                    os.truncate(d / "h.sqlite", (d / "h.sqlite").stat().st_size // 2 + 100)))
    case("history-fifo", "hangs", REPORT, lambda d: fifo(d / "h.sqlite"), fragment="FIFO")
    case("history-devzero", "hangs", REPORT, lambda d: symlink(d / "h.sqlite", "/dev/zero"), fragment="device")
    case("history-folder", "files", REPORT, lambda d: (d / "h.sqlite").mkdir(), fragment="folder")
    for tag, sql, params, column in (
        ("p50-string", "UPDATE results SET p50_ms = ?", ("abc",), "p50_ms"),
        ("seconds-blob", "UPDATE results SET seconds = ?", (b"\x00\x01",), "seconds"),
        ("samples-invalid-json", "UPDATE results SET samples_ms = ?", ("[1, 2",), "samples_ms"),
        ("samples-strings", "UPDATE results SET samples_ms = ?", ('["a", "b"]',), "samples_ms"),
        ("samples-deep", "UPDATE results SET samples_ms = ?", ("[" * 100_000 + "]" * 100_000,), "samples_ms"),
        ("parity-list", "UPDATE results SET parity = ?", ("[1]",), "parity"),
        ("parity-metric-string", "UPDATE results SET parity = ?",
         ('{"scores": {"top1_agreement": "<script>"}}',), "parity"),
        ("budget-limit-string", "UPDATE results SET budget = ?",
         ('{"status": "met", "class": "c", "rows": [{"name": "p50_ms", "limit": "x"}]}',), "budget"),
        ("host-parity-number", "UPDATE results SET host = ?", ('{"parity": 5}',), "host"),
        ("runtime-list", "UPDATE results SET runtime = ?", ("[]",), "runtime"),
        ("status-blob", "UPDATE results SET status = ?", (b"<script>",), "status"),
        ("device-null", "UPDATE results SET kind = NULL, device = ?", (b"\xff",), "device"),
        ("reason-not-utf8", "UPDATE results SET reason = CAST(? AS TEXT)", (b"ok \xff\xfe",), "reason"),
    ):
        case(f"history-row-{tag}", "tracebacks", REPORT, tampered_history(sql, *params), fragment=column)
    case("report-alpha-nan", "tracebacks", [*REPORT, "--alpha", "nan"], lambda d: good_history(d / "h.sqlite"),
         fragment="--alpha")
    case("report-out-is-a-file", "paths", ["device", "report", "--history", "{D}/h.sqlite", "--out",
                                           "{D}/victim/keep.txt"],
         lambda d: good_history(d / "h.sqlite"), fragment="not a folder")
    case("report-history-markup", "tracebacks", ["device", "report", "--history", "{D}/[red]h[/].sqlite", "--out",
                                                 "{D}/out/rep"], fragment="[red]h[/].sqlite")

    # ---------------------------------------------------------------- histories `device run` would append to
    run_h = [*RUN, "--history", "{D}/h.sqlite"]
    case("run-history-foreign-db", "files", run_h,
         lambda d: (bundles(d), (d / "devices.toml").write_text(LOCAL), foreign_db(d / "h.sqlite")),
         fragment="not an edgepack")
    case("run-history-empty", "files", run_h,
         lambda d: (bundles(d), (d / "devices.toml").write_text(LOCAL), (d / "h.sqlite").write_bytes(b"")),
         fragment="empty file")
    case("run-history-newer-schema", "files", run_h,
         lambda d: (bundles(d), (d / "devices.toml").write_text(LOCAL), good_history(d / "h.sqlite"),
                    _pragma(d / "h.sqlite", "user_version = 99")), fragment="schema version 99")
    case("run-out-is-a-file", "paths", [*RUN[:-1], "{D}/victim/keep.txt"],
         lambda d: (bundles(d), (d / "devices.toml").write_text(LOCAL)), fragment="not a folder")

    # ---------------------------------------------------------------- setup
    case("setup-markup-name", "tracebacks", ["device", "setup", "[bold]x[/]"], fragment="[bold]x[/]", real_cli=True)
    return cases


def _pragma(path: Path, pragma: str) -> None:
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA {pragma}")
    con.commit()
    con.close()


__all__ = ["build", "foreign_db", "good_history", "result_row", "json"]

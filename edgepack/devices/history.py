"""The device-run history: an SQLite file with one row per run and one per (device, bundle, configuration) result.

Latency samples are kept (as JSON) so that regressions are tested on distributions, not on one p50.

A history is marked as edgepack's (``PRAGMA application_id`` = :data:`APPLICATION_ID`, ``user_version`` =
:data:`SCHEMA_VERSION`); histories written before the mark (application id 0, version 0, the ``runs`` and
``results`` tables) are read as version 1 and marked when a run is appended. Reports open a history read-only
(``mode=ro``: nothing is ever written into the file they read) and refuse a file that is not an edgepack history:
empty, not SQLite, corrupt, another application's database, or a newer schema. ``device run`` refuses to append
to such a file and creates a history only where no file exists. Every row is validated (:class:`Row`) when read:
a non-numeric latency or invalid JSON in a row is one error naming the row and the column, never a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from edgepack.errors import InputError

APPLICATION_ID = 0x45504B48  # "EPKH"
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, started TEXT NOT NULL, build_host TEXT);
CREATE TABLE IF NOT EXISTS results (
  run_id TEXT NOT NULL REFERENCES runs(id), started TEXT NOT NULL, device TEXT NOT NULL, kind TEXT,
  device_class TEXT, bundle TEXT NOT NULL, target TEXT NOT NULL, backend TEXT, config TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
  diagnosis TEXT, latency_where TEXT, p50_ms REAL, p90_ms REAL, samples_ms TEXT, parity TEXT, runtime TEXT,
  seconds REAL, budget TEXT, host TEXT
);
CREATE INDEX IF NOT EXISTS results_series ON results(device, bundle, config, started);
"""
COLUMNS = ("run_id", "started", "device", "kind", "device_class", "bundle", "target", "backend", "config", "status",
           "reason", "diagnosis", "latency_where", "p50_ms", "p90_ms", "samples_ms", "parity", "runtime", "seconds",
           "budget", "host")
LATER_COLUMNS = ("budget", "host")  # histories written before these columns existed lack them
JSON_COLUMNS = ("samples_ms", "parity", "runtime", "budget", "host")
HINT = "give the history.sqlite that `edgepack device run` wrote (a new --history path starts a new one)"


class HistoryError(InputError):
    """The file is not an edgepack device-run history, or one of its rows is malformed."""

    default_hint = HINT


# ------------------------------------------------------------------------------------------ row model

Number = Annotated[float, Strict()]
Text = Annotated[str, Strict()]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class BudgetRow(_Open):
    name: Text
    limit: Number
    measured: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None
    verdict: Optional[Text] = None


class Budget(_Open):
    status: Text
    klass: Text = Field(alias="class")
    rows: list[BudgetRow] = []
    note: Optional[Text] = None


Parity = dict[Text, dict[Text, Optional[Number]]]


class Host(_Open):
    where: Optional[Text] = None
    passed: Optional[Annotated[bool, Strict()]] = None
    parity: Parity = {}
    p50_ms: Optional[Number] = None
    p90_ms: Optional[Number] = None
    inference_precision: Optional[Text] = None


class Runtime(_Open):
    runtime: Text = ""
    inference_precision: Optional[Text] = None


class Row(BaseModel):
    """One result row as the report and the regression tests read it (JSON columns decoded)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: Text
    started: Text
    device: Text
    kind: Optional[Text] = None
    device_class: Optional[Text] = None
    bundle: Text
    target: Text
    backend: Optional[Text] = None
    config: Text
    status: Text
    reason: Optional[Text] = None
    diagnosis: Optional[Text] = None
    latency_where: Text = "device"
    p50_ms: Optional[Number] = None
    p90_ms: Optional[Number] = None
    samples_ms: list[Number] = []
    parity: Parity = {}
    runtime: Runtime = Runtime()
    seconds: Optional[Number] = None
    budget: Optional[Budget] = None
    host: Optional[Host] = None


# ------------------------------------------------------------------------------------------ the file


def _shown(path: Path) -> str:
    from edgepack.safety import shown

    return shown(path)


def check_file(path: Path) -> Path:
    """``path`` when it is a regular, non-empty SQLite file under the input limit (else HistoryError)."""
    from edgepack.safety import regular_file

    p = regular_file(path, "device-run history", error=HistoryError)
    try:
        with open(p, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise HistoryError(f"cannot read device-run history {_shown(p)}: {e.strerror or e}") from None
    if not head:
        raise HistoryError(f"device-run history {_shown(p)} is an empty file, not an edgepack history")
    if head != SQLITE_MAGIC:
        raise HistoryError(f"device-run history {_shown(p)} is not an SQLite database")
    return p


def _check_schema(con: sqlite3.Connection, path: Path) -> int:
    """The history's schema version; HistoryError for a corrupt, foreign or newer database."""
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        check = con.execute("PRAGMA quick_check").fetchone()[0]
        tables = {name: {c[1] for c in con.execute(f"PRAGMA table_info({name})")}
                  for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if name in ("runs", "results")}
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # sqlite's message can quote the damaged schema
        raise HistoryError(f"device-run history {_shown(path)} is corrupt or not SQLite ({_shown_exc(e)})") from None
    if check != "ok":
        raise HistoryError(f"device-run history {_shown(path)} is corrupt (sqlite quick_check: "
                           f"{_shown_exc(check)})", hint="restore it from a backup, or start a new --history")
    if app_id not in (0, APPLICATION_ID):
        raise HistoryError(f"{_shown(path)} is another application's SQLite database (application_id "
                           f"{app_id:#x}), not an edgepack history")
    if app_id == APPLICATION_ID and version > SCHEMA_VERSION:
        raise HistoryError(f"device-run history {_shown(path)} has schema version {version}; this edgepack reads "
                           f"up to {SCHEMA_VERSION}", hint="upgrade edgepack to read it")
    if app_id == 0 and version != 0:
        raise HistoryError(f"{_shown(path)} is an SQLite database with user_version {version} and no edgepack "
                           "mark, not an edgepack history")
    need = set(COLUMNS) - set(LATER_COLUMNS)
    missing_tables = sorted({"runs", "results"} - set(tables))
    if missing_tables:
        raise HistoryError(f"{_shown(path)} is an SQLite database without the table '{missing_tables[0]}': not an "
                           "edgepack history")
    missing = sorted(need - tables["results"])
    if missing or not {"id", "started"} <= tables["runs"]:
        raise HistoryError(f"{_shown(path)} has a 'results' table without the column "
                           f"'{(missing or ['id'])[0]}': not an edgepack history (schema version "
                           f"{version or 1})")
    return version or 1


def _shown_exc(e: object) -> str:
    from edgepack.safety import shown

    return shown(e, 120)


class _NotUtf8(bytes):
    """A TEXT value that is not UTF-8 (refused when its row is read, never a UnicodeDecodeError)."""


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _NotUtf8(raw)


def open_readonly(path: Path) -> sqlite3.Connection:
    """The history opened read-only (nothing is ever written into it), after the file and schema checks."""
    p = check_file(Path(path))
    uri = "file:" + urllib.parse.quote(str(p.resolve())) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        con.text_factory = _text
    except sqlite3.Error as e:
        raise HistoryError(f"cannot open device-run history {_shown(p)}: {_shown_exc(e)}") from None
    try:
        _check_schema(con, p)
    except BaseException:
        con.close()
        raise
    return con


def check_appendable(path: Path) -> None:
    """Before a run: ``path`` is absent (a new history will be created) or an edgepack history."""
    p = Path(path)
    if not os.path.lexists(p):
        parent = next((q for q in p.parents if q.exists()), None)
        if parent is not None and not parent.is_dir():
            raise HistoryError(f"cannot create device-run history {_shown(p)}: {_shown(parent)} is not a folder",
                               hint="give --history a path in a folder")
        return
    open_readonly(p).close()


def _create(path: Path) -> None:
    """A new, empty history file (O_EXCL|O_NOFOLLOW: never through a planted symlink), marked as edgepack's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.close(fd)
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.commit()
    finally:
        con.close()


def connect(path: Path) -> sqlite3.Connection:
    """The history opened for appending: created when absent, else checked first (a foreign, empty or corrupt
    file is refused, never turned into a history); a version-1 history gains the later columns and the mark."""
    p = Path(path)
    try:
        if not os.path.lexists(p):
            try:
                _create(p)
            except FileExistsError:
                pass
        open_readonly(p).close()
        con = sqlite3.connect(p)
        have = {row[1] for row in con.execute("PRAGMA table_info(results)")}
        for col in LATER_COLUMNS:
            if col not in have:
                con.execute(f"ALTER TABLE results ADD COLUMN {col} TEXT")
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.commit()
    except (OSError, sqlite3.Error, UnicodeDecodeError) as e:
        raise HistoryError(f"cannot write device-run history {_shown(p)}: {_shown_exc(getattr(e, 'strerror', None) or e)}",
                           hint="check the path and its permissions") from None
    return con


def append(path: Path, run: dict[str, Any]) -> None:
    """Add one run (as returned by ``runs.run_all``) to the history."""
    con = connect(path)
    try:
        with con:
            con.execute("INSERT INTO runs VALUES (?, ?, ?)", (run["id"], run["started"], run.get("build_host")))
            for r in run["results"]:
                lat = r.get("latency") or {}
                con.execute(
                    f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    (run["id"], run["started"], r["device"], r["kind"], r["device_class"], label(r["bundle"]),
                     r["target"], r["backend"], r["config"], r["status"], r["reason"], r.get("diagnosis", ""),
                     r["latency_where"], lat.get("p50_ms"), lat.get("p90_ms"),
                     json.dumps(lat.get("samples_ms") or []), json.dumps(r.get("parity") or {}),
                     json.dumps(r.get("runtime") or {}), r.get("seconds"),
                     json.dumps(r.get("budget") or {}), json.dumps(r.get("host") or {})))
    finally:
        con.close()


def label(bundle: str) -> str:
    """A bundle's name in the history: its folder and its parent's (``make_cnn/android-ort-int8``), so two bundles
    of one target (two models) stay two series."""
    return "/".join(Path(bundle).parts[-2:])


def _decode(raw: dict[str, Any], rowid: int, path: Path) -> dict[str, Any]:
    """One raw row → the validated row dict (JSON columns decoded); HistoryError names the row and the column."""
    from edgepack.safety import shown

    where = f"device-run history {_shown(path)}: row {rowid}"
    bad = next((k for k, v in raw.items() if isinstance(v, _NotUtf8)), None)
    if bad is not None:
        raise HistoryError(f"{where}: column '{bad}' holds text that is not UTF-8")
    d = {k: v for k, v in raw.items() if v is not None}  # NULL = the column's default (required ones: refused)
    for k in JSON_COLUMNS:
        text = raw.get(k)
        if text is None or text == "":
            d.pop(k, None)
            continue
        if not isinstance(text, str):
            raise HistoryError(f"{where}: column '{k}' holds {type(text).__name__}, not JSON text")
        try:
            d[k] = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise HistoryError(f"{where}: column '{k}' is not valid JSON ({shown(e, 80)})") from None
    if d.get("budget") == {}:
        d.pop("budget")
    if d.get("host") == {}:
        d.pop("host")
    try:
        row = Row.model_validate(d)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise HistoryError(f"{where}: column '{shown(loc, 80)}': {shown(err.get('msg', 'invalid'), 120)}") from None
    out = row.model_dump(by_alias=True)
    out["budget"] = out["budget"] or {}
    out["host"] = out["host"] or {}
    for k in ("kind", "device_class", "backend", "reason", "diagnosis"):
        out[k] = out[k] or ""
    return out


def series(path: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(device, bundle label, config) → its results, oldest first (JSON columns decoded, every row validated).
    The file is opened read-only; HistoryError when it is not an edgepack history or a row is malformed."""
    p = Path(path)
    con = open_readonly(p)
    con.row_factory = sqlite3.Row
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    try:
        for row in con.execute("SELECT rowid AS _rowid, * FROM results ORDER BY started, rowid"):
            raw = dict(row)
            rowid = raw.pop("_rowid")
            d = _decode(raw, rowid, p)
            out.setdefault((d["device"], d["bundle"], d["config"]), []).append(d)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        raise HistoryError(f"device-run history {_shown(p)} is corrupt ({_shown_exc(e)})") from None
    finally:
        con.close()
    return out

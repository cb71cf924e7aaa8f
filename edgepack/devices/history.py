"""The device-run history: an SQLite file with one row per run and one per (device, bundle, configuration) result.

Latency samples are kept (as JSON) so that regressions are tested on distributions, not on one p50.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

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


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    have = {row[1] for row in con.execute("PRAGMA table_info(results)")}
    for col in ("budget", "host"):  # histories written before these columns existed
        if col not in have:
            con.execute(f"ALTER TABLE results ADD COLUMN {col} TEXT")
    return con


def append(path: Path, run: dict[str, Any]) -> None:
    """Add one run (as returned by ``runs.run_all``) to the history."""
    with connect(path) as con:
        con.execute("INSERT INTO runs VALUES (?, ?, ?)", (run["id"], run["started"], run.get("build_host")))
        for r in run["results"]:
            lat = r.get("latency") or {}
            con.execute(
                f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                (run["id"], run["started"], r["device"], r["kind"], r["device_class"], label(r["bundle"]), r["target"], r["backend"],
                 r["config"], r["status"], r["reason"], r.get("diagnosis", ""), r["latency_where"],
                 lat.get("p50_ms"), lat.get("p90_ms"), json.dumps(lat.get("samples_ms") or []),
                 json.dumps(r.get("parity") or {}), json.dumps(r.get("runtime") or {}), r.get("seconds"),
                 json.dumps(r.get("budget") or {}), json.dumps(r.get("host") or {})))
    con.close()


def label(bundle: str) -> str:
    """A bundle's name in the history: its folder and its parent's (``make_cnn/android-ort-int8``), so two bundles
    of one target (two models) stay two series."""
    return "/".join(Path(bundle).parts[-2:])


def series(path: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(device, bundle label, config) → its results, oldest first (JSON columns decoded)."""
    con = connect(path)
    con.row_factory = sqlite3.Row
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in con.execute("SELECT * FROM results ORDER BY started, rowid"):
        d = dict(row)
        for k in ("samples_ms", "parity", "runtime", "budget", "host"):
            d[k] = json.loads(d[k] or ("[]" if k == "samples_ms" else "{}"))
        out.setdefault((d["device"], d["bundle"], d["config"]), []).append(d)
    con.close()
    return out

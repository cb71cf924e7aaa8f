"""Property-based fuzz of the device harness's readers: the inventory (``devices.toml`` bytes and parsed tables)
and the run history (file bytes and row values). Each either returns valid values or raises one EdgepackError
(never another exception); a history that reads renders as Markdown and HTML without error and with no markup
from the rows."""

from __future__ import annotations

import math
import sqlite3
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgepack import safety  # noqa: E402
from edgepack.devices import history, regressions, report  # noqa: E402
from edgepack.devices.inventory import KINDS, MAX_RETRIES, MAX_TIMEOUT_S, Device, load_inventory, parse_devices  # noqa: E402
from edgepack.errors import EdgepackError  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=20)
KEYS = ["name", "kind", "python", "host", "user", "port", "serial", "adb", "push", "run", "remote", "backends",
        "timeout_s", "retries", "latency_emulated", "unavailable", "cpu", "device_class"]
TEMPLATE_BITS = st.sampled_from(["{bundle}", "{remote}", "{name}", "{x}", "{0}", "{name!r}", "{name:>9}", "{",
                                 "}", "{{", "/tmp/", "cp -r ", ";", "$(id)", "-", "\n"])


def _one_error(e: EdgepackError) -> None:
    assert e.message and "\n" not in safety.shown(e.message) and e.hint


def _valid(devices: list[Device]) -> None:
    for d in devices:
        assert d.kind in KINDS and isinstance(d.name, str) and 0 < len(d.name) <= 64
        assert 0 < d.timeout_s <= MAX_TIMEOUT_S and math.isfinite(d.timeout_s) and 0 <= d.retries <= MAX_RETRIES
        assert all(c.isprintable() for field in (d.name, d.push, d.run, d.remote, d.python) for c in field)
        for template, allowed in ((d.push, {"bundle", "remote", "name"}), (d.run, {"bundle", "remote", "name"})):
            template.format(**{k: "v" for k in allowed})  # never a KeyError, attribute access or bad spec
        d.remote.format(name="v")
        assert not d.remote.startswith("-") and not d.host.startswith("-") and not d.user.startswith("-")


def _parse(data) -> None:
    try:
        _valid(parse_devices(data, "fuzz.toml"))
    except EdgepackError as e:
        _one_error(e)


@SETTINGS
@given(st.binary(max_size=400))
def test_inventory_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        Path(d, "devices.toml").write_bytes(raw)
        try:
            _valid(load_inventory(Path(d, "devices.toml")))
        except EdgepackError as e:
            _one_error(e)


@SETTINGS
@given(values)
def test_inventory_any_table(value):
    _parse(value)
    _parse({"device": value})
    _parse({"device": [value]})


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, st.lists(scalars, max_size=3),
                                                        st.lists(TEMPLATE_BITS, max_size=5).map("".join)),
                       max_size=8))
def test_inventory_device_entries(entry):
    _parse({"device": [{"name": "d", **entry}]})
    _parse({"device": [entry]})


# ------------------------------------------------------------------------------------------ history


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    from corpus_devices import good_history

    return good_history(tmp_path_factory.mktemp("h") / "h.sqlite", runs=3).read_bytes()


def _read(path: Path) -> None:
    try:
        data = history.series(path)
    except EdgepackError as e:
        _one_error(e)
        return
    flags = regressions.check_all(data)
    page = report.html_page(data, flags)
    report.markdown(data, flags)
    assert "<script" not in page.lower()


@SETTINGS
@given(st.binary(max_size=300))
def test_history_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        Path(d, "h.sqlite").write_bytes(raw)
        _read(Path(d, "h.sqlite"))
        assert Path(d, "h.sqlite").read_bytes() == raw  # read-only, whatever it is


@SETTINGS
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=64))
def test_history_bit_damage(good, offset, junk):
    with tempfile.TemporaryDirectory() as d:
        data = bytearray(good)
        at = offset % len(data)
        data[at:at + len(junk)] = junk
        Path(d, "h.sqlite").write_bytes(bytes(data))
        _read(Path(d, "h.sqlite"))


COLUMN_VALUES = st.one_of(st.none(), st.integers(-2**62, 2**62), st.floats(allow_nan=True), st.text(max_size=30),
                          st.binary(max_size=8), values.map(lambda v: __import__("json").dumps(v)))


@SETTINGS
@given(st.dictionaries(st.sampled_from(history.COLUMNS), COLUMN_VALUES, min_size=1, max_size=5))
def test_history_row_values(good, changes):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "h.sqlite")
        p.write_bytes(good)
        con = sqlite3.connect(p)
        try:
            con.execute(f"UPDATE results SET {', '.join(f'{k} = ?' for k in changes)}", list(changes.values()))
        except sqlite3.IntegrityError:  # NOT NULL columns: SQLite itself keeps those
            assume(False)
        con.commit()
        con.close()
        _read(p)

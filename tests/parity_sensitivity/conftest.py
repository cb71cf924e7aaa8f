"""The parity-sensitivity table is printed at the end of the run (whatever ``-s`` says) from the file the suite
writes under pytest's tmp folder (``parity_sensitivity_table.txt``, and the same figures as JSON beside it:
``parity_sensitivity_table.json``)."""

from __future__ import annotations

from pathlib import Path

import pytest

TABLE_KEY = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def sensitivity_table_path(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "parity_sensitivity_table.txt"
    request.config.stash[TABLE_KEY] = path
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    path = config.stash.get(TABLE_KEY, None)
    if path is not None and path.is_file():
        terminalreporter.section("parity sensitivity: injected defects and false alarms")
        terminalreporter.write(path.read_text())
        terminalreporter.write_line(f"(written to {path} and {path.with_suffix('.json')})")

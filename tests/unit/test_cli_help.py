"""The rendered --help keeps its angle-bracket placeholders (the markdown help renderer used to eat them)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from edgepack.cli import app


@pytest.mark.parametrize("command, placeholders", [
    ("build", ["OUT/<model>/<target>/", "OUT/<model>/<target>.zip", "OUT/<model>/build-report.json",
               "OUT/<name>/<target>"]),
    ("plan", ["OUT/<model>/<target>/"]),
    ("check", ["OUT/<model>/<target>"]),
])
def test_help_shows_the_bundle_path_placeholders(command, placeholders):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert res.exit_code == 0
    text = res.stdout
    for p in placeholders:
        assert p in text, p
    assert not re.search(r"OUT//|\\<", text)  # nothing eaten, no escape shown

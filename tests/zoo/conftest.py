"""Fixtures of the zoo tests; the helpers are in zoohelpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoohelpers import make_zoo  # noqa: E402


@pytest.fixture
def zoo_file(tmp_path: Path) -> Path:
    return make_zoo(tmp_path / "zoo")

"""Unit tests: no ML framework needed (fake backends and a numpy 'model')."""

from __future__ import annotations

from pathlib import Path

import fakes  # noqa: F401 - registers the fake source kind and backends
import pytest
from fakes.source import make


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    return make(tmp_path / "linear.fakemodel")


@pytest.fixture
def profile(tmp_path: Path):
    """Write a target profile TOML and return its path."""

    def write(name: str, backend: str = "fake_identity", extra: str = "", calibration: str = "digits") -> Path:
        p = tmp_path / "targets" / f"{name}.toml"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f'backend = "{backend}"\nprecision = "fp32"\ncalibration = "{calibration}"\n{extra}')
        return p

    return write

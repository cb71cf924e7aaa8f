"""Shared fixtures: tiny models generated at test time (no binaries in the repo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tinymodels import make_tiny_onnx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> Path:
    """A digits CNN trained at test time (torch, in its own process): folder with cnn.pt and cnn.onnx."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", "cnn", "--epochs", "6",
                    "--onnx", "--out", str(out)], check=True, capture_output=True, cwd=REPO)
    return out


@pytest.fixture(scope="session")
def trained_dwsilu(tmp_path_factory) -> Path:
    """The depthwise/SiLU residual network (examples/digits.py:make_dwsilu) trained at test time in its own process:
    folder with dwsilu.pt and dwsilu.onnx. Shared by every INT8 accuracy test (one training per session)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("dwsilu")
    subprocess.run([sys.executable, str(REPO / "examples" / "digits.py"), "--model", "dwsilu", "--onnx", "--out",
                    str(out)], check=True, capture_output=True, cwd=REPO)
    return out


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from edgepack.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    monkeypatch.chdir(REPO)

"""No tracebacks: a bug is one `error: internal error in <stage>` line plus a hint to report it; the traceback
only with EDGEPACK_DEBUG=1. User text cannot forge lines or inject Rich markup. Reports are never written through
a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import fakes  # noqa: F401

from edgepack import pipeline


def _bug(*args, progress=None, **kwargs):
    if progress:
        progress("loading source model.onnx")
    raise ValueError("a bug\nTraceback (most recent call last): forged")


def test_a_bug_is_one_line_naming_the_stage(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "build", _bug)
    res = cli("build", "x.onnx", "-t", "android-ort-fp32", "--out", tmp_path / "o")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert lines == ["error: internal error in loading source model.onnx (ValueError)",
                     "hint: this is a bug in edgepack: rerun with EDGEPACK_DEBUG=1 for the traceback and report it"]
    assert "Traceback" not in res.stdout + res.stderr


def test_edgepack_debug_shows_the_traceback(cli, monkeypatch, tmp_path):
    """EDGEPACK_DEBUG=1 adds the traceback after the same error line, with the same exit code."""
    monkeypatch.setattr(pipeline, "build", _bug)
    monkeypatch.setenv("EDGEPACK_DEBUG", "1")
    res = cli("build", "x.onnx", "-t", "android-ort-fp32", "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert res.stderr.startswith("error: internal error in loading source model.onnx (ValueError)")
    assert "Traceback (most recent call last)" in res.stderr and "ValueError: a bug" in res.stderr


def test_messages_cannot_be_split_or_styled_by_user_text(cli, tmp_path):
    weird = tmp_path / "a\nerror: forged [bold red]x[/] \x1b[31m.onnx"
    res = cli("build", weird, "-t", "android-ort-fp32", "--out", tmp_path / "o")
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 2 and lines[0].startswith("error: model not found")
    assert "\\n" in lines[0] and "[bold red]x[/]" in lines[0] and "\x1b" not in res.stderr


def test_reports_are_never_written_through_a_symlink(cli, tmp_path):
    from fakes.source import make

    model = make(tmp_path / "linear.fakemodel")
    np.savez(tmp_path / "cal.npz", input=np.zeros((16, 1, 32, 32), np.float32))
    (tmp_path / "t.toml").write_text('backend = "fake_identity"\nprecision = "fp32"\n')
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "out" / "linear").mkdir(parents=True)
    os.symlink(victim, tmp_path / "out" / "linear" / "build-report.json")
    os.symlink(victim, tmp_path / "j.xml")
    res = cli("build", model, "-t", tmp_path / "t.toml", "-c", tmp_path / "cal.npz", "--out", tmp_path / "out",
              "--junit", tmp_path / "j.xml", "--judge", "point")  # 8 holdout samples prove no rate budget
    assert res.exit_code == 0, res.stderr
    assert victim.read_text() == "keep"
    assert not Path(tmp_path / "j.xml").is_symlink() and "testsuites" in (tmp_path / "j.xml").read_text()

"""Watching a build: a live display on a terminal (one row per target with its stage, elapsed time and verdict, an
overall bar, INT8 trials as they finish), the same plain lines as always elsewhere. Fake backends, no framework."""

from __future__ import annotations

import io
import re

from rich.console import Console

from edgepack import pipeline
from edgepack.events import Event
from edgepack.live import LiveBuild


def _int8(profile, name: str, extra: str):
    p = profile(name, "fake_int8", extra)
    p.write_text(p.read_text().replace('precision = "fp32"', 'precision = "int8"'))
    return p


def _targets(profile):
    return [profile("ident"), _int8(profile, "coarse", "[options]\nstep = 0.4\n[budgets.parity]\n"
                                                       "min_top1_agreement = 0.98\n")]


def _terminal() -> Console:
    return Console(force_terminal=True, record=True, width=160, file=io.StringIO(), highlight=False)


def test_events_drive_a_live_row_per_target_with_stage_trials_and_verdict(fake_model, profile, tmp_path):
    console = _terminal()
    events: list[str] = []
    with LiveBuild(console) as live:
        def watch(event: str) -> None:
            events.append(event)
            live(event)
            live.progress.refresh()  # record every state (the display itself refreshes 8 times a second)

        results = pipeline.build(str(fake_model), [str(p) for p in _targets(profile)], out=tmp_path / "dist",
                                 progress=watch)
    # one callback, typed events: each is its message (a str) with its facts
    assert all(isinstance(e, Event) for e in events)
    [plan] = [e for e in events if e.stage == "plan"]
    assert plan.targets == ("ident", "coarse")
    trials = [e for e in events if e.stage == "trial"]
    assert trials and all(e.target == "coarse" and e.quiet for e in trials)
    recorded = results[1].artifact["accuracy_search"]["trials"]
    assert [e.trial["recipe"] for e in trials] == [t["recipe"] for t in recorded]  # each trial, as it finished
    done = {e.target: e.verdict for e in events if e.stage == "done"}
    assert done == {r.target: r.status for r in results} == {"ident": "passed", "coarse": "passed"}
    for name in ("ident", "coarse"):  # stages in order for each target
        stages = [e.stage for e in events if e.target == name and e.stage != "trial"]
        assert stages == ["convert", "converted", "host", "done"], (name, stages)
    # the display: every stage was shown, trials printed above the rows, the last frame has both verdicts
    text = console.export_text()
    for stage in ("converting", "searching INT8 (trial", "parity + latency"):
        assert stage in text, stage
    assert "coarse: INT8 trial 1: recipe plain" in text
    final = text.rsplit("build", 1)[-1]  # the last frame: the overall bar and both rows, done
    assert re.search(r"ident\s+done\s.*3/3.*PASSED", final) and re.search(r"coarse\s+done\s.*3/3.*PASSED", final)
    assert "6/6" in final


def test_the_cli_draws_it_on_a_terminal_and_keeps_the_plain_lines_elsewhere(fake_model, profile, tmp_path, cli,
                                                                             monkeypatch):
    from edgepack import cli as cli_module

    args = ["build", fake_model, "-t", profile("ident")]
    res = cli(*args, "--out", tmp_path / "plain")
    assert res.exit_code == 0, res.output
    lines = [re.sub(r"\d+\.\d s", "N s", line) for line in res.stdout.splitlines() if line.startswith("•")]
    assert lines[0].startswith("• loading source ")  # (the test console wraps the long path)
    assert lines[1:] == [  # today's plain lines, unchanged
        "• preparing calibration and holdout data",
        "• tracing the model's output shapes on the first calibration batch",
        "• computing golden outputs on 400 holdout samples",
        "• ident: converting with fake_identity (fp32)",
        "• ident: converted in N s",
        "• ident: running on host for parity and latency",
    ], lines
    assert "3/3" not in res.stdout and "parity + latency" not in res.stdout

    console = _terminal()
    monkeypatch.setattr(cli_module, "console", console)
    res = cli(*args, "--out", tmp_path / "live")
    assert res.exit_code == 0
    text = console.export_text()
    assert re.search(r"ident\s+done\s.*3/3.*PASSED", text) and "3/3" in text
    assert "• loading source" not in text  # the live display replaces the plain lines

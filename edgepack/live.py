"""The build's live terminal display (stdout a TTY): one row per target — stage, elapsed time, a spinner while it
converts, searches or runs parity, its verdict when done — and an overall bar with an estimate of the time left.
INT8 search trials are printed above the rows as they finish. Fed by the build's one progress callback
(:class:`edgepack.events.Event`); rich only, no framework, nothing of the pipeline imported."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Column
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from rich.console import Console

# work units per target: conversion, host run, done (the overall bar's total is 3 × targets)
STEPS = {"convert": 0, "trial": 0, "converted": 1, "host": 1, "done": 3, "error": 3}
STAGE_WORDS = {"plan": "waiting", "convert": "converting", "trial": "searching INT8", "converted": "converted",
               "host": "parity + latency", "done": "done", "error": "error"}
VERDICT_STYLE = {"passed": "green", "inconclusive": "magenta", "failed": "red", "error": "bold red",
                 "skipped": "yellow"}


class LiveBuild:
    """A ``progress`` callback that draws the live display on ``console``; use as a context manager."""

    def __init__(self, console: "Console") -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.description}", justify="left"),
            TextColumn("{task.fields[stage]}", table_column=Column(width=34, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[verdict]}"),
            console=console, transient=False, refresh_per_second=8,
        )
        self.overall: TaskID = self.progress.add_task("[bold]build[/]", total=None, stage="starting", verdict="")
        self.rows: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.trials: dict[str, int] = {}

    def __enter__(self) -> "LiveBuild":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _row(self, target: str) -> TaskID:
        if target not in self.rows:
            self.rows[target] = self.progress.add_task(escape(target), total=3, start=False, stage="waiting",
                                                       verdict="")
            self.done[target] = 0
            if self.progress.tasks[self.overall].total is not None:
                self.progress.update(self.overall, total=3 * len(self.rows))
        return self.rows[target]

    def __call__(self, event: str) -> None:
        stage = getattr(event, "stage", "source")
        target = getattr(event, "target", None)
        if stage == "plan":
            for name in getattr(event, "targets", ()):
                self._row(name)
            self.progress.update(self.overall, total=3 * len(self.rows), stage="planned")
            return
        if target is None:  # a build-wide step (source, data, golden outputs)
            self.progress.update(self.overall, stage=escape(str(event)))
            return
        row = self._row(target)
        finished = sum(1 for v in self.done.values() if v >= 3)
        self.progress.update(self.overall, stage=f"targets: {finished} of {len(self.rows)} done")
        if target not in self.started and stage not in ("done",):
            self.started[target] = time.monotonic()
            self.progress.start_task(row)
        verdict = getattr(event, "verdict", None)
        if stage == "trial":
            self.trials[target] = self.trials.get(target, 0) + 1
            self.console.print(f"[dim]•[/] {escape(str(event))}", soft_wrap=True)
            words = f"searching INT8 (trial {self.trials[target]})"
        else:
            words = STAGE_WORDS.get(stage, stage)
        self._advance(target, STEPS.get(stage, 0))
        if verdict is not None:
            self.finish(target, verdict)
        else:
            self.progress.update(row, stage=escape(words))
        if stage == "error":
            self.console.print(f"[bold red]•[/] {escape(str(event))}", soft_wrap=True)

    def _advance(self, target: str, step: int) -> None:
        if step > self.done[target]:
            gain = step - self.done[target]
            self.done[target] = step
            self.progress.update(self.rows[target], completed=step)
            self.progress.advance(self.overall, gain)

    def finish(self, target: str, verdict: str) -> None:
        """Mark a target done with its verdict (also for targets the build finished without an event)."""
        row = self._row(target)
        self._advance(target, 3)
        style = VERDICT_STYLE.get(verdict, "white")
        self.progress.update(row, stage="done", verdict=f"[{style}]{escape(verdict.upper())}[/]")
        self.progress.stop_task(row)
        finished = sum(1 for v in self.done.values() if v >= 3)
        self.progress.update(self.overall, stage="finished" if finished == len(self.rows)
                             else f"targets: {finished} of {len(self.rows)} done")


__all__ = ["LiveBuild"]

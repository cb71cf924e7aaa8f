"""What a build reports while it runs: one event type, passed to the one ``progress`` callback of
``pipeline.build``/``plan``/``check`` (the CLI's plain lines and live display, and any Python caller).

An :class:`Event` *is* its message (a ``str``), so a callback that only prints strings keeps working; a richer
consumer reads its fields: the target it concerns, the stage it enters, the verdict when a target is done, an INT8
search trial as it finishes."""

from __future__ import annotations

from typing import Any, Callable, Literal

Stage = Literal[
    "source",     # loading the source, the data, golden outputs (the whole build)
    "plan",       # the planned targets (``targets``), before any conversion
    "convert",    # a target's conversion started
    "trial",      # an INT8 accuracy search trial finished (``trial``)
    "converted",  # a target's conversion finished (``seconds``)
    "host",       # a target runs on the host for parity and latency
    "done",       # a target is finished (``verdict``)
    "error",      # a target's ERROR verdict (``verdict`` = "error")
]


class Event(str):
    """A progress message with its facts. ``quiet`` events (a plan, a trial, a target's verdict) add to a live
    display; plain terminal output (CI logs) prints only the others, as it always has."""

    target: str | None
    stage: Stage
    verdict: str | None
    seconds: float | None
    trial: dict[str, Any] | None
    targets: tuple[str, ...]
    quiet: bool

    def __new__(cls, message: str, *, stage: Stage = "source", target: str | None = None,
                verdict: str | None = None, seconds: float | None = None, trial: dict[str, Any] | None = None,
                targets: tuple[str, ...] = (), quiet: bool = False) -> "Event":
        self = super().__new__(cls, message)
        self.target, self.stage, self.verdict, self.seconds = target, stage, verdict, seconds
        self.trial, self.targets, self.quiet = trial, tuple(targets), quiet
        return self

    def __reduce__(self):  # picklable with its fields (events may cross a thread or process boundary)
        return (_rebuild, (str(self), dict(vars(self))))


def _rebuild(message: str, fields: dict[str, Any]) -> Event:
    return Event(message, **fields)


Progress = Callable[[str], None]  # receives Event values (each one a str)

__all__ = ["Event", "Progress", "Stage"]

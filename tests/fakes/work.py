"""Small worker functions for the isolation tests (module-level so spawned workers can import them)."""

from __future__ import annotations

import os
import time

from edgepack.errors import InputError


def pid() -> int:
    return os.getpid()


def crash() -> None:
    os._exit(3)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def user_error() -> None:
    raise InputError("bad input in the worker", hint="a hint from the worker")


def bug() -> None:
    raise ValueError("a converter bug\nsecond line")

"""Run heavy framework work (export, conversion, inference) in a fresh worker process.

TensorFlow and torch in one process have segfaulted here, and converters print freely; each call therefore gets
its own spawned interpreter whose stdout/stderr go to a log file. EdgepackErrors raised in the worker come back
as themselves; a crash or time-out becomes a ConversionFailed that quotes the end of the log.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from edgepack.errors import ConversionFailed, EdgepackError

DEFAULT_TIMEOUT_S = float(os.environ.get("EDGEPACK_TIMEOUT", "1800"))


def _init_worker(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


class _WorkerBug(Exception):
    """A non-Edgepack exception from the worker, carried back with its traceback text."""


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except EdgepackError:
        raise
    except BaseException as e:  # noqa: BLE001 - converter errors are arbitrary; keep the traceback text
        raise _WorkerBug(f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from None


def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_isolated(
    fn: Callable[..., Any], *args: Any, what: str, timeout: float | None = None, **kwargs: Any
) -> Any:
    """Call ``fn(*args, **kwargs)`` in a spawned process and return its (picklable) result.

    ``what`` names the work in error messages ("torch → onnx export", "tflite int8 conversion").
    Set EDGEPACK_INPROCESS=1 to run in this process (debugging only).
    """
    if os.environ.get("EDGEPACK_INPROCESS") == "1":
        return fn(*args, **kwargs)
    fd, log_path = tempfile.mkstemp(prefix="edgepack-worker-", suffix=".log")
    os.close(fd)
    ctx = mp.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker, initargs=(log_path,))
    debug = os.environ.get("EDGEPACK_DEBUG") == "1"
    try:
        fut = ex.submit(_call, fn, args, kwargs)
        try:
            return fut.result(timeout=timeout or DEFAULT_TIMEOUT_S)
        except FutureTimeout:
            for p in list(getattr(ex, "_processes", {}).values()):
                p.kill()
            raise ConversionFailed(
                f"{what} did not finish within {timeout or DEFAULT_TIMEOUT_S:.0f} s",
                hint="raise the limit with EDGEPACK_TIMEOUT=SECONDS",
            ) from None
        except BrokenProcessPool:
            raise ConversionFailed(
                f"{what} crashed the worker process" + (f":\n{_tail(log_path)}" if debug else ""),
                hint="rerun with EDGEPACK_DEBUG=1 to see the converter's output",
            ) from None
        except _WorkerBug as e:
            detail = str(e) if debug else str(e).splitlines()[0]
            raise ConversionFailed(f"{what} failed: {detail}") from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if debug:
            tail = _tail(log_path, 40)
            if tail:
                import sys

                print(f"--- worker log ({what}) ---\n{tail}", file=sys.stderr)
        try:
            os.unlink(log_path)
        except OSError:
            pass

"""Heavy framework work (export, conversion, inference) runs in worker processes: the one place that decides which.

TensorFlow and torch in one process have segfaulted here, and converters print freely, so work runs in spawned
interpreters whose stdout/stderr go to a log file. Within one build (``with Workers():``) each *framework family*
keeps one warm worker, so the second target of a backend does not pay its framework's start-up again; families
never share a process. EdgepackErrors raised in a worker come back as themselves; a crash or time-out becomes a
one-line ConversionFailed (the worker is replaced), with the worker's log under ``EDGEPACK_DEBUG=1``.

Families (:func:`family_of`): ``backend:<name>`` for a backend's conversion and host runs, and the source module's
framework (``torch``, ``tf``, ``onnx``) for loading, reference runs and exports.
"""

from __future__ import annotations

import contextvars
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from edgepack.errors import ConversionFailed, EdgepackError, explain

DEFAULT_TIMEOUT_S = float(os.environ.get("EDGEPACK_TIMEOUT", "1800"))

_SOURCE_FAMILIES = {"edgepack.sources.torch": "torch", "edgepack.sources.keras": "tf", "edgepack.sources.onnx": "onnx"}


def family_of(fn: Callable[..., Any], family: str | None = None) -> str:
    """Which worker runs ``fn``: an explicit family, else the framework of the module that defines it."""
    if family:
        return family
    module = getattr(fn, "__module__", "") or ""
    if module in _SOURCE_FAMILIES:
        return _SOURCE_FAMILIES[module]
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["edgepack", "backends"]:
        return f"backend:{parts[2]}"
    return module or "default"


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


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _log_section(log: str) -> str:
    tail = _tail(log, 60)
    return f"\n--- worker output (last lines) ---\n{tail}" if tail else ""


class _Worker:
    def __init__(self, family: str) -> None:
        fd, self.log = tempfile.mkstemp(prefix=f"edgepack-worker-{family.replace(':', '-')}-", suffix=".log")
        os.close(fd)
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker, initargs=(self.log,))
        self.lock = threading.Lock()

    def kill(self) -> None:
        for p in list(getattr(self.pool, "_processes", {}).values()):
            p.kill()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            os.unlink(self.log)
        except OSError:
            pass


class Workers:
    """Warm worker processes, one per framework family, for the length of a ``with`` block (one build)."""

    def __init__(self) -> None:
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._token: contextvars.Token | None = None
        self.started: dict[str, int] = {}  # family → worker processes started (for tests and benchmarks)

    def __enter__(self) -> "Workers":
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
        self.close()

    def _get(self, family: str) -> _Worker:
        with self._lock:
            w = self._workers.get(family)
            if w is None:
                w = self._workers[family] = _Worker(family)
                self.started[family] = self.started.get(family, 0) + 1
            return w

    def _drop(self, family: str, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(family) is worker:
                del self._workers[family]
        worker.kill()
        worker.close()

    def run(self, fn: Callable[..., Any], *args: Any, what: str, family: str | None = None,
            timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` in the family's warm worker and return its (picklable) result."""
        family = family_of(fn, family)
        worker = self._get(family)
        limit = timeout or DEFAULT_TIMEOUT_S
        debug = os.environ.get("EDGEPACK_DEBUG") == "1"
        with worker.lock:  # one call at a time per worker
            start = os.path.getsize(worker.log) if os.path.exists(worker.log) else 0
            try:
                return worker.pool.submit(_call, fn, args, kwargs).result(timeout=limit)
            except FutureTimeout:
                self._drop(family, worker)
                raise ConversionFailed(f"{what} did not finish within {limit:.0f} s",
                                       hint="raise the limit with EDGEPACK_TIMEOUT=SECONDS") from None
            except BrokenProcessPool:
                log = _read_from(worker.log, start)
                self._drop(family, worker)
                raise ConversionFailed(
                    f"{what} crashed the worker process (a native crash in the converter or runtime)",
                    hint="the worker's last output is in the report's details (EDGEPACK_DEBUG=1 prints it)",
                    details=_tail(log, 60) or None,
                ) from None
            except ConversionFailed as e:  # the converter's own output belongs to its details
                extra = _log_section(_read_from(worker.log, start))
                if extra:
                    raise type(e)(e.message, e.hint, (e.details or "") + extra) from None
                raise
            except _WorkerBug as e:
                text = str(e)
                raise ConversionFailed(f"{what} failed: {explain(text) or text.splitlines()[0]}",
                                       details=text + _log_section(_read_from(worker.log, start))) from None
            finally:
                if debug:
                    tail = _tail(_read_from(worker.log, start), 40)
                    if tail:
                        print(f"--- worker log ({what}) ---\n{tail}", file=sys.stderr)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.close()


_ACTIVE: contextvars.ContextVar[Workers | None] = contextvars.ContextVar("edgepack_workers", default=None)


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, family: str | None = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker process: the build's warm worker of its family when a ``Workers`` block is active
    (in this thread's context), else a fresh one-shot worker. ``EDGEPACK_INPROCESS=1`` runs it here (debugging)."""
    if os.environ.get("EDGEPACK_INPROCESS") == "1":
        return fn(*args, **kwargs)
    active = _ACTIVE.get()
    if active is not None:
        return active.run(fn, *args, what=what, family=family, timeout=timeout, **kwargs)
    with Workers() as once:
        return once.run(fn, *args, what=what, family=family, timeout=timeout, **kwargs)


def current() -> Workers | None:
    """The active build's workers (for code that fans work out to threads: pass it on with ``contextvars``)."""
    return _ACTIVE.get()


__all__ = ["DEFAULT_TIMEOUT_S", "Workers", "current", "family_of", "run_isolated"]

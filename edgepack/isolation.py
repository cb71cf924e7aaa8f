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
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from edgepack.errors import ConversionFailed, EdgepackError, explain

# Settings read from the environment. A value that is not a number of the right kind is refused by
# check_settings() (one line + hint, before any work), never read as "no limit".
SETTINGS: dict[str, tuple[float, float, bool, str]] = {
    # name: (default, smallest allowed, whole number, what it is and its default)
    "EDGEPACK_WORKER_MEMORY_MB": (0, 0, True, "each worker's memory limit in MB; default the host's RAM, 0 = none"),
    "EDGEPACK_TIMEOUT": (1800, 1, False, "each worker call's time limit in seconds; default 1800"),
    "EDGEPACK_JOBS": (2, 1, True, "concurrent conversions; default 2"),
}


def setting(name: str) -> float | None:
    """The value of one of :data:`SETTINGS` (None when unset or empty); a ConfigError when malformed."""
    _, smallest, whole, what = SETTINGS[name]
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value == value and abs(value) != float("inf")) or value < smallest or value > 1e12 \
            or (whole and value != int(value)):
        from edgepack.errors import ConfigError
        from edgepack.safety import shown

        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{name}={shown(raw, 40)} is not {kind} ≥ {smallest:g}",
                          hint=f"set {name} to {kind} ≥ {smallest:g} ({what}) or unset it")
    return int(value) if whole else value


def check_settings() -> None:
    """Refuse any malformed :data:`SETTINGS` value before work starts (the CLI calls this first)."""
    for name in SETTINGS:
        setting(name)


def _setting_or_default(name: str) -> float:
    try:
        value = setting(name)
    except EdgepackError:
        value = None
    return SETTINGS[name][0] if value is None else value


DEFAULT_TIMEOUT_S = float(_setting_or_default("EDGEPACK_TIMEOUT"))


def memory_limit_mb() -> int:
    """Each worker's address-space limit (``EDGEPACK_WORKER_MEMORY_MB``; default: the host's RAM; 0 = none)."""
    value = setting("EDGEPACK_WORKER_MEMORY_MB")  # malformed (abc, -1): a ConfigError, never "no limit"
    if value is not None:
        return int(value)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20))
    except (ValueError, OSError, AttributeError):
        return 0

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


def _watch_parent(parent: int) -> None:
    """Worker side: end this worker's whole process group when the build process is gone (even after kill -9)."""
    import signal
    import time

    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(137)


def _init_worker(log_path: str, memory_mb: int = 0, parent: int = 0) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        os.setpgid(0, 0)  # its own process group: the build ends the worker and everything it started at once
    except OSError:
        pass
    if parent and os.getppid() != parent:  # the build died while this worker was starting
        os._exit(137)
    threading.Thread(target=_watch_parent, args=(parent or os.getppid(),), daemon=True,
                     name="edgepack-parent-watch").start()
    if memory_mb > 0:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _OutOfMemory(Exception):
    """The worker's call raised MemoryError (its address-space limit was reached)."""


class _WorkerBug(Exception):
    """A non-Edgepack exception from the worker, carried back with its traceback text."""


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except EdgepackError:
        raise
    except MemoryError:
        raise _OutOfMemory() from None
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
        self.memory_mb = memory_limit_mb()
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                        initializer=_init_worker, initargs=(self.log, self.memory_mb, os.getpid()))
        self.lock = threading.Lock()
        _LIVE.add(self)

    def pids(self) -> list[int]:
        return [p.pid for p in list((getattr(self.pool, "_processes", None) or {}).values()) if p.pid]

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (the worker and anything it started)."""
        import signal

        for pid in self.pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        _LIVE.discard(self)
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
        if _TERMINATING.is_set():
            raise ConversionFailed(f"{what} was not started: edgepack is stopping", hint="")
        worker = self._get(family)
        limit = timeout or DEFAULT_TIMEOUT_S
        debug = os.environ.get("EDGEPACK_DEBUG") == "1"
        with worker.lock:  # one call at a time per worker
            start = os.path.getsize(worker.log) if os.path.exists(worker.log) else 0
            try:
                return worker.pool.submit(_call, fn, args, kwargs).result(timeout=limit)
            except FutureTimeout:
                self._drop(family, worker)
                raise ConversionFailed(f"{what} did not finish within {limit:.0f} s (the time limit; stopped)",
                                       hint="raise the limit with EDGEPACK_TIMEOUT=SECONDS") from None
            except _OutOfMemory:
                self._drop(family, worker)
                raise ConversionFailed(f"{what} ran out of memory: the worker's limit is {worker.memory_mb} MB "
                                       "(stopped)", hint="raise the limit with EDGEPACK_WORKER_MEMORY_MB=MB") from None
            except BrokenProcessPool:
                log = _read_from(worker.log, start)
                self._drop(family, worker)
                if _TERMINATING.is_set():
                    raise ConversionFailed(f"{what} was stopped: edgepack is stopping", hint="") from None
                mem = f" (the memory limit is {worker.memory_mb} MB)" if worker.memory_mb else ""
                raise ConversionFailed(
                    f"{what} crashed the worker process{mem} (a native crash in the converter or runtime, or out "
                    "of memory)",
                    hint="the worker's last output is in the report's details (EDGEPACK_DEBUG=1 prints it); raise "
                         "EDGEPACK_WORKER_MEMORY_MB if it ran out of memory",
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
_LIVE: "weakref.WeakSet[_Worker]" = weakref.WeakSet()
_TERMINATING = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived: every worker's process group has been killed; the build unwinds and cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def kill_all() -> None:
    """Stop every live worker now (their process groups, SIGKILL) and refuse to start new work."""
    _TERMINATING.set()
    for w in list(_LIVE):
        w.kill()


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT end the whole build: workers killed at once, then ``Terminated`` in the main thread."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        kill_all()
        raise Terminated(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


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


__all__ = ["DEFAULT_TIMEOUT_S", "check_settings", "setting", "Terminated", "Workers", "current", "family_of", "install_signal_handlers", "kill_all",
           "memory_limit_mb", "run_isolated"]

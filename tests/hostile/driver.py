"""Run many edgepack CLI invocations with one Python start-up: ``python driver.py cases.json results.json``.

The driver imports ``edgepack.cli`` (and the test fakes) once, then forks one child per case. Each child changes to
its case folder, sends fds 1/2 to files and calls ``edgepack.cli.main()`` — the same entry point as
``python -m edgepack`` — with the case's argv (a case whose ``entry`` is ``runner`` execs ``python -I
<bundle>/run_bundle.py`` instead, as a device runs it). The parent waits with a time limit (a hang is killed and counted)
and records the exit code or the signal that ended the child.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

FSIZE_LIMIT = 2 << 30  # bytes one file of a case may reach
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS threads in a process that forks
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fakes  # noqa: E402,F401 - registers the fake source and backends (as in the unit tests)
import edgepack.bundle  # noqa: E402,F401 - preloaded: the children only pay for their own work
import edgepack.cli  # noqa: E402
import edgepack.pipeline  # noqa: E402,F401


def run_case(case: dict, timeout: float) -> dict:
    folder = case["argv_dir"]
    out_path, err_path = os.path.join(folder, "..", f"{case['name']}.stdout"), os.path.join(folder, "..",
                                                                                           f"{case['name']}.stderr")
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setpgid(0, 0)
            # a case that writes without end (a copy through a link to /dev/zero, in code that still follows it)
            # gets EFBIG (Python ignores SIGXFSZ) at this size instead of filling the disk under everyone else
            resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
            os.chdir(folder)
            for fd, path in ((1, out_path), (2, err_path)):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            os.environ.update(case.get("env") or {})
            if case.get("entry") == "runner":  # a bundle's run_bundle.py, as a device runs it (no edgepack)
                os.execv(sys.executable, [sys.executable, "-I", *case["argv"]])
            sys.dont_write_bytecode = True  # an imported plug-in must not add __pycache__ to the case folder
            sys.path[:0] = case.get("sys_path") or []  # installed plug-ins (entry points are read from sys.path)
            sys.argv = ["edgepack", *case["argv"]]
            code = 0
            try:
                edgepack.cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException:  # noqa: BLE001 - anything escaping main() is a traceback in the child
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(99)
    status = None
    while time.monotonic() - t0 < timeout:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        time.sleep(0.01)
    hung = status is None
    if hung:
        os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    try:  # anything the case's process group left running is an orphan
        os.killpg(pid, 0)
        orphans = True
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        orphans = False
    with open(out_path, errors="replace") as f:
        stdout = f.read()
    with open(err_path, errors="replace") as f:
        stderr = f.read()
    os.unlink(out_path)
    os.unlink(err_path)
    return {
        "name": case["name"], "hung": hung, "orphans": orphans, "seconds": round(time.monotonic() - t0, 3),
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) and not hung else None,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "stdout": stdout, "stderr": stderr,
    }


def main() -> None:
    cases = json.loads(open(sys.argv[1]).read())
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    results = [run_case(c, timeout) for c in cases]
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()

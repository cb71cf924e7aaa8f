"""How a bundle gets to a device and how its runner is started there.

Every transport runs the bundle's own ``run_bundle.py`` (or, on a phone without Python, the runtime's benchmark
binary) inside ``sh -c '...; echo <marker> $?'`` so that the real exit code comes back in-band: a run whose
output lacks the marker (lost connection, killed transport), that times out, or whose runner died from a signal
is INFRA, never a verdict. Transports return a :class:`RawRun`; :mod:`edgepack.devices.verdicts` judges it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.devices import setup as emu
from edgepack.devices.inventory import Device

MARKER = "__EDGEPACK_EXIT__"
_MARKER_RE = re.compile(rf"^{MARKER}=(\d+)$", re.M)
BLOCKED = ("torch", "tensorflow", "keras", "edgepack")

# Runs run_bundle.py with the frameworks made unimportable: what a device has is numpy + a runtime.
GUARD = """
import importlib.abc, runpy, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not available on this device")
        return None
sys.meta_path.insert(0, _Block())
sys.argv = [{runner!r}] + sys.argv[1:]
runpy.run_path({runner!r}, run_name="__main__")
"""


@dataclass
class RawRun:
    """What came back from one attempt, before any judgement."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None  # from the marker; None when the marker never arrived
    transport_code: int | None = None  # the local transport process's own exit code (ssh: 255 = connection)
    timed_out: bool = False
    infra: str = ""  # a transport step failed (push, pull, connect)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def with_marker(command: str) -> str:
    """``command`` followed by the marker carrying its exit code, as one POSIX shell command line."""
    return f"{command}; echo {MARKER}=$?"


def bounded(command: str, seconds: float) -> str:
    """``command`` under the device's own ``timeout`` (coreutils, busybox, toybox) when it has one, so a hung runner
    does not outlive the harness's deadline on the device (a lost ssh session does not kill it); exit 124 = timed out
    there. A device without ``timeout`` runs the command as it is."""
    s = max(1, int(seconds) - 2)
    return (f"if command -v timeout >/dev/null 2>&1; then timeout -k 5 {s} {command}; "
            f"else {command}; fi")


def split_marker(stdout: str) -> tuple[str, int | None]:
    """(output before the marker, exit code) — (stdout, None) when there is no marker."""
    found = list(_MARKER_RE.finditer(stdout))
    if not found:
        return stdout, None
    last = found[-1]
    return stdout[: last.start()], int(last.group(1))


def execute(argv: list[str], timeout_s: float, *, cwd: str | None = None, env: dict | None = None,
            marker: bool = True) -> RawRun:
    """Run ``argv`` in its own process group (its own session) and wait at most ``timeout_s``.

    On time-out the whole group is killed and the run says so (``timed_out``); on anything else that ends the wait
    (SIGINT/SIGTERM arrive as an exception here) the group is killed before the exception goes on, so no device-side
    process outlives edgepack. ``marker``: the command prints the exit marker (else the exit code is the process's).
    A program that does not exist is an ``infra`` line, not an exception."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                cwd=cwd, env=env, start_new_session=True)
    except OSError as e:
        return RawRun(infra=f"cannot start {shlex.quote(str(argv[0]))}: {e.strerror or e}")
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:
        kill_group(proc)
        raise
    if marker:
        body, code = split_marker(out or "")
    else:
        body, code = out or "", None if timed_out else proc.returncode
    return RawRun(stdout=body, stderr=err or "", exit_code=code, transport_code=proc.returncode,
                  timed_out=timed_out, seconds=time.monotonic() - t0)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (it was started with ``start_new_session``) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def step(argv: list[str], timeout_s: float, what: str, **kw) -> str:
    """Run one transport step (push, mkdir, copy) as :func:`execute` does; '' when it succeeded, else one line
    saying why (its process group is killed on time-out)."""
    r = execute(argv, timeout_s, marker=False, **kw)
    if r.infra:
        return f"{what}: {r.infra}"
    if r.timed_out:
        return f"{what} timed out after {timeout_s:g} s (its process group was killed)"
    if r.exit_code != 0:
        return f"{what} failed (exit {r.exit_code}): {(r.stderr or r.stdout).strip()[-300:]}"
    return ""


def fresh_remote(template: str, name: str) -> tuple[str, str]:
    """(base folder, fresh folder of this run) on the device: ``remote`` names a folder (or ends with ``/{name}``);
    the harness creates a new folder of its own below it and never deletes anything it did not create."""
    base = template[: -len("/{name}")] if template.endswith("/{name}") else template
    base = base.rstrip("/") or "/"
    unique = f"edgepack-{name}-{os.getpid()}-{time.monotonic_ns()}"
    return base, ("" if base == "/" else base) + "/" + unique


def make_fresh(base: str, fresh: str) -> str:
    """The shell line that creates ``fresh`` below ``base``; plain ``mkdir`` fails when it already exists."""
    return f"mkdir -p {shlex.quote(base)} && mkdir {shlex.quote(fresh)}"


def runner_args(remote: str, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> str:
    """The bundle runner's arguments (``--min-seconds`` only when asked: runners of older bundles lack it)."""
    return (f"--bundle {shlex.quote(remote)} --repeats {repeats} --warmup {warmup} --threads 1 "
            f"--config {shlex.quote(config)}" + (f" --min-seconds {min_seconds:g}" if min_seconds > 0 else ""))


class Transport:
    """Push a bundle, run its runner, clean up. One instance per (device, bundle) attempt."""

    def __init__(self, device: Device):
        self.device = device

    def run(self, bundle: Path, *, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> RawRun:
        raise NotImplementedError


class LocalTransport(Transport):
    """This host (``local``) or an emulated device (``arm64-emu``): the bundle is copied to a scratch folder and
    run by the device's Python with the frameworks blocked."""

    def python(self) -> list[str]:
        d = self.device
        if d.kind == "arm64-emu":
            py = d.python or str(emu.python_of("arm64-emu"))
            if not Path(py).is_file():
                raise FileNotFoundError(f"{py} is missing: run `edgepack device setup arm64-emu`")
            return [py]
        if d.kind == "x86-64-emu":
            qemu = shutil.which("qemu-x86_64-static")
            if not qemu:
                raise FileNotFoundError("qemu-x86_64-static is missing: apt-get install qemu-user-static")
            return [qemu, "-cpu", d.cpu or "Haswell", d.python or emu.sys.executable]
        return [d.python or emu.sys.executable]

    def run(self, bundle: Path, *, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> RawRun:
        d = self.device
        try:
            py = self.python()
        except FileNotFoundError as e:
            return RawRun(infra=str(e))
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if d.cpu:
            env["EDGEPACK_QEMU_CPU"] = d.cpu
        with tempfile.TemporaryDirectory(prefix="edgepack-device-") as scratch:
            remote = Path(scratch) / bundle.name
            try:  # symlinks are copied as links, never read through (a link to /dev/zero would never end)
                shutil.copytree(bundle, remote, symlinks=True)
            except (OSError, shutil.Error) as e:
                return RawRun(infra=f"cannot copy the bundle to the device: {str(e)[:300]}")
            runner = str(remote / "run_bundle.py")
            guard = GUARD.format(blocked=BLOCKED + tuple(d.unavailable), runner=runner)
            cmd = " ".join(shlex.quote(a) for a in [*py, "-c", guard])
            cmd += " " + runner_args(str(remote), repeats, warmup, config, min_seconds)
            return execute(["sh", "-c", with_marker(cmd)], d.timeout_s, cwd=scratch, env=env)


class SshTransport(Transport):
    """A Linux board or Jetson over OpenSSH: ``scp`` the bundle, run it with the board's Python, remove it.
    Key-based auth only (BatchMode); a connection that drops ends without the marker → INFRA."""

    def base(self, program: str) -> list[str]:
        d = self.device
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if d.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={d.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        if d.identity:
            opts += ["-i", d.identity, "-o", "IdentitiesOnly=yes"]
        return [program, *opts, "-P" if program == "scp" else "-p", str(d.port)]

    @property
    def target(self) -> str:
        return f"{self.device.user}@{self.device.host}" if self.device.user else self.device.host

    def run(self, bundle: Path, *, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> RawRun:
        d = self.device
        base, remote = fresh_remote(d.remote, bundle.name)
        mk = execute([*self.base("ssh"), self.target, with_marker(make_fresh(base, remote))], d.timeout_s)
        if mk.exit_code != 0:
            return RawRun(infra=mk.infra or f"ssh {self.target}: cannot create {remote}: "
                                             f"{(mk.stderr or mk.stdout).strip()[-300:]}",
                          transport_code=mk.transport_code, timed_out=mk.timed_out)
        try:  # from here on the fresh folder is ours: removed whatever happens (only it, never its parent)
            t0 = time.monotonic()
            why = step([*self.base("scp"), "-rq", f"{bundle}/.", f"{self.target}:{remote}"], d.timeout_s,
                       f"scp to {self.target}")
            if why:
                return RawRun(infra=why)
            args = runner_args(remote, repeats, warmup, config, min_seconds)
            cmd = bounded(f"{shlex.quote(d.python)} {shlex.quote(remote + '/run_bundle.py')} {args}", d.timeout_s)
            res = execute([*self.base("ssh"), self.target, with_marker(cmd)], d.timeout_s)
            res.extra["push_s"] = time.monotonic() - t0 - res.seconds
            return res
        finally:
            execute([*self.base("ssh"), self.target, f"rm -rf {shlex.quote(remote)}"], min(60.0, d.timeout_s),
                    marker=False)


class CommandTransport(Transport):
    """Two shell templates (push, run); placeholders {bundle}, {remote}, {name}, each substituted shell-quoted.
    The templates themselves are shell by design (the inventory is configuration that runs commands)."""

    def run(self, bundle: Path, *, repeats: int, warmup: int, config: str, min_seconds: float = 0.0) -> RawRun:
        d = self.device
        name = bundle.name
        remote = d.remote.format(name=name)
        fmt = {"bundle": shlex.quote(str(bundle)), "remote": shlex.quote(remote), "name": shlex.quote(name)}
        why = step(["sh", "-c", d.push.format(**fmt)], d.timeout_s, "push")
        if why:
            return RawRun(infra=why)
        cmd = d.run.format(**fmt) + " " + runner_args(remote, repeats, warmup, config, min_seconds)
        return execute(["sh", "-c", with_marker(cmd)], d.timeout_s)

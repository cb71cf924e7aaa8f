"""A real Ray cluster on this machine for the tests: `ray start --block` processes (each in its own session, so
the test can stop exactly what it started), bound to 127.0.0.1, no dashboard, every file (sockets, logs, the
session token) in a temporary folder removed at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # Ray's unix sockets live under its temp dir: keep the path short (a socket path has ≤ 107 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="epzoo-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The nodes' environment: this process's as it is now (a node started later sees later settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}  # not a session's leftovers
        return {**env, "RAY_TMPDIR": str(self.temp), "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def start(self, name: str, *, head: bool = False, resources: dict | None = None, cpus: int = 1,
              tmpdir: Path | None = None) -> None:
        args = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
                "--temp-dir", str(self.temp), "--disable-usage-stats"]
        args += (["--head", "--port", str(self.port), "--include-dashboard=false"] if head
                 else ["--address", self.address])
        if resources:
            args += ["--resources", json.dumps(resources)]
        env = dict(self.env)
        if tmpdir is not None:  # where this node's workers make their temporary folders
            env["TMPDIR"] = str(tmpdir)
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.nodes[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def node_ids(self, timeout: float = 90) -> dict[str, str]:
        """Wait until every started node is alive; custom resource name → node id (plus 'head')."""
        code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
                "print(json.dumps([[n['NodeID'], n['Alive'], n['Resources']] for n in ray.nodes()]))" % self.address)
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                               timeout=120)  # a driver of its own: the test process stays free of Ray
            alive = [n for n in json.loads(r.stdout.strip().splitlines()[-1]) if n[1]] if r.returncode == 0 else []
            if len(alive) >= len([p for p in self.nodes.values() if p.poll() is None]):
                out = {}
                for node_id, _, res in alive:
                    for k in res:
                        if not k.startswith(("node:", "CPU", "memory", "object_store_memory", "GPU", "accelerator")):
                            out[k] = node_id
                    if "node:__internal_head__" in res:
                        out["head"] = node_id
                return out
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray cluster did not come up: {r.stderr[-2000:]}")
            time.sleep(1)

    def kill(self, name: str) -> None:
        """SIGKILL a node: its `ray start`, raylet and workers (the whole process group)."""
        p = self.nodes.pop(name)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node this cluster started (SIGKILL to each node's process group: nothing of a test cluster
        needs a graceful end), then whatever of it is left."""
        for name in list(self.nodes):
            self.kill(name)
        # anything of this cluster's still running (a worker a raylet started in its own group): by pid, found by
        # the cluster's unique temporary folder on its command line
        for pid in _pids_mentioning(str(self.temp)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def _pids_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def listening_beyond_loopback(pids: list[int]) -> list[str]:
    """TCP listeners of these processes that are not bound to 127.0.0.1 (from `ss -ltnp`)."""
    r = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True)
    bad = []
    for line in r.stdout.splitlines():
        if any(f"pid={p}," in line for p in pids):
            local = line.split()[3]
            if not local.startswith(("127.0.0.1:", "[::1]:")):
                bad.append(line)
    return bad

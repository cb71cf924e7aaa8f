"""A real OpenSSH server (Debian's openssh-server) on 127.0.0.1 for the ssh transport's tests: generated host and
client keys in a temp folder, key-only auth, started and stopped by the test session (by its own pid)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Server:
    port: int
    user: str
    identity: Path
    known_hosts: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = _free_port()
    (folder / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PidFile {folder / 'sshd.pid'}
Subsystem sftp internal-sftp
ClientAliveInterval 5
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
    host_pub = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=open(folder / "sshd.log", "w"))
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
    return Server(port=port, user=getpass.getuser(), identity=folder / "client_key",
                  known_hosts=folder / "known_hosts", proc=proc)


DISCONNECT = """#!/bin/sh
# A board that drops the connection mid-run: kill this session's sshd process (the first sshd ancestor).
pid=$$
while [ "$pid" -gt 1 ]; do
  case "$(cat /proc/$pid/comm)" in sshd*) kill -9 "$pid"; sleep 5; exit 0;; esac
  pid=$(awk '{print $4}' /proc/$pid/stat)
done
exit 3
"""

HANG = "#!/bin/sh\n# A runner that hangs.\nsleep 600\n"
KILLED = "#!/bin/sh\n# A runner killed by the OOM killer (SIGKILL).\nkill -9 $$\n"
FLAKY = """#!/bin/sh
# Drops the connection on the first call, then behaves: a FLAKY device.
if [ ! -f "{state}" ]; then touch "{state}"; exec {disconnect} "$@"; fi
exec {python} "$@"
"""


def script(folder: Path, name: str, body: str) -> str:
    p = folder / name
    p.write_text(body)
    p.chmod(0o755)
    return str(p)

"""Nightly device harness: push each bundle to each device in an inventory, run its own ``run_bundle.py``
there, and collect the verdicts (parity against golden outputs, integrity, latency measured on the device).

Device kinds:
* ``local``   — this host, as a device: the bundle is copied to a scratch folder and run by a Python in which
                torch, TensorFlow and edgepack are made unimportable (what a device has: numpy + a runtime).
* ``command`` — any transport given as two command templates, e.g. for a Jetson or Linux edge box over ssh:
                push = "scp -rq {bundle} jetson:{remote}", run = "ssh jetson python3 {remote}/run_bundle.py".
                Placeholders: {bundle} local folder, {remote} folder on the device, {name} bundle name.

Android/iOS phones run bundles inside an app (no Python); their nightly runs need an app-side runner and are
not driven from here yet.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.devices.transports import BLOCKED  # noqa: E402 - one device guard for the harness and `edgepack device`
from edgepack.devices.transports import GUARD as _GUARD  # noqa: E402


@dataclass
class Device:
    name: str
    kind: str = "local"
    python: str = sys.executable
    unavailable: list[str] = field(default_factory=list)  # local: more modules to make unimportable (tests)
    push: str = ""
    run: str = ""
    remote: str = "/tmp/edgepack-bundles/{name}"
    backends: list[str] = field(default_factory=list)  # empty = every backend
    timeout_s: float = 600.0


def load_inventory(path: Path) -> list[Device]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    devices = []
    for entry in data.get("device", []):
        unknown = set(entry) - set(Device.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown device keys {sorted(unknown)}")
        dev = Device(**entry)
        if dev.kind not in ("local", "command"):
            raise ValueError(f"{path}: device {dev.name} has unknown kind '{dev.kind}' (local or command)")
        if dev.kind == "command" and not (dev.push and dev.run):
            raise ValueError(f"{path}: command device {dev.name} needs push and run templates")
        devices.append(dev)
    return devices


def find_bundles(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        found += sorted(p.parent for p in Path(root).rglob("manifest.json") if (p.parent / "run_bundle.py").is_file())
    return found


def _backend(bundle: Path) -> str:
    from edgepack.bundle import read_manifest  # the harness runs on the build host, where edgepack is installed

    return read_manifest(bundle).artifact.backend


def run_on_device(device: Device, bundle: Path, repeats: int = 20) -> dict:
    """Run one bundle on one device; returns run_bundle.py's verdict plus where it ran."""
    name = f"{bundle.parent.name}-{bundle.name}"
    with tempfile.TemporaryDirectory(prefix="edgepack-device-") as scratch:
        if device.kind == "local":
            remote = Path(scratch) / name
            shutil.copytree(bundle, remote)
            runner = str(remote / "run_bundle.py")
            blocked = tuple(BLOCKED) + tuple(device.unavailable)
            cmd = [device.python, "-c", _GUARD.format(blocked=blocked, runner=runner), "--bundle", str(remote),
                   "--repeats", str(repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=device.timeout_s, cwd=scratch)
        else:
            remote = device.remote.format(name=name)
            fmt = {"bundle": shlex.quote(str(bundle)), "remote": shlex.quote(remote), "name": name}
            push = subprocess.run(device.push.format(**fmt), shell=True, capture_output=True, text=True,
                                  timeout=device.timeout_s)
            if push.returncode != 0:
                return {"device": device.name, "bundle": str(bundle), "passed": False,
                        "error": f"push failed: {push.stderr.strip()[-300:]}"}
            run = device.run.format(**fmt) + f" --bundle {shlex.quote(remote)} --repeats {repeats}"
            proc = subprocess.run(run, shell=True, capture_output=True, text=True, timeout=device.timeout_s)
    try:
        verdict = json.loads(proc.stdout)
    except json.JSONDecodeError:
        verdict = {"passed": False, "error": f"runner printed no verdict (exit {proc.returncode}): "
                                             f"{(proc.stderr or proc.stdout).strip()[-500:]}"}
    verdict.update(device=device.name, bundle=str(bundle), exit_code=proc.returncode)
    unavailable = proc.returncode == 2 and str(verdict.get("error", "")).startswith("runtime unavailable")
    verdict["status"] = "passed" if verdict.get("passed") else ("skipped" if unavailable else "failed")
    return verdict


def run_all(devices: list[Device], bundles: list[Path], repeats: int = 20) -> list[dict]:
    results = []
    for dev in devices:
        for b in bundles:
            if dev.backends and _backend(b) not in dev.backends:
                continue
            results.append(run_on_device(dev, b, repeats))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path, help="bundle folders or folders containing bundles")
    ap.add_argument("--inventory", type=Path, default=Path(__file__).with_name("inventory.toml"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--report", type=Path, help="write all verdicts as JSON here")
    args = ap.parse_args(argv)
    bundles = find_bundles(args.bundles)
    if not bundles:
        print("no bundles found", file=sys.stderr)
        return 2
    results = run_all(load_inventory(args.inventory), bundles, args.repeats)
    for r in results:
        status = r.get("status", "failed").upper()
        lat = r.get("latency_ms", {})
        extra = f"p50 {lat['p50']:.3f} ms" if lat else r.get("error", "")
        print(f"{status}  {r['device']:<12} {r['bundle']}  {extra}")
    if args.report:
        args.report.write_text(json.dumps(results, indent=2) + "\n")
    ran = [r for r in results if r.get("status") != "skipped"]
    return 0 if ran and all(r.get("passed") for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())

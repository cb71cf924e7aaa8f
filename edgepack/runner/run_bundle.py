#!/usr/bin/env python3
"""Run this edgepack bundle on the device it sits on and check it against its golden outputs.

Needs only numpy and the bundle's runtime (onnxruntime, openvino, ai_edge_litert/tflite_runtime, or coremltools
on macOS) — no torch, no TensorFlow, no edgepack. Prints a JSON verdict on stdout.

    python run_bundle.py [--bundle DIR] [--repeats 50] [--warmup 5] [--min-seconds 0] [--threads 1]
                         [--config parity] [--no-verify]

``--config parity`` (default) runs the bundle as the build host checked it (e.g. OpenVINO forced to f32);
``--config deployment`` lets the runtime use its own defaults on this device (e.g. OpenVINO's f16 inference
precision on ARM CPUs). The device loader reads the choice from ``EDGEPACK_RUNTIME_CONFIG``.

The bundle's files are checked against manifest.json (sha256) with the standard library BEFORE anything from the
bundle is loaded; then edgepack's numpy core (runner/edgepack_core/, the same code the build host uses) and the
backend's device loader (runner/device.py) are loaded by explicit path. The bundle folder is never put on sys.path.

Exit codes: 0 parity (and integrity) passed, 1 a check failed or was INCONCLUSIVE (``verdict`` says which: too few
golden samples to prove a rate budget), 2 the runtime is missing or the bundle unreadable.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # loading the bundle's core must not add files to the bundle
import os  # noqa: E402 - already loaded by the interpreter's start-up, never from sys.path

_HERE = os.path.dirname(os.path.realpath(__file__))


def _in_bundle(entry: str) -> bool:
    real = os.path.realpath(entry or ".")
    return real == _HERE or real.startswith(_HERE + os.sep)


sys.path[:] = [p for p in sys.path if p and not _in_bundle(p)]  # nothing is imported from the bundle folder

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _integrity(bundle: Path, manifest: dict) -> list[str]:
    problems = []
    root = bundle.resolve()
    listed = set()
    for e in manifest["files"]:
        listed.add(e["path"])
        p = bundle / e["path"]
        if Path(e["path"]).is_absolute() or not p.resolve().is_relative_to(root):
            problems.append(f"outside the bundle: {e['path']}")
        elif p.is_symlink() or not p.is_file():
            problems.append(f"missing: {e['path']}")
        elif p.stat().st_size != e["size"]:
            problems.append(f"size changed: {e['path']}")
        elif _sha256(p) != e["sha256"]:
            problems.append(f"content changed: {e['path']}")
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if p.is_file() and rel not in listed and rel not in ("manifest.json", "report.json"):
            problems.append(f"unexpected file: {rel}")
    return problems


def _load_package(name: str, folder: Path):
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error(message: str, code: int = 2, **extra) -> int:
    """One JSON verdict with an ``error`` (never a traceback): exit 2 unreadable bundle / missing runtime."""
    print(json.dumps({"passed": False, "error": message, **extra}, default=str))
    return code


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.0, help="keep timing until the timed calls add up to "
                    "this many seconds (device latency budgets)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", choices=("parity", "deployment"), default="parity")
    ap.add_argument("--no-verify", action="store_true", help="skip the sha256 integrity check")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except Exception as e:  # noqa: BLE001 - a hostile or corrupt bundle: one JSON error, exit 2, no traceback
        return _error(f"cannot run the bundle: {_why(e)}")


def _run(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
        problems = [] if args.no_verify else _integrity(bundle, manifest)
        target, backend = str(manifest["target"]["name"]), str(manifest["artifact"]["backend"])
        listed = {e["path"] for e in manifest["files"]}
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        return _error(f"cannot read manifest: {_why(e)}")
    runner_files = {"runner/device.py"} | {f"runner/edgepack_core/{p.name}" for p in (bundle / "runner/edgepack_core").glob("*.py")}
    if problems or not runner_files <= listed:
        # nothing from a bundle that fails its sha256 check is loaded: not the runner, not the model, not the data
        return _error("integrity check failed: " + ("; ".join(problems[:3]) or "the runner files are not listed in "
                      "the manifest") + "; nothing was loaded", code=1,
                      integrity={"passed": False, "problems": problems or ["runner files not listed"]})
    _load_package("edgepack_core", bundle / "runner" / "edgepack_core")
    from edgepack_core import bundle_run  # noqa: E402 - loaded by explicit path above
    from edgepack_core.npz import ArchiveError  # noqa: E402

    os.environ["EDGEPACK_RUNTIME_CONFIG"] = args.config
    base = {"bundle": str(bundle), "target": target, "backend": backend, "integrity": {"passed": True, "problems": []}}
    try:
        device = _load_module("edgepack_device", bundle / "runner" / "device.py")
        result = bundle_run.run(bundle, manifest, device.load, threads=args.threads, warmup=args.warmup,
                                repeats=args.repeats, integrity=problems, config=args.config,
                                min_seconds=args.min_seconds)
    except ImportError as e:
        print(bundle_run.dumps({**base, "passed": False, "error": f"runtime unavailable: {e}"}))
        return 2
    except ArchiveError as e:  # a golden file refused before it was inflated (zip bomb, pickle, forged header)
        print(bundle_run.dumps({**base, "passed": False, "error": e.message, "hint": e.hint}))
        return 2
    print(bundle_run.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

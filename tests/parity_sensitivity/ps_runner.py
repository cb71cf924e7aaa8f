"""Run many bundles' own ``run_bundle.py`` in ONE fresh interpreter (no edgepack, no torch imported here).

    python -I ps_runner.py BUNDLE [BUNDLE ...]   → one JSON line per bundle: {"bundle", "code", "stdout", "stderr"}

Each bundle's ``run_bundle.py`` is loaded by path and its ``main`` called exactly as ``python run_bundle.py
--repeats 1 --warmup 0`` would run it (its exit code is ``main``'s return value); the modules it loads from the
bundle (``edgepack_core``, ``edgepack_device``) are dropped between bundles, so every bundle runs its OWN core and
device loader. Only the runtime's import (onnxruntime, openvino, ...) is shared, which is what makes this fast.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # as `python run_bundle.py` (a __main__ script is never cached): no __pycache__ in bundles

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402


def run_one(bundle: str) -> dict:
    for name in [m for m in sys.modules if m.split(".")[0] in ("edgepack_core", "edgepack_device", "run_bundle")]:
        del sys.modules[name]
    out, err = io.StringIO(), io.StringIO()
    code: int
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            spec = importlib.util.spec_from_file_location("run_bundle", f"{bundle}/run_bundle.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            code = int(mod.main(["--bundle", bundle, "--repeats", "1", "--warmup", "0"]))
        except SystemExit as e:  # argparse or an explicit exit
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a crash of the bundle's runner is an outcome, as in a subprocess
            traceback.print_exc()
            code = 1
    return {"bundle": bundle, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(bundles: list[str]) -> int:
    for b in bundles:
        print(json.dumps(run_one(b)), flush=True)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("edgepack", "torch", "tensorflow"))
    if leaked:
        print(json.dumps({"error": f"the runners imported {leaked[:5]}"}), flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

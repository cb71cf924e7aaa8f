"""The device side of a bundle check: golden inputs → the backend's device loader → parity + latency.

Called by the bundle's ``run_bundle.py`` (after it has verified the bundle's files) with the backend's
``load(bundle, artifact, runtime, threads) -> (infer, facts)`` function. Everything here is shared with the host.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable


from .batching import axes_of, first_batch, max_batch, run_batched
from .checks import finite_json
from .latency import measure
from .limits import Limits
from .metrics import parity
from .npz import load_npz
from .outspec import AUTO, from_dict

Loader = Callable[[Path, dict, dict, int], tuple[Callable[[dict], dict], dict]]


def run(bundle: Path, manifest: dict[str, Any], load: Loader, *, threads: int = 1, warmup: int = 5,
        repeats: int = 50, integrity: list[str] | None = None, config: str = "parity",
        min_seconds: float = 0.0) -> dict[str, Any]:
    """Run the golden inputs on this device and judge them with the manifest's limits. Returns the verdict dict.

    ``config`` is what the device loader was asked for: ``parity`` (the precision the host checked conversion
    fidelity with) or ``deployment`` (the runtime's own defaults on this device, e.g. OpenVINO's f16 on ARM).
    Latency: ``warmup`` untimed calls, then at least ``repeats`` timed ones and at least ``min_seconds`` of them.

    Raises ImportError when the runtime is missing on this device.
    """
    art = manifest["artifact"]
    result: dict[str, Any] = {
        "bundle": str(bundle), "target": manifest["target"]["name"], "backend": art["backend"],
        "host": f"{platform.system()} {platform.machine()} {platform.node()}",
        "integrity": {"passed": not integrity, "problems": list(integrity or [])}, "config": config,
    }
    infer, facts = load(bundle, art, art.get("runtime") or {}, threads)
    result["runtime"] = facts
    golden = manifest["golden"]
    inputs = load_npz(bundle / golden["inputs"])
    reference = load_npz(bundle / golden["outputs"])
    labels = load_npz(bundle / golden["labels"])["labels"] if golden.get("labels") else None
    ins = art.get("inputs") or []
    batch = max_batch(ins[0]["shape"] if ins else ())
    axes = axes_of(ins)
    specs = {name: from_dict(d) for name, d in (manifest.get("output_specs") or {}).items()}
    out_axes = {name: s.batch_axis for name, s in specs.items() if s.batch_axis != AUTO}
    outputs = run_batched(infer, inputs, batch, axes, out_axes=out_axes or None)  # samples first, as the golden
    kinds = {name: k["kind"] for name, k in (manifest.get("kinds") or {}).items()}
    outcome = parity(reference, outputs, Limits.from_dict(manifest.get("limits")), labels, kinds, specs)
    one = first_batch(inputs, batch, axes)
    lat = measure(lambda: infer(one), warmup, repeats, keep_samples=True, min_seconds=min_seconds)
    result["latency"] = {"where": "device", **lat}
    result["latency_ms"] = {"p50": lat["p50_ms"], "p90": lat["p90_ms"]}
    result["parity"] = {**outcome.to_dict(), "missing_outputs": [k for k in reference if k not in outputs]}
    result["passed"] = bool(not integrity and outcome)
    return result


def dumps(result: dict[str, Any]) -> str:
    """Strict JSON (NaN/Inf become null)."""
    return json.dumps(finite_json(result), indent=2, allow_nan=False)

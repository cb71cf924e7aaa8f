"""What is here: model signatures and op census (``inspect``), profiles (``targets``), installed backends (``doctor``)."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

from edgepack.backends import registry
from edgepack.backends.base import BRIDGE_NEEDS
from edgepack.config import available_targets, host_judges_latency, load_profile
from edgepack.errors import EdgepackError



def edgepack_version() -> str:
    from edgepack import __version__

    return __version__


def _installed(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def can_take(backend, kind: str) -> tuple[bool, str]:
    missing = backend.missing()
    if missing:
        return False, f"not installed: {', '.join(missing)}"
    return backend.route(kind)


def inspect_model(model: str, **kwargs: Any) -> dict[str, Any]:
    from edgepack.sources import load_source

    src = load_source(model, **kwargs)
    info: dict[str, Any] = {**src.describe(), "ops": {}}
    if src.kind == "onnx":
        from edgepack.sources.onnx import op_census, read_model

        info["ops"] = op_census(read_model(Path(src.path), load_weights=False))
    rows = []
    for name, path in available_targets().items():
        try:
            t = registry.resolve(load_profile(str(path)))
            p = t.profile
            ok, why = can_take(t.backend, src.kind)
        except EdgepackError as e:
            rows.append({"target": name, "backend": "?", "precision": "?", "ok": False, "why": e.message})
            continue
        custom = [op for op in info["ops"] if "::" in op and not op.startswith("com.microsoft::")]
        if ok and custom and p.backend != "ort_mobile":
            ok, why = False, f"custom ops: {', '.join(custom)}"
        rows.append({"target": name, "backend": p.backend, "precision": p.precision, "ok": ok, "why": why})
    info["targets"] = rows
    return info


def _budget_text(p) -> str:
    b = p.budgets
    parts = []
    if b.max_size_mb is not None:
        parts.append(f"size ≤ {b.max_size_mb} MB")
    where = "host" if host_judges_latency(p.device) else f"on {p.device}"
    if b.max_latency_p50_ms is not None:
        parts.append(f"p50 ≤ {b.max_latency_p50_ms} ms ({where})")
    if b.max_latency_p90_ms is not None:
        parts.append(f"p90 ≤ {b.max_latency_p90_ms} ms ({where})")
    for klass, d in sorted(b.device.items()):
        lims = [f"{q} ≤ {v} ms" for q, v in (("p50", d.p50_ms), ("p90", d.p90_ms)) if v is not None]
        parts.append(f"{' '.join(lims) or 'latency'} (on {klass})")
    for k, v in b.parity.model_dump().items():
        if v is not None:
            parts.append(f"{k} {v}")
    return ", ".join(parts) or "defaults"


def list_targets(targets_dir: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    for name, path in available_targets(targets_dir).items():
        try:
            t = registry.resolve(load_profile(str(path)))
            p = t.profile
        except EdgepackError as e:  # one broken profile must not hide the others
            rows.append({"target": name, "backend": "?", "precision": "?", "device": "?", "budgets": "",
                         "available": False, "why": f"invalid profile: {e.message}", "path": str(path)})
            continue
        missing = t.backend.missing()
        rows.append({"target": name, "backend": p.backend, "precision": p.precision, "device": p.device,
                     "budgets": _budget_text(p), "available": not missing,
                     "why": f"missing {', '.join(missing)}" if missing else "", "path": str(path)})
    return rows


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


DIST_OF = {"onnxruntime": "onnxruntime", "onnx": "onnx", "tensorflow": "tensorflow", "ai_edge_litert": "ai-edge-litert",
           "litert_torch": "litert-torch", "openvino": "openvino", "nncf": "nncf", "coremltools": "coremltools",
           "torch": "torch", "tf2onnx": "tf2onnx", "onnxscript": "onnxscript", "executorch": "executorch"}


def doctor() -> list[dict[str, Any]]:
    rows = []
    plugins = registry.plugins()
    for name in registry.names():
        try:
            b = registry.get(name)
            missing = b.missing()
            vers = ", ".join(f"{m} {_version(DIST_OF.get(m, m)) or 'missing'}" for m in b.requires)
        except EdgepackError as e:  # a broken plug-in must not hide the others: it is one row
            rows.append({"backend": f"{name} (plug-in)" if name in plugins else name, "ready": False, "versions": "",
                         "install": e.message})
            continue
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a plug-in's own methods are third-party code too
            rows.append({"backend": f"{name} (plug-in)" if name in plugins else name, "ready": False, "versions": "",
                         "install": f"backend '{name}' is broken: {type(e).__name__}"})
            continue
        label = f"{name} (plug-in {plugins[name]})" if name in plugins else name
        rows.append({"backend": label, "ready": not missing, "versions": vers,
                     "install": "" if not missing else f"pip install -c constraints.txt -e '.[{b.extra}]'"})
    for kind, mods in BRIDGE_NEEDS.items():
        missing = [m for m in mods if not _installed(m)]
        vers = ", ".join(f"{m} {_version(DIST_OF.get(m, m)) or 'missing'}" for m in mods)
        rows.append({"backend": f"({kind} source)", "ready": not missing, "versions": vers,
                     "install": "" if not missing else f"pip install -c constraints.txt -e '.[{kind}]'"})
    return rows

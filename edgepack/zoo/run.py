"""One cell, run where the executor puts it (a pool process or a Ray task): take the bundle from the cache when its
key is there and it verifies, else build it with the ordinary pipeline and publish it. Returns the cell's record
and its bundle as a tar archive (the driver unpacks it into ``--out``), so nothing depends on a shared disk."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from edgepack import bundle as bundles
from edgepack import pipeline
from edgepack.zoo import spec
from edgepack.zoo.cache import Cache
from edgepack.zoo.cells import Cell, model_args

# Verdicts of a cell, worst last: the exit code of the zoo is that of its worst cell.
EXIT = {"passed": 0, "skipped": 0, "failed": 1, "inconclusive": 1, "error": 2, "refused": 2, "infra": 2}


def where() -> dict[str, Any]:
    """The machine and, inside a Ray task, the Ray node that ran the cell."""
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "node": None}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        out["node"] = ray.get_runtime_context().get_node_id()
    return out


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the pipeline's contained workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss_mb() -> float:
    """The largest resident set of this process or any finished child so far (Linux: ru_maxrss in KiB): an upper
    bound for this cell when the process ran earlier cells too."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(max(me.ru_maxrss, kids.ru_maxrss) / 1024, 1)


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def summary(report_json: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's figures from a bundle's report.json."""
    latency = report_json.get("latency") or {}
    search = (report_json.get("artifact") or {}).get("accuracy_search") or {}
    return {"verdict": report_json.get("status"), "size_bytes": report_json.get("size_bytes"),
            "latency_p50_ms": latency.get("p50_ms"), "latency_where": latency.get("where"),
            "int8_recipe": (search.get("chosen") or {}).get("recipe"), "reason": report_json.get("reason"),
            "failed_checks": [c["name"] for c in report_json.get("checks", []) if not c.get("passed")]}


def _build_kwargs(zoo: spec.Zoo, m: spec.ModelEntry) -> dict[str, Any]:
    kwargs = model_args(zoo, m)
    overrides = spec.budgets(zoo, m)
    if overrides:
        kwargs["budgets"] = overrides
        kwargs["budget_sources"] = {k: f"zoo {zoo.path}, model {m.name}" for k in overrides}
    return kwargs


def from_cache(cache: Cache, cell: Cell, work: Path) -> tuple[Path | None, str | None]:
    """The cached bundle of the cell when it verifies; else None and, for a tampered entry, why."""
    record = cache.lookup(cell.key)
    if record is None:
        return None, None
    try:
        got = cache.fetch(record, work / "cached")
        bundle = got / cell.target
        result = bundles.verify(bundle, allow_failed=True)
    except Exception as e:  # noqa: BLE001 - an unreadable entry is rebuilt, and said so
        return None, f"cached entry unreadable ({type(e).__name__}: {e}): rebuilt"
    if result:
        return bundle, None
    cache.forget(cell.key)
    return None, f"cached bundle failed verify ({'; '.join(result.problems[:2])}): rebuilt"


def run_cell(zoo_path: str, cell: Cell, cache_location: str | None) -> tuple[dict[str, Any], bytes | None]:
    """Run one cell; returns its record and its bundle folder as a .tar.gz (None when nothing was built)."""
    start, cpu0 = time.monotonic(), _cpu_seconds()
    zoo = spec.load(zoo_path)
    m = zoo.entry(cell.model)
    record: dict[str, Any] = {"id": cell.id, "model": cell.model, "target": cell.target, "key": cell.key,
                              "backend": cell.backend, "precision": cell.precision, **where(), "cache": "off",
                              "notes": []}
    cache = Cache(cache_location) if cache_location else None
    with tempfile.TemporaryDirectory(prefix="edgepack-zoo-cell-") as tmp:
        work = Path(tmp)
        bundle = None
        if cache is not None:
            bundle, why = from_cache(cache, cell, work)
            record["cache"] = "hit" if bundle is not None else "built"
            if why:
                record["cache"] = "rebuilt"
                record["notes"].append(why)
        if bundle is None:
            results = pipeline.build(zoo.resolve(m.source) or m.source, [cell.profile or cell.target],
                                     out=work / "out", **_build_kwargs(zoo, m))
            report = results[0]
            if report.bundle is None:  # skipped or errored: no bundle to keep
                record.update(verdict=report.status, reason=report.reason, hint=report.hint, stage=report.stage,
                              seconds=round(time.monotonic() - start, 3),
                              cpu_seconds=round(_cpu_seconds() - cpu0, 3), peak_rss_mb=_peak_rss_mb())
                return record, None
            bundle = Path(report.bundle)
            if cache is not None:
                cache.publish(cell.key, _only(bundle, work), {"cell": cell.id, "verdict": report.status})
        report_json = json.loads((bundle / "report.json").read_text())
        record.update(summary(report_json))
        record.update(seconds=round(time.monotonic() - start, 3), cpu_seconds=round(_cpu_seconds() - cpu0, 3),
                      peak_rss_mb=_peak_rss_mb())
        return record, _tar(bundle)


def _only(bundle: Path, work: Path) -> Path:
    """A folder holding just the bundle (``<target>/``): what a cache object holds."""
    holder = work / "publish"
    holder.mkdir()
    shutil.copytree(bundle, holder / bundle.name, symlinks=True)
    return holder


__all__ = ["EXIT", "run_cell", "summary", "where"]

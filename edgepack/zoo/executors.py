"""Where cells run: ``local`` (a process pool sized to the machine; each cell runs the ordinary pipeline, which
starts its own contained workers) or ``ray`` (each cell a Ray task with the CPUs, memory, GPUs and custom resources
its target profile declares). Cells that are skipped or refused by the plan never leave the driver.

A cell whose worker is lost (a dead node, a killed process) is retried by Ray up to ``retries`` times, then ends
INFRA — never PASS. A cell that returns (PASS, FAIL, INCONCLUSIVE, ERROR) is never retried: a parity FAIL is a
value, not an exception.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepack import bundle as bundles
from edgepack import safety
from edgepack.errors import EdgepackError, MissingDependency
from edgepack.zoo.cells import Cell, ZooPlan
from edgepack.zoo.run import run_cell

OnDone = Callable[[dict[str, Any]], None]
RAY_LOCAL_ENV = ("RAY_TMPDIR", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")  # Ray sets the mode itself
EXECUTORS = ("local", "ray")


def record_path(out: Path, cell_id: str) -> Path:
    model, target = cell_id.split("/", 1)
    return out / "cells" / model / f"{target}.json"


def _land(out: Path, record: dict[str, Any], tar: bytes | None) -> dict[str, Any]:
    """Unpack a cell's bundle into ``out/<model>/<target>`` (atomic rename) and write its record."""
    model, target = record["model"], record["target"]
    if tar is not None:
        parent = out / model
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".zoo-{target}-{uuid.uuid4().hex[:8]}"
        try:
            with tarfile.open(fileobj=io.BytesIO(tar), mode="r:gz") as t:
                t.extractall(staging, filter="data")
            bundles.commit(staging / target, parent / target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record = {**record, "bundle": f"{model}/{target}", "report": f"{model}/{target}/report.json"}
    path = record_path(out, record["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    safety.write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", "cell record")
    return record


def planned_record(cell: Cell) -> dict[str, Any]:
    """The record of a cell the plan skips or refuses (it never runs)."""
    return {"id": cell.id, "model": cell.model, "target": cell.target, "key": cell.key, "backend": cell.backend,
            "precision": cell.precision, "verdict": "skipped" if cell.action == "skip" else "refused",
            "reason": cell.reason, "hint": cell.hint, "cache": "off", "notes": []}


def failed_record(cell: Cell, verdict: str, why: str) -> dict[str, Any]:
    return {**planned_record(cell), "verdict": verdict, "reason": why}


def run_local(todo: list[Cell], zoo_path: str, cache: str | None, out: Path, on_done: OnDone,
              jobs: int | None = None) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    jobs = jobs or max(1, min(len(todo), os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_cell, zoo_path, c, cache): c for c in todo}
        for f in as_completed(futures):
            cell = futures[f]
            try:
                record, tar = f.result()
            except BrokenProcessPool as e:
                on_done(_land(out, failed_record(cell, "infra", f"the cell's worker process died ({e})"), None))
                continue
            except EdgepackError as e:
                on_done(_land(out, failed_record(cell, "error", e.message), None))
                continue
            except Exception as e:  # noqa: BLE001 - one cell's bug is that cell's ERROR; the zoo goes on
                on_done(_land(out, failed_record(cell, "error", f"internal error ({type(e).__name__}: {e})"), None))
                continue
            on_done(_land(out, record, tar))


def ray_options(cell: Cell, retries: int) -> dict[str, Any]:
    r = cell.resources or {}
    opts: dict[str, Any] = {"num_cpus": r.get("num_cpus", 1.0), "max_retries": retries, "retry_exceptions": False,
                            "name": f"edgepack-zoo:{cell.id}"}
    if r.get("memory_mb"):
        opts["memory"] = int(r["memory_mb"]) * 2**20
    if r.get("gpus"):
        opts["num_gpus"] = r["gpus"]
    if r.get("custom"):
        opts["resources"] = dict(r["custom"])
    return opts


def run_ray(todo: list[Cell], zoo_path: str, cache: str | None, out: Path, on_done: OnDone,
            address: str | None = None, retries: int = 2, num_cpus: int | None = None) -> None:
    """Each cell a Ray task. ``address`` (``auto``, ``ray://host:port``, ``host:port``) joins a cluster; without
    one a local single-node cluster is started, bound to 127.0.0.1, no dashboard, its files in a temporary folder
    removed afterwards."""
    try:
        import ray
        from ray import exceptions as rex
    except ImportError:
        raise MissingDependency("--executor ray needs Ray",
                                hint="pip install -c constraints.txt -e '.[scale]'") from None
    tmp = None
    saved = {k: os.environ.get(k) for k in RAY_LOCAL_ENV}
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # Ray's sockets, logs and session token (Ray writes ~/.ray/auth_token unless told where) all go to a
            # folder of this run, removed afterwards; the unix socket paths stay short under /tmp
            tmp = tempfile.mkdtemp(prefix="edgepack-ray-")
            token = Path(tmp) / "auth_token"
            token.write_text(secrets.token_hex(32))
            token.chmod(0o600)
            os.environ.update(RAY_TMPDIR=tmp, RAY_AUTH_TOKEN_PATH=str(token))
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
                     num_cpus=num_cpus or os.cpu_count() or 1)
        task = ray.remote(run_cell)
        pending = {task.options(**ray_options(c, retries)).remote(zoo_path, c, cache): c for c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    record, tar = ray.get(ref)
                except rex.RayTaskError as e:  # the cell itself raised: its ERROR, never retried
                    cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
                    why = cause.message if isinstance(cause, EdgepackError) else f"{type(cause).__name__}: {cause}"
                    on_done(_land(out, failed_record(cell, "error", why), None))
                    continue
                except rex.RayError as e:  # worker or node lost, after the bounded retries
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    on_done(_land(out, failed_record(cell, "infra", f"{type(e).__name__} after {retries} "
                                                     f"retr{'y' if retries == 1 else 'ies'}: {first}"[:500]), None))
                    continue
                on_done(_land(out, record, tar))
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def build(the_plan: ZooPlan, zoo_path: str, *, executor: str = "local", cache: str | None = None,
          out: Path = Path("zoo-dist"), address: str | None = None, only: str | None = None,
          on_done: OnDone = lambda r: None, retries: int = 2) -> list[dict[str, Any]]:
    """Run the planned cells (or the one ``only`` names) and return their records, in plan order."""
    cells = [the_plan.cell(only)] if only else list(the_plan.cells)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}

    def finished(record: dict[str, Any]) -> None:
        done[record["id"]] = record
        on_done(record)

    for c in cells:
        if c.action != "build":
            finished(_land(out, planned_record(c), None))
    todo = [c for c in cells if c.action == "build"]
    if todo:
        if executor == "ray":
            run_ray(todo, zoo_path, cache, out, finished, address=address, retries=retries)
        else:
            run_local(todo, zoo_path, cache, out, finished)
    return [done[c.id] for c in cells]


__all__ = ["EXECUTORS", "build", "planned_record", "ray_options", "record_path", "run_local", "run_ray"]

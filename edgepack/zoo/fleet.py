"""Device runs across a fleet (``edgepack zoo device-run``): every bundle × device is a Ray task pinned to the node
that owns the device — a device host joins the cluster with ``ray start --resources '{"device:NAME": 1}'`` — and
runs the ordinary device harness there (``edgepack.devices.runs``: verify before push, run, judge). The bundle
travels in the task's arguments, the results come back and are appended to one shared history."""

from __future__ import annotations

import datetime as dt
import io
import platform
import tarfile
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from edgepack.errors import ConfigError, MissingDependency


def device_resource(name: str) -> str:
    return f"device:{name}"


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def run_on_device(device: Any, bundle_name: str, bundle_tar: bytes, repeats: int, warmup: int) -> list[dict]:
    """(The Ray task.) Unpack the bundle on the device's node and run it there with the device harness."""
    from edgepack.devices import runs
    from edgepack.zoo.run import where

    with tempfile.TemporaryDirectory(prefix="edgepack-zoo-device-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(bundle_tar), mode="r:gz") as t:
            t.extractall(tmp, filter="data")
        record = runs.run_all([device], [Path(tmp) / bundle_name], repeats=repeats, warmup=warmup)
    here = where()
    return [{**r, "node": here["node"], "node_host": here["host"]} for r in record["results"]]


def device_run(bundles: list[Path], devices: list[Any], *, address: str | None, repeats: int = 20, warmup: int = 3,
               on_done: Callable[[dict], None] = lambda r: None) -> dict[str, Any]:
    """Run every bundle on every device, each pair a Ray task needing ``device:NAME``; returns one run record
    (the shape ``edgepack device run`` writes) whose results also name the Ray node that ran them."""
    try:
        import ray
        from ray import exceptions as rex
    except ImportError:
        raise MissingDependency("edgepack zoo device-run needs Ray",
                                hint="pip install -c constraints.txt -e '.[scale]'") from None
    if not address:
        raise ConfigError("edgepack zoo device-run needs --address: the cluster the device hosts joined",
                          hint="on each device host: ray start --address HEAD:PORT --resources "
                               "'{\"device:NAME\": 1}'; then --address HEAD:PORT (or auto)")
    from edgepack.devices import runs
    from edgepack.devices.verdicts import INFRA

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for b in bundles:  # before any device sees one
        runs.check_bundle(b)
        runs.verify_before_push(b)
    results: list[dict] = []
    ray.init(address=address, log_to_driver=False)
    try:
        offered = {k for n in ray.nodes() if n.get("Alive") for k in n.get("Resources", {})}
        missing = [d.name for d in devices if device_resource(d.name) not in offered]
        if missing:
            raise ConfigError(f"no node of the cluster offers {', '.join(device_resource(m) for m in missing)}",
                              hint="start the device's host with ray start --resources '{\"device:NAME\": 1}'")
        task = ray.remote(run_on_device)
        pending = {}
        for d in devices:
            if d.kind == "ios":
                continue
            for b in bundles:
                ref = task.options(num_cpus=0, resources={device_resource(d.name): 1}, max_retries=1,
                                   retry_exceptions=False, name=f"edgepack-device:{d.name}:{b.parent.name}/{b.name}"
                                   ).remote(d, b.name, _tar(b), repeats, warmup)
                pending[ref] = (d, b)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                d, b = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except rex.RayError as e:  # the device's node or worker was lost (a retry failed too)
                    first = (str(e).strip().splitlines() or [""])[0]
                    target, backend = runs.bundle_info(b)
                    rows = [asdict(runs.Result(device=d.name, kind=d.kind, device_class=d.klass, bundle=str(b),
                                               target=target, backend=backend, config="parity", status=INFRA,
                                               reason=f"{type(e).__name__}: {first}"[:500]))]
                rows = [{**r, "bundle": str(b)} for r in rows]  # the driver's path: the history's label
                for r in rows:
                    results.append(r)
                    on_done(r)
    finally:
        ray.shutdown()
    return {"id": uuid.uuid4().hex[:12], "started": started, "build_host": platform.node(), "results": results}


__all__ = ["device_resource", "device_run", "run_on_device"]

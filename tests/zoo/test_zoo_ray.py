"""`edgepack zoo build --executor ray` on a real two-node Ray cluster started by the test on 127.0.0.1 (no
dashboard, its files and token in a temporary folder, stopped at the end): a cell whose profile needs a custom
resource runs on the node that has it (its record names that node); a node killed mid-cell gives INFRA — never
PASS — and no cache entry, or, with a retry and another node, the cell built there."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from zoohelpers import make_zoo
from raycluster import Cluster

pytest.importorskip("ray")


def _records(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["id"]: json.loads(p.read_text()) for p in (out / "cells").glob("*/*.json")}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()


def test_cell_needing_a_custom_resource_runs_on_the_node_that_has_it(tmp_path, cli, cluster):
    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0}, targets='["fast-ort.toml", "special.toml"]',
                        extra_profiles={"special": "\n[resources]\nnum_cpus = 1\ncustom = { zoo_special = 1 }\n"})
    cluster.start("head", head=True)
    cluster.start("second", resources={"zoo_special": 1})
    nodes = cluster.node_ids()
    assert nodes["zoo_special"] != nodes["head"]
    out = tmp_path / "out"
    r = cli("zoo", "build", zoo_file, "--executor", "ray", "--address", cluster.address, "--out", out)
    assert r.exit_code == 0, r.output
    recs = _records(out)
    assert recs["alpha/special"]["verdict"] == "passed"
    assert recs["alpha/special"]["node"] == nodes["zoo_special"]  # only the second node has the resource
    assert recs["alpha/fast-ort"]["node"] in nodes.values()
    assert cli("verify", out / "alpha" / "special").exit_code == 0


def _kill_when_started(cluster: Cluster, name: str, tmpdir: Path, timeout: float = 240) -> bool:
    """Kill node ``name`` as soon as a cell's work folder appears in its workers' TMPDIR (the cell is running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(tmpdir.glob("edgepack-zoo-cell-*")):
            time.sleep(1.0)  # well into the build
            cluster.kill(name)
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_a_node_killed_mid_cell_gives_infra_or_a_retry_elsewhere_and_no_half_cache_entry(tmp_path, cluster):
    from s3server import moto_s3

    from edgepack.zoo import cells, executors, spec
    from edgepack.zoo.cache import Cache

    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0}, targets='["victim.toml"]',
                        extra_profiles={"victim": "\n[resources]\ncustom = { victim = 1 }\n"})
    the_plan = cells.plan(spec.load(zoo_file))
    with moto_s3() as (url, fs):  # before the nodes start: their workers inherit the S3 endpoint
        cluster.start("head", head=True)
        tmp1, tmp2, tmp3 = (tmp_path / f"t{i}" for i in (1, 2, 3))
        for d in (tmp1, tmp2, tmp3):
            d.mkdir()
        cluster.start("victim1", resources={"victim": 1}, tmpdir=tmp1)
        cluster.node_ids()

        # no retry: the lost cell is INFRA, never PASS, and the cache holds no entry for it
        killer = threading.Thread(target=_kill_when_started, args=(cluster, "victim1", tmp1))
        killer.start()
        recs = executors.build(the_plan, str(zoo_file), executor="ray", cache=url, out=tmp_path / "out1",
                               address=cluster.address, retries=0)
        killer.join()
        assert recs[0]["verdict"] == "infra", (recs[0]["reason"], recs[0].get("stage"))
        assert Cache(url).keys() == []

        # one retry: the node dies mid-cell, another node with the resource joins, the retry builds it there
        cluster.start("victim2", resources={"victim": 1}, tmpdir=tmp2)
        cluster.node_ids()

        def kill_then_replace() -> None:
            if _kill_when_started(cluster, "victim2", tmp2):
                cluster.start("victim3", resources={"victim": 1}, tmpdir=tmp3)

        killer = threading.Thread(target=kill_then_replace)
        killer.start()
        recs = executors.build(the_plan, str(zoo_file), executor="ray", cache=url, out=tmp_path / "out2",
                               address=cluster.address, retries=1)
        killer.join()
        assert recs[0]["verdict"] == "passed", (recs[0]["reason"], recs[0].get("stage"))
        nodes = cluster.node_ids()
        assert recs[0]["node"] == nodes["victim"]  # the replacement node (the only live one with the resource)
        assert Cache(url).keys() == [the_plan.cells[0].key]


@pytest.mark.slow
def test_without_an_address_a_local_head_is_started_and_nothing_is_left(tmp_path):
    import os
    import subprocess
    import sys
    import tempfile

    from raycluster import REPO

    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0})
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    before = set(Path(tempfile.gettempdir()).glob("edgepack-ray-*"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "edgepack", "zoo", "build", str(zoo_file), "--executor", "ray",
                        "--out", str(tmp_path / "out")], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=300)  # its own process: Ray's session state stays out of the test process
    assert r.returncode == 0, r.stdout + r.stderr
    rec = _records(tmp_path / "out")["alpha/fast-ort"]
    assert rec["verdict"] == "passed" and len(rec["node"] or "") == 56  # a Ray node id: it ran as a Ray task
    assert set(Path(tempfile.gettempdir()).glob("edgepack-ray-*")) <= before  # its folder (and token) removed
    assert token.exists() == had_token  # the session token went to that folder, not ~/.ray


@pytest.mark.slow
def test_device_run_pins_each_bundle_x_device_to_the_node_that_owns_the_device(tmp_path, cli, cluster):
    zoo_file = make_zoo(tmp_path / "zoo", {"alpha": 0})
    (zoo_file.parent / "devices.toml").write_text('[[device]]\nname = "box1"\nkind = "local"\n')
    zoo_file.write_text('devices = "devices.toml"\n' + zoo_file.read_text())
    out = tmp_path / "out"
    assert cli("zoo", "build", zoo_file, "--out", out).exit_code == 0
    cluster.start("head", head=True)
    cluster.start("box1-host", resources={"device:box1": 1})
    nodes = cluster.node_ids()
    r = cli("zoo", "device-run", zoo_file, "--out", out, "--address", cluster.address, "--repeats", "5")
    assert r.exit_code == 0, r.output
    runs = list((out / "device-runs").glob("*.json"))
    assert len(runs) == 1
    results = json.loads(runs[0].read_text())["results"]
    assert [x["device"] for x in results] == ["box1"] and results[0]["status"] == "PASS"
    assert results[0]["node"] == nodes["device:box1"]  # ran on the device's host, not the head
    assert results[0]["bundle"] == str(out / "alpha" / "fast-ort")
    from edgepack.devices import history

    series = history.series(out / "device-runs" / "history.sqlite")  # appended to the shared history
    assert [k[:2] for k in series] == [("box1", "alpha/fast-ort")]
    # a device no node offers is refused before anything runs
    (zoo_file.parent / "devices.toml").write_text('[[device]]\nname = "nowhere"\nkind = "local"\n')
    r = cli("zoo", "device-run", zoo_file, "--out", out, "--address", cluster.address)
    assert r.exit_code == 2 and "device:nowhere" in r.output

"""Adding a backend = one module, one registry line, one tolerance row per precision, one test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.backends import registry
from edgepack.backends.base import Backend, Runner
from edgepack.config import available_targets, load_profile
from edgepack.parity.tolerances import TOLERANCES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", registry.names())
def test_backend_is_complete(name):
    backend = registry.get(name)
    assert isinstance(backend, Backend) and backend.name == name
    module = registry.BACKENDS[name].split(":")[0]
    assert (REPO / (module.replace(".", "/") + ".py")).is_file() or (REPO / module.replace(".", "/")).is_dir()
    assert backend.requires and backend.extra and backend.accepts and backend.precisions
    for precision in backend.precisions:
        row = TOLERANCES.get((name, precision))
        assert row is not None, f"no tolerance row for {name}/{precision}"
        assert len(row.reason) > 20, f"tolerance row {name}/{precision} needs a reason"
    assert (REPO / "tests" / f"test_{name}.py").is_file(), f"backend {name} has no tests/test_{name}.py"
    assert backend.Options.model_config.get("extra") == "forbid"


def test_no_orphan_tolerance_rows():
    for backend, precision in TOLERANCES:
        assert backend in registry.BACKENDS and precision in registry.get(backend).precisions


def test_every_backend_has_a_shipped_profile():
    used = {load_profile(n).backend for n in available_targets()}
    assert set(registry.names()) <= used


def test_runner_contract_is_small():
    public = {n for n in vars(Runner) if not n.startswith("_")}
    assert {"activate", "infer", "deactivate", "activate_impl", "infer_impl"} <= public

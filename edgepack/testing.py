"""Helpers for a model repository's own test suite: its bundles build and pass (see docs/api.md).

* :func:`assert_bundle_passes` — a bundle folder is intact (every file matches its manifest), its recorded build
  verdict is ``passed``, and (by default) re-checking it on this host still passes.
* the ``edgepack_build`` pytest fixture — :func:`edgepack.build` with ``out`` in the test's own temporary folder.

The fixture is a pytest plugin (the ``pytest11`` entry point ``edgepack``, active once edgepack is installed); a
project can also name it explicitly with ``pytest_plugins = ["edgepack.testing"]`` in its root ``conftest.py``.
Importing this module imports pytest only when the fixture is defined, and no ML framework.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _rows(report: Any) -> str:
    bad = [c for c in getattr(report, "checks", []) if not c.passed]
    return "; ".join(f"{c.name}: {c.state} (measured {c.measured}, limit {c.op} {c.limit})" for c in bad)


def assert_bundle_passes(bundle: str | os.PathLike, *, recheck: bool = True) -> Any:
    """Fail (``AssertionError``, naming what is wrong) unless ``bundle`` verifies against its manifest, its build
    verdict was ``passed`` and, with ``recheck``, ``edgepack check`` on this host passes too (a bundle whose runtime
    cannot run here is accepted when its parity is deferred to the device and every other row passes).
    Returns the re-check's ``TargetReport`` (None without ``recheck``)."""
    from edgepack import api
    from edgepack import bundle as bundles

    path = Path(bundle)
    if not bundles.is_bundle(path):
        raise AssertionError(f"{path} is not an edgepack bundle (no manifest.json)")
    integrity = api.verify(path, allow_failed=True)
    if not integrity:
        raise AssertionError(f"{path}: the bundle does not match its manifest: {'; '.join(integrity.problems)}")
    manifest = bundles.read_manifest(path)
    if manifest.verdict != "passed":
        failed = ", ".join(c.name for c in manifest.checks if not c.passed)
        raise AssertionError(f"{path}: the build's verdict is {manifest.verdict}" + (f" ({failed})" if failed else ""))
    if not recheck:
        return None
    report = api.check(path)
    if report.status != "passed":
        raise AssertionError(f"{path}: re-checked on this host: {report.status.upper()}: {_rows(report)}")
    return report


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest; the fixture needs it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def edgepack_build(tmp_path: Path):
        """``edgepack.build`` with bundles written under the test's temporary folder (``out`` may still be given).
        Returns the :class:`~edgepack.api.BuildResult`."""
        from edgepack import api

        def build(model: Any, targets: Any, **kwargs: Any):
            kwargs.setdefault("out", tmp_path / "dist")
            return api.build(model, targets, **kwargs)

        return build


__all__ = ["assert_bundle_passes", "edgepack_build"]

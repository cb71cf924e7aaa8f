"""Adding a backend = one folder of the shape below, one registry line (or an entry point), one tolerance row per
precision with a reason, a device loader, a test module and a shipped profile. This test enforces all of it,
for built-in backends and for plug-ins alike."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgepack.artifact import RuntimeSpec
from edgepack.backends import registry
from edgepack.backends.base import Backend, Runner
from edgepack.config import available_targets, load_profile
from edgepack.parity.tolerances import TOLERANCES

REPO = Path(__file__).resolve().parents[2]
FILES = ("__init__.py", "convert.py", "runner.py", "device.py")
DEVICE_ALLOWED = set(sys.stdlib_module_names) | {"numpy", "__future__", "onnxruntime", "openvino", "ai_edge_litert", "PIL",
                                                   "tflite_runtime", "coremltools", "tensorrt", "executorch"}
# executorch's Python bindings take and return torch tensors (torch is a dependency of the executorch wheel itself)
DEVICE_ALSO = {"executorch": {"torch"}}


def audit(name: str, tests_dir: Path, targets_dir: Path) -> list[str]:
    """Everything a backend registered as ``name`` lacks (an empty list when it is complete)."""
    problems: list[str] = []
    backend = registry.get(name)
    if not isinstance(backend, Backend) or backend.name != name:
        return [f"{name}: not a Backend named {name}"]
    folder = backend.package_dir()
    problems += [f"{name}: missing {folder.name}/{f}" for f in FILES if not (folder / f).is_file()]
    if not (backend.requires and backend.extra and backend.accepts and backend.precisions):
        problems.append(f"{name}: requires/extra/accepts/precisions must all be declared")
    if backend.Options.model_config.get("extra") != "forbid":
        problems.append(f"{name}: Options must refuse unknown keys")
    if not (issubclass(backend.Runtime, RuntimeSpec) and backend.Runtime is not RuntimeSpec):
        problems.append(f"{name}: declares no RuntimeSpec")
    for precision in sorted(backend.precisions):
        row = TOLERANCES.get((name, precision))
        if row is None or len(row.reason) < 20:
            problems.append(f"{name}: no tolerance row with a reason for {precision}")
    device = folder / "device.py"
    if device.is_file():
        tree = ast.parse(device.read_text())
        if not any(isinstance(n, ast.FunctionDef) and n.name == "load" for n in tree.body):
            problems.append(f"{name}: device.py defines no load(bundle, artifact, runtime, threads)")
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or "."] if isinstance(node, ast.ImportFrom) and not node.level else \
                ["(relative)"] if isinstance(node, ast.ImportFrom) else []
            problems += [f"{name}: device.py imports {m}" for m in mods if m.split(".")[0] not in DEVICE_ALLOWED | DEVICE_ALSO.get(name, set())]
    if not (tests_dir / f"test_{name}.py").is_file():
        problems.append(f"{name}: no tests/backends/test_{name}.py")
    used = set()
    for path in available_targets(targets_dir).values():
        try:
            used.add(load_profile(str(path)).backend)
        except Exception:  # noqa: BLE001 - another profile's problem
            pass
    if name not in used:
        problems.append(f"{name}: no shipped profile in {targets_dir}")
    return problems


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_builtin_backend_is_complete(name):
    assert audit(name, REPO / "tests" / "backends", REPO / "targets") == []


def test_no_orphan_tolerance_rows():
    for backend, precision in TOLERANCES:
        if backend.startswith("fake_"):
            continue
        assert backend in registry.BACKENDS and precision in registry.get(backend).precisions


def test_runner_contract_is_small():
    public = {n for n in vars(Runner) if not n.startswith("_")}
    assert {"activate", "infer", "infer_for_latency", "deactivate", "activate_impl", "infer_impl"} <= public


def test_audit_catches_an_incomplete_backend(tmp_path, monkeypatch):
    pkg = tmp_path / "half_backend"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from edgepack.backends.base import Backend

        class HalfBackend(Backend):
            name = "half"
            requires = ("numpy",)
            extra = "test"
            accepts = frozenset({"fake"})
            precisions = frozenset({"fp32", "int8"})

            def convert(self, *a):
                raise NotImplementedError

            def runner(self, *a, **k):
                raise NotImplementedError
    '''))
    (pkg / "device.py").write_text("import edgepack.core\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register("half", "half_backend:HalfBackend")
    try:
        problems = audit("half", tmp_path, tmp_path)
    finally:
        registry._REGISTERED.pop("half")
    text = "\n".join(problems)
    for expected in ("missing half_backend/convert.py", "missing half_backend/runner.py", "declares no RuntimeSpec",
                     "no tolerance row with a reason for fp32", "no tolerance row with a reason for int8",
                     "device.py defines no load", "device.py imports edgepack.core", "no tests/backends/test_half.py",
                     "no shipped profile"):
        assert expected in text, f"{expected!r} not in:\n{text}"


PLUGIN_INIT = '''
"""A third-party backend, registered through the edgepack.backends entry-point group."""
from pathlib import Path
from typing import ClassVar

import fakes  # noqa: F401 - the framework-free source kind used by the tests
from edgepack.artifact import RuntimeSpec
from edgepack.backends.base import Backend
from edgepack.parity import tolerances

tolerances.TOLERANCES[("plugged", "fp32")] = tolerances.Tolerance(
    1e-6, 0.99999, 0.99, None, "identity arithmetic: the plug-in computes what the reference computes")


class PluggedRuntime(RuntimeSpec):
    weights: str = "model.npz"


class PluggedBackend(Backend):
    name = "plugged"
    requires = ("numpy",)
    extra = "test"
    accepts = frozenset({"fake"})
    precisions = frozenset({"fp32"})
    Runtime: ClassVar[type[RuntimeSpec]] = PluggedRuntime

    def convert(self, source, profile, options, data, out_dir):
        from edgepack_plugged.convert import convert
        return convert(source, profile, options, data, out_dir)

    def runner(self, artifact, bundle_dir, threads=1):
        from edgepack_plugged.runner import PluggedRunner
        return PluggedRunner(artifact, bundle_dir, threads)
'''


def test_a_plugin_package_registers_builds_and_passes_the_same_checks(tmp_path, fake_model, monkeypatch):
    src = tmp_path / "plugin-src"
    pkg = src / "edgepack_plugged"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_INIT)
    fakes_dir = REPO / "tests" / "fakes" / "identity"
    (pkg / "convert.py").write_text((fakes_dir / "convert.py").read_text())
    (pkg / "device.py").write_text((fakes_dir / "device.py").read_text())
    (pkg / "runner.py").write_text("from edgepack.backends.base import DeviceLoaderRunner\n\n\n"
                                   "class PluggedRunner(DeviceLoaderRunner):\n"
                                   "    device_module = 'edgepack_plugged.device'\n")
    (pkg / "tests").mkdir()
    (pkg / "tests" / "test_plugged.py").write_text("def test_nothing_here():\n    pass\n")
    (pkg / "targets").mkdir()
    (pkg / "targets" / "plugged-fp32.toml").write_text('backend = "plugged"\nprecision = "fp32"\ncalibration = "digits"\n')
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "edgepack-plugged"
        version = "0.0.1"
        [project.entry-points."edgepack.backends"]
        plugged = "edgepack_plugged:PluggedBackend"
        [tool.setuptools.packages.find]
        include = ["edgepack_plugged*"]
        [tool.setuptools.package-data]
        edgepack_plugged = ["targets/*.toml", "tests/*.py"]
    '''))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(src)], check=True, capture_output=True)
    env = {"PYTHONPATH": f"{site}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "COLUMNS": "250"}
    doctor = subprocess.run([sys.executable, "-m", "edgepack", "doctor"], capture_output=True, text=True, env=env,
                            cwd=REPO)
    assert doctor.returncode == 0 and "plugged (plug-in edgepack_plugged:PluggedBackend)" in doctor.stdout
    profile = site / "edgepack_plugged" / "targets" / "plugged-fp32.toml"
    build = subprocess.run([sys.executable, "-m", "edgepack", "build", str(fake_model), "-t", str(profile),
                            "--out", str(tmp_path / "dist")], capture_output=True, text=True, env=env, cwd=REPO)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "dist" / "linear" / "plugged-fp32" / "runner" / "device.py").is_file()
    monkeypatch.syspath_prepend(str(site))
    assert registry.plugins()["plugged"] == "edgepack_plugged:PluggedBackend"
    assert audit("plugged", site / "edgepack_plugged" / "tests", site / "edgepack_plugged" / "targets") == []

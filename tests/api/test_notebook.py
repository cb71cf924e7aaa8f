"""examples/api_notebook.ipynb runs top to bottom in a real Jupyter kernel (this venv's Python, registered in a
temporary folder) and shows a trained in-memory module built into a passing bundle."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _outputs(cell) -> tuple[str, str]:
    """A code cell's printed text and its HTML display."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs
                   if o.output_type in ("execute_result", "display_data"))
    return text, html


@pytest.mark.slow  # a kernel, torch, 8 epochs of training and a build (~40 s)
def test_the_example_notebook_trains_and_builds_in_a_real_kernel(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "data" / "kernels" / "edgepack-test"
    spec.mkdir(parents=True)
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "edgepack test", "language": "python", "env": {"PYTHONPATH": python_path}}))
    for var, sub in (("JUPYTER_PATH", "data"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(var, str(jupyter / sub))  # nothing is written outside the test's folder
    monkeypatch.setenv("EDGEPACK_EXAMPLE_OUT", str(tmp_path / "dist"))
    nb = nbformat.read(REPO / "examples" / "api_notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="edgepack-test", timeout=600,
                            resources={"metadata": {"path": str(REPO)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    trained, _ = _outputs(cells[1])
    accuracy = float(re.search(r"validation accuracy: ([0-9.]+)", trained).group(1))
    assert accuracy > 0.8, trained
    _, table = _outputs(cells[2])
    assert "linux-ort-fp32" in table and "PASSED" in table and "parity.min_top1_agreement[output]" in table
    assert "<script" not in table
    text, _ = _outputs(cells[3])
    assert "verdict: passed" in text and "serialized as: pt2 (torch.export)" in text
    assert "bundle: linux-ort-fp32 passes" in text
    assert (tmp_path / "dist" / "digits-notebook" / "linux-ort-fp32" / "manifest.json").is_file()
    assert not (jupyter / "runtime").exists() or all(p.is_relative_to(jupyter) for p in (jupyter / "runtime").iterdir())

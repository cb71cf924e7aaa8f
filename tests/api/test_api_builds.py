"""edgepack.build on in-memory models gives the same verdicts, row by row, as the CLI on the same model saved to
disk with the same data: an nn.Module + a DataLoader, an onnx.ModelProto + a dict of arrays, and (in its own
process: TensorFlow and PyTorch never share the test process) a keras.Model + a tf.data.Dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from apimodels import digits

import edgepack
from edgepack.isolation import Workers
from edgepack.report import BuildReport
from edgepack.testing import assert_bundle_passes

HERE = Path(__file__).resolve().parent


def _rows(reports) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    return {r.target: (r.status, [(c.name, c.state) for c in r.checks]) for r in reports}


def _cli(out: Path, model: str, targets: list[str], *args: str) -> tuple[int, BuildReport]:
    """`edgepack build` in this process (the caller's warm workers serve both builds: one framework start-up)."""
    from typer.testing import CliRunner

    from edgepack.cli import app

    res = CliRunner().invoke(app, ["build", model, "--out", str(out), *args, *(a for t in targets for a in ("-t", t))])
    reports = sorted(out.glob("*/build-report.json"))
    assert reports, res.output[-2000:]
    return res.exit_code, BuildReport.model_validate_json(reports[0].read_text())


def test_torch_module_and_dataloader_match_the_cli_on_the_saved_module(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    from apimodels import make_net

    x, y = digits()
    net = make_net()
    net.train()  # the export runs in eval mode and hands the module back as it was
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=64)
    targets = ["linux-ort-fp32"]
    torch.save(net.state_dict(), tmp_path / "net.pt")
    np.savez(tmp_path / "data.npz", input=x, labels=y)
    with Workers():
        result = edgepack.build(net, targets, example_inputs=torch.zeros(1, 1, 32, 32), calibration=loader,
                                out=tmp_path / "api", name="net")
        assert net.training
        code, cli = _cli(tmp_path / "cli", f"{HERE / 'apimodels.py'}:make_net", targets, "--weights",
                         str(tmp_path / "net.pt"), "--input", "input=?x1x32x32", "--calibration",
                         str(tmp_path / "data.npz"), "--name", "net")
    assert _rows(result) == _rows(cli.targets) and result.exit_code == code
    r = result["linux-ort-fp32"]
    assert r.calibration["holdout_samples"] == len(x) // 2 and r.calibration["labelled"]
    assert any(name.startswith("parity.min_top1_agreement") for name, _ in _rows(result)["linux-ort-fp32"][1])
    manifest = json.loads((result.bundles["linux-ort-fp32"] / "manifest.json").read_text())
    assert manifest["source"]["in_memory"]["serialized_as"] == "pt2 (torch.export)"
    assert manifest["source"]["trusted_code"] == [] and manifest["opt_ins"][0].startswith("in-memory model (")
    assert not list((tmp_path / "api" / "net").glob(".staging*"))  # the serialized module is gone


def test_onnx_modelproto_and_a_dict_of_arrays_match_the_cli_on_the_saved_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    from tinymodels import make_tiny_onnx

    path = make_tiny_onnx(tmp_path / "tiny.onnx", dynamic_batch=True)
    model = onnx.load(str(path))
    x, y = digits()
    targets = ["linux-ort-fp32"]
    np.savez(tmp_path / "data.npz", input=x, labels=y)
    with Workers():
        the_plan = edgepack.plan(model, targets, name="tiny", out=tmp_path / "api")
        lines: list[str] = []
        result = edgepack.build(model, targets, calibration={"input": x, "labels": y}, out=tmp_path / "api",
                                name="tiny", progress=lines.append)
        code, cli = _cli(tmp_path / "cli", str(path), targets, "--calibration", str(tmp_path / "data.npz"))
    assert _rows(result) == _rows(cli.targets) and result.exit_code == code
    assert [r.status for r in result] == [r.status for r in cli.targets]
    assert set(result.bundles) == set(targets)
    assert [(r.target, r.action) for r in the_plan.rows] == [(t, "build") for t in targets]
    assert the_plan.source["in_memory"]["serialized_as"].startswith("onnx")
    assert any(line.startswith("linux-ort-fp32: converting") for line in lines)
    for target, report in result.targets.items():
        if report.status == "passed":
            assert assert_bundle_passes(result.bundles[target]).status == "passed"
    manifest = json.loads((result.bundles["linux-ort-fp32"] / "manifest.json").read_text())
    assert manifest["source"]["in_memory"]["object"] == "onnx.onnx_ml_pb2.ModelProto"
    assert manifest["source"]["sha256"] == json.loads(
        (tmp_path / "cli" / "tiny" / "linux-ort-fp32" / "manifest.json").read_text())["source"]["sha256"]


@pytest.mark.slow  # TensorFlow start-up, Keras → ONNX bridge, twice (~90 s on the 2-core CI box)
def test_keras_model_and_tf_dataset_match_the_cli_on_the_saved_file(tmp_path):
    pytest.importorskip("tensorflow")
    res = subprocess.run([sys.executable, str(HERE / "keras_case.py"), str(tmp_path), "linux-ort-fp32"],
                         capture_output=True, text=True, cwd=HERE)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["api"] == got["cli"] and got["api_exit"] == got["cli_exit"]
    assert got["api"]["linux-ort-fp32"][0] == "passed" and got["samples"] == 898
    assert got["in_memory"]["serialized_as"] == "keras (model.save)"
    assert got["opt_ins"][0].startswith("in-memory model (keras.")

"""`edgepack plan` takes every option of `build` that changes the plan (shared definitions), and names every
undeclared dynamic axis in one hint."""

from __future__ import annotations

import json

import click
import pytest

from edgepack.cli import app


def _params(name: str) -> dict[str, click.Parameter]:
    import typer.main

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_plan_takes_every_option_of_build_that_changes_the_plan():
    build, plan = _params("build"), _params("plan")
    # what only a build does (write reports, archives, judge measurements) is all plan leaves out
    assert set(build) - set(plan) == {"archive", "junit", "report", "allow_metric", "judge"}
    for name in set(build) & set(plan):  # one definition each: same flags, same help
        assert build[name].opts == plan[name].opts and build[name].help == plan[name].help, name
    inspect = _params("inspect")  # inspect loads the model as build does: the same definitions
    assert set(inspect) <= set(build)
    for name in inspect:
        assert build[name].opts == inspect[name].opts and build[name].help == inspect[name].help, name


def _dyn_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_plan_reads_the_model_config_output_declarations_data_and_destination(tiny_onnx, tmp_path, cli):
    cfg = tmp_path / "model.toml"
    cfg.write_text('[outputs]\nlogits = "scores"\n[budgets]\nsize_mb = 5\n')
    res = cli("plan", tiny_onnx, "-t", "linux-ort-fp32", "--model-config", cfg, "-c", "digits",
              "--out", tmp_path / "dist", "--name", "digits-net", "--budget", "latency_p50_ms=20", "--json", "-")
    assert res.exit_code == 0, res.stderr
    [row] = json.loads(res.stdout)["targets"]
    assert row["action"] == "build" and row["bundle"] == str(tmp_path / "dist" / "digits-net" / "linux-ort-fp32")

    bad = cli("plan", tiny_onnx, "-t", "linux-ort-fp32", "--output", "boxes=regression")
    assert bad.exit_code == 2 and "output 'boxes' is declared, but the model's outputs are logits" in bad.stderr
    cfg.write_text('[budgets]\nsize_mbb = 5\n')
    bad = cli("plan", tiny_onnx, "-t", "linux-ort-fp32", "--model-config", cfg)
    assert bad.exit_code == 2 and "unknown budget 'size_mbb'" in bad.stderr and "size_mb" in bad.stderr
    bad = cli("plan", tiny_onnx, "-t", "linux-ort-fp32", "-c", tmp_path / "missing.npz")
    assert bad.exit_code == 2 and "missing.npz" in bad.stderr
    (tmp_path / "dist" / "tiny" / "linux-ort-fp32").mkdir(parents=True)  # a non-bundle where the bundle goes
    bad = cli("plan", tiny_onnx, "-t", "linux-ort-fp32", "--out", tmp_path / "dist")
    assert bad.exit_code == 2 and "is not an edgepack bundle" in bad.stderr


def test_every_undeclared_dynamic_axis_in_one_hint(tmp_path, cli):
    model = _dyn_onnx(tmp_path / "dyn.onnx")
    res = cli("plan", model, "-t", "jetson-orin-jp6-fp16")
    hint = " ".join(res.stderr.split())
    assert res.exit_code == 2
    assert "--input 'x=...,dims=2:MIN/OPT/MAX,dims=3:MIN/OPT/MAX'" in hint
    res = cli("plan", model, "-t", "jetson-orin-jp6-fp16", "--input", "x=?x3x?x?,dims=2:32/48/64,dims=3:32/48/64")
    assert res.exit_code == 0, res.stderr


def test_concrete_shape_names_every_dynamic_axis():
    from edgepack.errors import ConfigError
    from edgepack.signature import TensorSpec

    with pytest.raises(ConfigError) as e:
        TensorSpec("x", (None, 3, None, None)).concrete_shape()
    assert "dimensions 2, 3" in e.value.message
    assert "dims=2:MIN/OPT/MAX,dims=3:MIN/OPT/MAX'" in e.value.hint
    assert TensorSpec("x", (None, 3, None, 8), dims=((2, 4, 6, 8),)).concrete_shape(batch=2) == (2, 3, 6, 8)

"""INT8 that does not pay: a bundle both larger and slower than the float model (same runtime, this host) fails
the row int8_pays on the profiles whose latency this host judges (linux-*, intel-*), with why; elsewhere a note."""

from __future__ import annotations

import json

import pytest

from edgepack.budgets import SLOWER, int8_payoff
from edgepack.config import Budgets

DETAILS = {"float_reference": {"size_bytes": 1000, "what": "the fp32 .ort of the same model"},
           "accuracy_search": {"cost": {"latency_vs_float": 1.8, "int8_compute_share": 1.0}},
           "qdq_nodes": 20, "graph_nodes": 26, "compute_ops": 3, "quantized_compute_ops": 3,
           "float_compute_ops": []}


def test_larger_and_slower_fails_on_host_judged_profiles_with_why():
    rows, notes = int8_payoff(Budgets(), "linux-x86_64", DETAILS, 1300)
    [row] = rows
    assert row.name == "int8_pays" and not row.passed and not notes
    assert "1.30× the size of the fp32 .ort" in row.note and "latency 1.80× float" in row.note
    assert "20 Q/DQ nodes in a graph of 26 nodes" in row.note and "3/3 compute ops quantized" in row.note
    rows, notes = int8_payoff(Budgets(), "intel-x86", DETAILS, 1300)
    assert not rows[0].passed


def test_elsewhere_a_note_and_the_profile_decides():
    rows, notes = int8_payoff(Budgets(), "android-arm64", DETAILS, 1300)
    assert rows == [] and notes[0].startswith("INT8 does not pay here")
    rows, _ = int8_payoff(Budgets(int8_must_pay=True), "android-arm64", DETAILS, 1300)
    assert not rows[0].passed
    rows, notes = int8_payoff(Budgets(int8_must_pay=False), "linux-x86_64", DETAILS, 1300)
    assert rows == [] and notes


@pytest.mark.parametrize("size,lat,pays", [(900, 1.8, True), (1300, 0.9, True), (1300, SLOWER, True),
                                           (1300, SLOWER + 0.01, False), (1000, 5.0, True)])
def test_it_pays_when_smaller_or_not_slower(size, lat, pays):
    d = {**DETAILS, "accuracy_search": {"cost": {"latency_vs_float": lat}}}
    [row] = int8_payoff(Budgets(), "linux-x86_64", d, size)[0]
    assert row.passed is pays


def test_no_row_without_both_figures():
    assert int8_payoff(Budgets(), "linux-x86_64", {"float_reference": {"size_bytes": 10}}, 20) == ([], [])
    assert int8_payoff(Budgets(), "linux-x86_64", {"accuracy_search": {"cost": {"latency_vs_float": 2}}}, 20) \
        == ([], [])


@pytest.mark.slow
def test_a_real_linux_ort_int8_build_reports_the_row_from_its_own_figures(tmp_path, cli):
    """The float reference is the fp32 .ort of the same model; the verdict follows the measured figures."""
    pytest.importorskip("onnxruntime")
    from tinymodels import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    res = cli("build", str(model), "-t", "linux-ort-int8", "-c", "digits", "-o", str(tmp_path / "d"))
    rep = json.loads((tmp_path / "d" / "tiny" / "linux-ort-int8" / "report.json").read_text())
    ref, cost = rep["artifact"]["float_reference"], rep["artifact"]["accuracy_search"]["cost"]
    assert ref["what"] == "the fp32 .ort of the same model" and ref["size_bytes"] > 0
    [row] = [c for c in rep["checks"] if c["name"] == "int8_pays"]
    pays = rep["size_bytes"] <= ref["size_bytes"] or cost["latency_vs_float"] <= SLOWER
    assert row["passed"] is pays and (res.exit_code == 1) is (not pays or rep["status"] == "failed")
    assert rep["size_bytes"] > ref["size_bytes"]  # 20 Q/DQ nodes on 3 small layers: bigger than fp32
    if not pays:
        assert "Q/DQ nodes" in row["note"] and "larger AND slower" in row["note"]

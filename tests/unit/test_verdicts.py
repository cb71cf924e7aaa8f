"""Verdict states (issue 19): INCONCLUSIVE rate budgets, "not applied" budget rows, kind inference evidence; the
rows as the report, JUnit and the device harness show them. Everything here is the shared numpy core (host and
bundle runner call the same ``parity``) plus the renderers."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgepack.core.checks import Check, verdict, worst
from edgepack.core.kinds import decide
from edgepack.core.limits import Limits
from edgepack.core.metrics import parity
from edgepack.core.stats import drop_samples_needed, samples_needed, wilson
from edgepack.parity.tolerances import limits

INT8 = limits("ort_mobile", "int8")  # min_top1_agreement 0.98, max_accuracy_drop 0.01, judge "evidence"


def _flip(logits: np.ndarray, k: int) -> np.ndarray:
    """``logits`` with the top-1 and top-2 values swapped in the ``k`` samples whose margin between them is the
    smallest: k decisions flip while every value stays one the reference had (a small relative error)."""
    got = logits.copy()
    order = np.argsort(logits, axis=1)
    margin = np.take_along_axis(logits, order[:, -1:], 1)[:, 0] - np.take_along_axis(logits, order[:, -2:-1], 1)[:, 0]
    for i in np.argsort(margin)[:k]:
        a, b = order[i, -1], order[i, -2]
        got[i, a], got[i, b] = logits[i, b], logits[i, a]
    return got


def test_98_of_100_on_a_098_budget_is_inconclusive_with_the_samples_needed_and_passes_on_point():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 10)) * 3
    got = _flip(ref, 2)  # 98/100 agree
    out = parity({"y": ref}, {"y": got}, Limits(min_top1_agreement=0.98), kinds={"y": "scores"})
    [row] = [c for c in out.checks if c.name == "parity.min_top1_agreement[y]"]
    assert out.metrics["y"]["top1_agreement"] == pytest.approx(0.98)
    assert row.inconclusive and not row.passed and row.state == "inconclusive"
    assert row.samples_needed == samples_needed(0.98) == 189
    assert "needs ≥ 189 samples" in row.note and f"{wilson(100, 100)[0]:.4f}" in row.note
    assert out.verdict == "inconclusive" and not out and out.to_dict()["verdict"] == "inconclusive"
    point = parity({"y": ref}, {"y": got}, Limits(min_top1_agreement=0.98, judge="point"), kinds={"y": "scores"})
    assert point and point.verdict == "passed" and any("≥ 189 samples" in w for w in point.warnings)
    # enough samples: the same 98 % is a plain PASS; a rate below the budget is a FAIL, never INCONCLUSIVE
    big = np.concatenate([ref, rng.standard_normal((100, 10)) * 3])
    assert parity({"y": big}, {"y": _flip(big, 4)}, Limits(min_top1_agreement=0.98), kinds={"y": "scores"}).verdict \
        == "passed"
    low = parity({"y": ref}, {"y": _flip(ref, 5)}, Limits(min_top1_agreement=0.98), kinds={"y": "scores"})
    assert low.verdict == "failed" and not low.checks[-1].inconclusive
    # "bound": too few samples is INCONCLUSIVE too (no result could pass), enough samples judged on the bound
    bound = parity({"y": ref}, {"y": ref}, Limits(min_top1_agreement=0.98, judge="bound"), kinds={"y": "scores"})
    assert bound.verdict == "inconclusive"


def test_accuracy_drop_budget_needs_enough_labelled_samples():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((80, 5)) * 3
    labels = ref.argmax(1)
    assert drop_samples_needed(0.01) == 100 and drop_samples_needed(0.005) == 200
    out = parity({"y": ref}, {"y": ref}, Limits(max_accuracy_drop=0.01), labels, {"y": "scores"})
    [row] = [c for c in out.checks if "accuracy_drop" in c.name]
    assert row.inconclusive and row.samples_needed == 100 and out.verdict == "inconclusive"
    assert parity({"y": ref}, {"y": ref}, Limits(max_accuracy_drop=0.01, judge="point"), labels,
                  {"y": "scores"}).verdict == "passed"


def test_precedence_failed_over_inconclusive_over_passed():
    ok = Check("a", 1, 1, True, ">=")
    unsure = Check("b", 0.98, 1.0, False, ">=", inconclusive=True, samples_needed=189)
    bad = Check("c", 0.98, 0.5, False, ">=")
    info = Check("d", 0.98, None, True, ">=", applied=False)
    assert verdict([ok, info]) == "passed" and verdict([ok, unsure, info]) == "inconclusive"
    assert verdict([unsure, bad, ok]) == "failed" and worst(["passed", "inconclusive"]) == "inconclusive"
    assert worst(["inconclusive", "failed", "passed"]) == "failed" and worst([]) == "passed"
    assert [c.state for c in (ok, unsure, bad, info)] == ["passed", "inconclusive", "failed", "not applied"]


def test_old_manifests_and_reports_still_load():
    old_row = {"name": "parity.min_top1_agreement[y]", "limit": 0.98, "measured": 0.99, "passed": True, "op": ">=",
               "note": ""}
    c = Check.from_dict(old_row)
    assert c.state == "passed" and c.applied and not c.inconclusive and c.samples_needed is None
    assert Check.from_dict(c.to_dict()) == c
    old_limits = {"min_top1_agreement": 0.98, "judge": "point"}  # every manifest before "evidence" existed
    assert Limits.from_dict(old_limits).judge == "point" and Limits().judge == "evidence"
    from edgepack.report import TargetReport

    rep = TargetReport.model_validate({"target": "t", "status": "passed", "checks": [old_row],
                                       "parity": {"passed": True}})
    assert rep.checks[0].state == "passed" and rep.parity.verdict is None


def test_unlabelled_logits_that_flip_5_percent_of_decisions_are_caught_and_correct_ones_pass_20_seeds():
    """The issue's classifier: an unlabelled (N, 7) output named `logits` kept a small relative error (judged as
    `other`: PASS) while 5 % of its top-1 decisions flipped. Now its name makes it class scores."""
    caught, alarms = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref = {"logits": rng.standard_normal((400, 7)) * 2}
        kinds = {n: k for n, (k, _) in decide(ref).items()}
        assert kinds == {"logits": "scores"}
        flipped = _flip(ref["logits"], 20)  # 5 % of 400
        out = parity(ref, {"logits": flipped}, INT8, None, kinds)
        rel = out.metrics["logits"]["rel_error_p99"]
        assert rel < 0.05, rel  # the old verdict (`other`, p99 |Δ|/range ≤ 0.05) would have passed it
        caught.append(out.verdict == "failed" and "parity.min_top1_agreement[logits]" in
                      [c.name for c in out.checks if c.state == "failed"])
        noisy = ref["logits"] + rng.normal(0, 0.002, ref["logits"].shape)  # a correct int8-like bundle
        alarms.append(parity(ref, {"logits": noisy}, INT8, None, kinds).verdict != "passed")
    assert all(caught) and not any(alarms)


def test_unapplied_budgets_are_rows_with_the_fix_and_top1_as_information():
    rng = np.random.default_rng(2)
    ref = {"out": rng.standard_normal((300, 7)), "emb": rng.standard_normal((300, 3))}
    got = {"out": _flip(ref["out"], 30), "emb": ref["emb"]}
    labels = rng.integers(0, 10, 300)  # 10 classes: no output matches them
    out = parity(ref, got, INT8, None, None)
    assert out.kinds["out"][0] == "other"
    rows = {c.name: c for c in out.checks}
    top1 = rows["parity.min_top1_agreement[out]"]
    assert top1.state == "not applied" and top1.passed and top1.measured == pytest.approx(0.9)
    assert "not applied: output out is 'other'" in top1.note and "--output out=scores" in top1.note
    assert "top-1 agreement 0.9000 on 300 samples shown as information" in top1.note
    assert "parity.max_accuracy_drop[out]" not in rows  # no labels: nothing to apply it with
    assert out.verdict == "passed"  # a not-applied row neither passes nor fails the build
    labelled = {c.name: c for c in parity(ref, got, INT8, labels, None).checks}
    assert labelled["parity.max_accuracy_drop[out]"].state == "not applied"
    # a class-score output without labels: the accuracy budget says why it is not applied
    scores = parity({"logits": ref["out"]}, {"logits": ref["out"]}, INT8).checks
    drop = next(c for c in scores if c.name == "parity.max_accuracy_drop[logits]")
    assert drop.state == "not applied" and "no labels" in drop.note


def test_onet_regression_heads_are_never_judged_by_argmax():
    """ONet: prob (N, 2) softmax beside bbox (N, 4) and landmark (N, 10), all from a final Gemm; labels 0/1."""
    rng = np.random.default_rng(3)
    logit = rng.standard_normal((300, 2)) * 3
    prob = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
    ref = {"prob": prob, "bbox": rng.uniform(-0.2, 0.2, (300, 4)), "landmark": rng.uniform(0, 1, (300, 10))}
    labels = prob.argmax(1)
    hints = {"prob": "Softmax", "bbox": "Gemm", "landmark": "Gemm"}
    kinds = decide(ref, labels, None, hints)
    assert kinds["prob"][0] == "scores"
    assert kinds["bbox"][0] == "regression" and kinds["landmark"][0] == "regression"
    assert "'bbox'" in kinds["bbox"][1] and "Gemm" in kinds["bbox"][1]
    for other_names in ({"reg": ref["bbox"]}, {"conv6-2": ref["bbox"], "cls_prob": prob}):
        assert decide(other_names, None, None, {"reg": "Gemm"}).get("reg", ("regression",))[0] == "regression"
    # int8-sized noise moves the argmax of many box rows while their values barely change: no agreement row and
    # no not-applied row on a regression head, and the bundle passes
    got = dict(ref, bbox=ref["bbox"] + rng.normal(0, 4e-3, ref["bbox"].shape))
    assert np.mean(got["bbox"].argmax(1) != ref["bbox"].argmax(1)) > 0.02
    out = parity(ref, got, INT8, labels, {n: k for n, (k, _) in kinds.items()})
    for c in out.checks:
        assert not (("bbox" in c.name or "landmark" in c.name) and "agreement" in c.name), c
    assert "top1_agreement" not in out.metrics["bbox"] and out.verdict == "passed"


def test_kind_inference_says_what_evidence_it_used():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6))
    assert decide({"logits": x}, None, None, {"logits": "Gemm"})["logits"] == (
        "scores", "its name ('logits') reads as class scores over 6 columns, fed by a final Gemm")
    assert decide({"y": x}, None, None, {"y": "LogSoftmax"})["y"][0] == "scores"
    assert decide({"y": x}, None, None, {"y": "Gemm"})["y"] == (
        "other", "not declared and not recognisably class scores, fed by a final Gemm: judged like a regression head")
    sig = 1 / (1 + np.exp(-x))
    assert decide({"class_prob": sig}, None, None, {"class_prob": "Sigmoid"})["class_prob"][0] == "probabilities"
    assert decide({"logits": x}, None, None, {"logits": "Conv"})["logits"][0] == "other"  # a named map, not a head
    assert decide({"logits": x[:, :1]})["logits"][0] == "other"  # one column: nothing to argmax over
    assert decide({"scores": rng.standard_normal((50, 3, 4))})["scores"][0] == "other"  # 3-D: declare it


def _report(status: str, checks: list[Check]):
    from edgepack.report import TargetReport

    return TargetReport(target="t", status=status, backend="ort_mobile", precision="int8", checks=checks)


def test_report_table_json_and_junit_show_inconclusive_and_not_applied(tmp_path):
    from rich.console import Console

    from edgepack.report import exit_code, render, render_summary, write_json, write_junit

    unsure = Check("parity.min_top1_agreement[y]", 0.98, 1.0, False, ">=", "95% interval …; INCONCLUSIVE: 100 "
                   "samples cannot support 0.98: needs ≥ 189 samples", inconclusive=True, samples_needed=189)
    info = Check("parity.min_top1_agreement[out]", 0.98, 0.9, True, ">=", "not applied: output out is 'other'; "
                 "if it is class scores: --output out=scores", applied=False)
    ok = Check("size_mb", 15, 1.0, True, "<=")
    rep = _report("inconclusive", [unsure, info, ok])
    assert exit_code([rep]) == 1 and not rep.passed
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system=None)
    render(console, [rep])
    render_summary(console, [rep, _report("passed", [ok])])
    text = buf.getvalue()
    assert "t  INCONCLUSIVE" in text and "INCONCLUSIVE" in text and "not applied" in text
    assert "--output out=scores" in text and "needs ≥ 189 samples" in text
    write_json([rep], tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and data["targets"][0]["status"] == "inconclusive"
    rows = {c["name"]: c for c in data["targets"][0]["checks"]}
    assert rows["parity.min_top1_agreement[y]"]["inconclusive"] is True
    assert rows["parity.min_top1_agreement[y]"]["samples_needed"] == 189
    assert rows["parity.min_top1_agreement[out]"]["applied"] is False
    write_junit([rep], tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    fail = cases["parity.min_top1_agreement[y]"].find("failure")
    assert fail is not None and fail.get("type") == "INCONCLUSIVE" and "needs ≥ 189" in fail.get("message")
    assert cases["parity.min_top1_agreement[out]"].find("skipped") is not None
    assert cases["size_mb"].find("failure") is None and suite.get("failures") == "1" and suite.get("skipped") == "1"


def test_device_harness_says_inconclusive():
    from edgepack.devices import runs
    from edgepack.devices.report import COLORS
    from edgepack.devices.transports import RawRun
    from edgepack.devices.verdicts import INCONCLUSIVE, judge, retryable

    row = Check("parity.min_top1_agreement[y]", 0.98, 1.0, False, ">=", inconclusive=True, samples_needed=189)
    out = {"passed": False, "verdict": "inconclusive",
           "parity": {"samples": 100, "checks": [row.to_dict()], "metrics": {}}}
    raw = RawRun(exit_code=1, stdout=json.dumps(out), stderr="", seconds=1.0)
    status, reason, _ = judge(raw)
    assert status == INCONCLUSIVE and "parity.min_top1_agreement[y] needs ≥ 189" in reason
    assert not retryable(status) and INCONCLUSIVE in COLORS
    failed = dict(out, verdict="failed", parity={"samples": 100, "checks": [dict(row.to_dict(), inconclusive=False)]})
    assert judge(RawRun(exit_code=1, stdout=json.dumps(failed), stderr="", seconds=1.0))[0] == "FAIL"
    result = {"status": INCONCLUSIVE, "reason": reason, "device": "d", "target": "t", "config": "parity",
              "seconds": 1.0}
    assert runs.exit_code({"results": [result]}) == 1


def test_judge_flag_is_validated_with_a_hint(cli, tmp_path):
    res = cli("build", tmp_path / "x.onnx", "-t", "android-ort-fp32", "--judge", "loose", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "Traceback" not in res.stdout + res.stderr
    assert "error: --judge 'loose' is not one of evidence, bound, point" in res.stderr and "hint:" in res.stderr

from __future__ import annotations

import numpy as np

from edgepack.config import ParityBudget
from edgepack.core.limits import Limits
from edgepack.parity.compare import compare, output_metrics
from edgepack.parity.tolerances import limits

TOL = Limits(1e-3, 0.999, 0.98, 0.01)


def _logits(n=200, c=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)).astype(np.float32) * 3


def test_metrics_on_identical_outputs():
    ref = _logits()
    m = output_metrics(ref, ref.copy(), labels=ref.argmax(1))
    assert m["max_abs_error"] == 0 and m["cosine"] > 0.999999 and m["top1_agreement"] == 1.0
    assert m["reference_accuracy"] == 1.0 and m["accuracy_drop"] == 0.0


def test_noise_fails_abs_but_passes_cosine():
    ref = _logits()
    got = ref + np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32) * 0.01
    res = compare({"y": ref}, {"y": got}, TOL, kinds={"y": "scores"})
    rows = {c.name: c for c in res.checks}
    assert not rows["parity.max_abs_error[y]"].passed
    assert rows["parity.min_cosine[y]"].passed and not res
    relaxed = compare({"y": ref}, {"y": got}, Limits(0.1, 0.999, 0.98, 0.01), kinds={"y": "scores"})
    assert relaxed, relaxed.to_dict()


def test_constant_output_fails_top1_and_is_flagged():
    """A model that 'finds nothing' (constant output) must fail on real data, not pass."""
    ref = _logits()
    got = np.tile(ref.mean(0), (len(ref), 1))
    res = compare({"y": ref}, {"y": got}, TOL, kinds={"y": "scores"})
    assert not res
    assert any("top1" in c.name and not c.passed for c in res.checks)


def test_degenerate_reference_warns():
    ref = np.tile(_logits(1), (50, 1))
    res = compare({"y": ref}, {"y": ref}, TOL)
    assert res.warnings and "identical for every holdout sample" in res.warnings[0]


def test_missing_output_and_shape_mismatch_fail():
    ref = _logits()
    assert not compare({"y": ref}, {}, TOL)
    res = compare({"y": ref}, {"y": ref[:, :5]}, TOL)
    assert not res and "shape" in res.checks[0].note


def test_accuracy_drop_check():
    ref = _logits()
    labels = ref.argmax(1)
    got = ref.copy()
    got[:10] = -got[:10]  # flip 10 of 200 predictions: 5 points of accuracy lost
    res = compare({"y": ref}, {"y": got}, TOL, labels=labels)
    drop = [c for c in res.checks if "accuracy_drop" in c.name][0]
    assert not drop.passed and abs(drop.measured - 0.05) < 1e-9


def test_limits_merge_row_and_budget_once():
    row = limits("ort_mobile", "int8")
    assert row.max_abs_error is None and row.min_top1_agreement == 0.98
    merged = limits("ort_mobile", "int8", ParityBudget(max_abs_error=0.5, min_cosine=0.9))
    assert (merged.max_abs_error, merged.min_cosine, merged.min_top1_agreement, merged.max_accuracy_drop) == \
        (0.5, 0.9, 0.98, 0.01)
    assert merged.max_rel_error == 0.05 and limits("ort_mobile", "fp32").max_rel_error == 1e-3
    assert limits("ort_mobile", "int8", ParityBudget(judge="bound")).judge == "bound"
    assert Limits.from_dict(merged.to_dict()) == merged


def test_every_kind_row_has_a_reason():
    from edgepack.parity.tolerances import KIND_ROWS

    assert {k for _, k in KIND_ROWS} >= {"regression", "probabilities", "embedding", "dense", "sequence", "state",
                                          "other"}
    assert all(len(row.reason) > 20 for row in KIND_ROWS.values())

"""Output kinds, per-sample metrics and statistical honesty (the shared numpy core)."""

from __future__ import annotations

import numpy as np

from edgepack.core.kinds import decide
from edgepack.core.limits import Limits
from edgepack.core.metrics import parity
from edgepack.core.stats import samples_needed, wilson
from edgepack.parity.tolerances import limits

INT8 = limits("ort_mobile", "int8")


def _detector(n=400, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, 10)) * 3
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    boxes = rng.uniform(0, 1, (n, 4))
    landmarks = rng.uniform(0, 1, (n, 10))
    return {"scores": scores, "boxes": boxes, "landmarks": landmarks}, logits.argmax(1)


def test_kinds_are_inferred_conservatively_and_declarations_win():
    ref, labels = _detector()
    kinds = decide(ref, labels)
    assert kinds["scores"][0] == "scores" and "labels' classes" in kinds["scores"][1]
    # 10 wide like the labels, but named as regression heads: never judged by argmax
    assert kinds["landmarks"][0] == "regression" and kinds["boxes"][0] == "regression"
    assert "'landmarks'" in kinds["landmarks"][1]
    assert decide({k: v for k, v in ref.items() if k != "boxes"} | {"out2": ref["landmarks"]}, labels)["scores"][1] \
        .startswith("rows are non-negative and sum to 1")  # two outputs match the labels: the values decide
    assert decide(ref, labels, {"landmarks": "other"})["landmarks"] == ("other", "declared")
    y = {"y": np.random.default_rng(1).standard_normal((50, 10))}
    assert decide(y, np.arange(50) % 10)["y"][0] == "scores"  # the only output matching the labels
    assert decide(y)["y"][0] == "other"  # no labels, no name, not distributions: never judged by argmax
    emb = {"embedding": np.random.default_rng(2).standard_normal((60, 384))}
    assert decide(emb)["embedding"][0] == "other"


def test_regression_heads_are_not_judged_by_argmax():
    """The false alarm from the issue: top-1 agreement applied to a landmark head."""
    ref, labels = _detector()
    rng = np.random.default_rng(3)
    got = {k: v + rng.normal(0, 0.004, v.shape) for k, v in ref.items()}  # ~int8-sized noise everywhere
    got["scores"] = ref["scores"]
    out = parity(ref, got, INT8, labels, {"boxes": "regression", "landmarks": "regression"})
    names = [c.name for c in out.checks]
    assert not any("top1" in n and "landmarks" in n for n in names)
    assert "parity.max_rel_error[landmarks]" in names and out, [(c.name, c.measured) for c in out.checks]
    broken = dict(got, landmarks=rng.uniform(0, 1, ref["landmarks"].shape))  # a broken head
    bad = parity(ref, broken, INT8, labels, {"boxes": "regression", "landmarks": "regression"})
    assert [c.name for c in bad.checks if not c.passed] == ["parity.max_rel_error[landmarks]"]


def test_per_sample_cosine_catches_one_bad_sample_that_the_flattened_cosine_hides():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((200, 384))
    got = ref.copy()
    got[17] = rng.standard_normal(384)  # one sample completely wrong
    out = parity({"e": ref}, {"e": got}, Limits(min_cosine=0.99), kinds={"e": "embedding"})
    m = out.metrics["e"]
    assert m["cosine"] > 0.99 and m["sample_cosine_min"] < 0.3
    assert not out and out.worst["e"][0]["index"] == 17


def test_embedding_retrieval_agreement():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((100, 64))
    out = parity({"e": ref}, {"e": ref + rng.normal(0, 1e-4, ref.shape)}, INT8, kinds={"e": "embedding"})
    assert out.metrics["e"]["retrieval_agreement"] == 1.0 and out
    shuffled = parity({"e": ref}, {"e": rng.permutation(ref)}, INT8, kinds={"e": "embedding"})
    assert not shuffled


def test_rates_carry_wilson_intervals_and_small_holdouts_are_named():
    lo, hi = wilson(96, 100)
    assert 0.90 < lo < 0.91 and 0.98 < hi < 0.99  # the 96/100 example
    assert samples_needed(0.98) == 189
    ref = np.random.default_rng(6).standard_normal((100, 10))
    got = ref.copy()
    got[:4] = -got[:4]
    point = parity({"y": ref}, {"y": got}, Limits(min_top1_agreement=0.95), kinds={"y": "scores"})
    m = point.metrics["y"]
    assert m["top1_agreement"] == 0.96 and abs(m["top1_agreement_ci_low"] - lo) < 1e-12
    assert point and "95% interval" in point.checks[0].note
    bound = parity({"y": ref}, {"y": got}, Limits(min_top1_agreement=0.95, judge="bound"), kinds={"y": "scores"})
    assert not bound  # 96/100 cannot prove ≥ 95 % at 95 % confidence
    small = parity({"y": ref[:50]}, {"y": ref[:50]}, Limits(min_top1_agreement=0.98, judge="point"),
                   kinds={"y": "scores"})
    assert small and any("50 samples are too few" in w and "≥ 189" in w for w in small.warnings)


def test_dense_and_sequence_kinds():
    rng = np.random.default_rng(7)
    seg = rng.standard_normal((8, 5, 16, 16))
    out = parity({"m": seg}, {"m": seg + 1e-6}, INT8, kinds={"m": "dense"})
    assert out.metrics["m"]["pixel_agreement"] == 1.0 and out.metrics["m"]["mean_iou"] == 1.0 and out
    depth = rng.uniform(0, 10, (8, 1, 16, 16))
    assert parity({"d": depth}, {"d": depth + 0.01}, INT8, kinds={"d": "dense"}).metrics["d"]["psnr_db"] > 50
    tokens = rng.standard_normal((8, 12, 30))
    broken = parity({"t": tokens}, {"t": rng.standard_normal(tokens.shape)}, INT8, kinds={"t": "sequence"})
    assert broken.metrics["t"]["token_agreement"] < 0.2 and not broken

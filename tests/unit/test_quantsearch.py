"""The INT8 accuracy search, framework-free: a fake quantizer whose layers add known, seeded errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack import quantsearch as qs
from edgepack.core.limits import Limits

N, C = 400, 10


def _tuning(seed: int = 0) -> qs.Tuning:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, C)).astype(np.float32) * 3
    return qs.Tuning({"x": np.arange(N, dtype=np.float32)[:, None]}, {"logits": logits}, None,
                     Limits(min_top1_agreement=0.98, min_cosine=0.98), {"logits": "scores"})


class FakeSpace(qs.Space):
    """Layers L0..L7 with a noise level each; a recipe scales every layer's noise; float layers add none."""

    def __init__(self, tuning: qs.Tuning, noise: dict[str, float], recipes: dict[str, float]) -> None:
        self.tuning, self.noise, self.scale = tuning, noise, recipes
        self.built: list[tuple[str, tuple[str, ...]]] = []
        self.released = 0

    def recipes(self):
        return [qs.Recipe(name, {"scale": s}, why=f"scale {s}") for name, s in self.scale.items()]

    def build(self, recipe, float_layers):
        self.built.append((recipe.name, float_layers))
        if recipe.name == "broken":
            raise RuntimeError("Unsupported op Foo in node 'bar'")
        return (recipe.settings["scale"], float_layers, tuple(recipe.settings.get("wide", ())))

    def run(self, candidate, feeds):
        scale, floats, wide = candidate
        sigma = scale * sum(v / (256 if k in wide else 1) for k, v in self.noise.items() if k not in floats)
        rng = np.random.default_rng(1)  # the same noise pattern for every candidate: deterministic
        ref = self.tuning.reference["logits"]
        return {"logits": ref + sigma * rng.standard_normal(ref.shape).astype(np.float32)}

    def layers(self, candidate):
        return sorted(self.noise)

    def size(self, candidate):
        return 1000 + 3000 * len(candidate[1])

    def int8_share(self, candidate):
        return 1 - len(candidate[1]) / len(self.noise)

    def release(self, candidate):
        self.released += 1


NOISE = {"L0": 0.005, "L1": 0.005, "L2": 1.5, "L3": 0.005, "L4": 0.9, "L5": 0.005, "L6": 0.005, "L7": 0.005}


def test_plain_recipe_that_meets_the_budget_is_kept_without_search():
    t = _tuning()
    space = FakeSpace(t, {k: 0.001 for k in NOISE}, {"plain": 1.0, "other": 0.5})
    res = qs.search(space, t, qs.AccuracySearch())
    assert res.met and not res.searched and res.recipe.name == "plain" and res.float_layers == ()
    assert space.built == [("plain", ())]  # nothing else was tried
    assert qs.checks(res.to_dict() and {"accuracy_search": res.to_dict()}, 1.5, None) == []


def test_second_recipe_chosen_when_plain_misses():
    t = _tuning()
    space = FakeSpace(t, NOISE, {"plain": 1.0, "broken": 1.0, "percentile": 0.004, "entropy": 0.002})
    res = qs.search(space, t, qs.AccuracySearch())
    assert res.met and res.searched and res.recipe.name == "percentile"
    d = res.to_dict()
    assert [x["recipe"] for x in d["trials"]] == ["plain", "broken", "percentile"]  # cheapest first, stop at first
    assert d["trials"][1]["error"].startswith("Unsupported op Foo")  # a recipe the toolkit refuses is a failed trial
    assert not d["trials"][0]["passed"] and d["trials"][2]["passed"]
    assert d["chosen"]["tuning"]["passed"] and "tuning" in d["split"]
    rows = qs.checks({"accuracy_search": d}, 1.5, None)
    assert [(r.name, r.passed) for r in rows] == [("accuracy_search.met_budget_on_tuning", True)]


def test_sensitivity_ranked_float_fallback_keeps_the_fewest_most_sensitive_layers():
    t = _tuning()
    space = FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.9})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=4))
    assert res.met and res.recipe.name == "percentile"
    assert set(res.float_layers) == {"L2", "L4"}  # the two noisy layers, and no more
    ranked = [name for name, _ in res.sensitivity]
    assert ranked[:2] == ["L2", "L4"]
    d = res.to_dict()
    assert d["sensitivity"]["method"].startswith("float-one")
    assert d["cost"]["size_vs_plain_int8"] == pytest.approx(7000 / 1000)
    assert d["cost"]["int8_compute_share"] == pytest.approx(0.75)
    stages = [x["stage"] for x in d["trials"]]
    assert stages[:2] == ["recipe", "recipe"] and "sensitivity" in stages and stages[-1] == "mixed"


def test_unmeetable_budget_fails_naming_the_best_recipe_and_every_layer_error():
    t = _tuning()
    t.limits = Limits(min_top1_agreement=1.0, min_cosine=0.999999)
    space = FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.5})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=1))
    assert not res.met and res.recipe.name == "percentile"
    assert "best: recipe 'percentile'" in res.reason
    d = res.to_dict()
    assert len(d["sensitivity"]["layers"]) == len(NOISE)
    row = qs.checks({"accuracy_search": d}, 1.5, None)[0]
    assert row.name == "accuracy_search.met_budget_on_tuning" and not row.passed and "percentile" in row.note
    assert space.released >= 1  # candidates not chosen are freed


def test_search_is_deterministic():
    t = _tuning()
    a = qs.search(FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.9}), t, qs.AccuracySearch()).to_dict()
    b = qs.search(FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.9}), t, qs.AccuracySearch()).to_dict()
    strip = lambda d: [(x["recipe"], x["float_layers"], x["passed"], x["score"]) for x in d["trials"]]
    assert strip(a) == strip(b) and a["chosen"] == b["chosen"]


def test_search_off_keeps_plain_and_reports_the_miss():
    t = _tuning()
    space = FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.05})
    res = qs.search(space, t, qs.AccuracySearch(enabled=False))
    assert not res.met and res.recipe.name == "plain" and space.built == [("plain", ())]
    row = qs.checks({"accuracy_search": res.to_dict()}, None, None)[0]
    assert not row.passed and "enabled is false" in row.note


def test_int8_speed_budget_rows():
    details = {"accuracy_search": {"searched": False, "met_budget_on_tuning": True, "chosen": {},
                                   "cost": {"latency_vs_float": 0.62}}}
    (row,) = qs.checks(details, 1.5, 0.55)
    assert row.name == "int8_latency_ratio" and not row.passed and row.measured == 0.62
    (row,) = qs.checks(details, 1.5, 0.8)
    assert row.passed
    (row,) = qs.checks({}, 1.5, 0.8)  # a budget nobody measured is not met
    assert not row.passed and "not measured" in row.note


def test_score_orders_near_misses_above_far_misses():
    t = _tuning()
    near = qs.evaluate({"logits": t.reference["logits"] + 0.05}, t)
    far = qs.evaluate({"logits": -t.reference["logits"]}, t)
    exact = qs.evaluate(dict(t.reference), t)
    assert qs.score(exact) >= 0 > qs.score(far)
    assert qs.score(near) >= qs.score(far)


class TimedSpace(FakeSpace):
    """Like FakeSpace, with a host latency per recipe (16-bit activations: accurate but slow)."""

    def timer(self, candidate):
        import time

        delay = 0.004 if candidate[0] == 0.0001 else 0.0005
        return lambda: time.sleep(delay)


def test_a_candidate_slower_than_max_latency_ratio_is_not_accepted():
    t = _tuning()
    space = TimedSpace(t, NOISE, {"plain": 1.0, "a16w8": 0.0001, "percentile": 0.9})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=4, max_latency_ratio=1.5))
    d = res.to_dict()
    slow = next(x for x in d["trials"] if x["recipe"] == "a16w8")
    assert not slow["passed"] and slow["latency_vs_plain_int8"] > 1.5 and slow["figures"]["latency_rejected"]
    assert any("max_latency_ratio" in f for f in slow["figures"]["failing"])
    assert "latency_vs_plain_int8" not in qs.stable({"accuracy_search": d})["accuracy_search"]["trials"][1]
    assert res.met and res.float_layers  # the search went on and found a float-layer fallback instead
    fast = qs.search(TimedSpace(t, NOISE, {"plain": 1.0, "a16w8": 0.0001}), t,
                     qs.AccuracySearch(max_latency_ratio=None))
    assert fast.met and fast.recipe.name == "a16w8"  # no latency limit: the accurate recipe is taken


class WrongShapeSpace(FakeSpace):
    """Every candidate's output has another shape than the reference's (a graph the converter changed)."""

    def run(self, candidate, feeds):
        return {"logits": super().run(candidate, feeds)["logits"].reshape(N * C // 2, 2)}


def test_a_structural_mismatch_stops_the_search_after_the_plain_recipe():
    """No recipe and no float layer changes a graph's output shapes: the search stops at once (the CTC
    recognizer ran 34 trials in 881 s on candidates that could never match)."""
    t = _tuning()
    space = WrongShapeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.004, "entropy": 0.002})
    res = qs.search(space, t, qs.AccuracySearch())
    assert space.built == [("plain", ())] and not res.met and not res.searched
    assert "structural mismatch" in res.reason and "output logits shape" in res.reason
    assert qs.structural(res.trials[0]) == ["output logits shape"]
    [row] = qs.checks({"accuracy_search": res.to_dict()}, 1.5, None)
    assert row.name == "accuracy_search.met_budget_on_tuning" and not row.passed


def test_the_fallback_never_puts_every_layer_back_in_float():
    """max_float_layers above the model's layer count is capped below it: all layers in float is no INT8."""
    t = _tuning()
    noise = {"L0": 2.0, "L1": 2.0, "L2": 2.0}
    space = FakeSpace(t, noise, {"plain": 1.0})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=8))
    assert not res.met and all(len(f) < len(noise) for _, f in space.built)
    assert "within 2 float layer(s)" in res.reason


def test_replay_reuses_an_earlier_search_of_the_same_problem():
    """A second target with the same problem key builds the earlier choice once instead of searching again."""
    t = _tuning()
    first = FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.004, "entropy": 0.002})
    earlier = qs.search(first, t, qs.AccuracySearch()).to_dict()
    second = FakeSpace(t, NOISE, {"plain": 1.0, "percentile": 0.004, "entropy": 0.002})
    res = qs.replay(second, t, earlier, "jetson-a")
    assert second.built == [("percentile", ())] and res.met and res.recipe.name == "percentile"
    assert "same quantization problem as target jetson-a" in res.reason and res.trials[0].stage == "reused"
    a = qs.problem_key("tensorrt", {"x": np.zeros(3)}, None, {"method": "minmax"}, b"graph")
    assert a == qs.problem_key("tensorrt", {"x": np.zeros(3)}, None, {"method": "minmax"}, b"graph")
    assert a != qs.problem_key("tensorrt", {"x": np.ones(3)}, None, {"method": "minmax"}, b"graph")
    assert a != qs.problem_key("tensorrt", {"x": np.zeros(3)}, None, {"method": "entropy"}, b"graph")

def test_float_fallback_is_capped_below_the_layer_count_and_fails_naming_the_best_recipe():
    """Every layer noisy and max_float_layers above the layer count: the fallback never puts every layer back in
    float (that model would not be INT8 at all); the search fails naming its best recipe with its figures."""
    t = _tuning()
    noise = {"L0": 2.0, "L1": 2.0, "L2": 2.0}
    space = FakeSpace(t, noise, {"plain": 1.0, "percentile": 0.9})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=8))
    assert not res.met and res.searched
    assert max(len(f) for _, f in space.built) == 2  # 3 layers: at most 2 in float
    assert len(res.float_layers) <= 2
    assert "one at least stays INT8" in res.reason and "best: recipe 'percentile'" in res.reason
    assert "parity.min_top1_agreement[logits]" in res.reason  # the best candidate's figures
    row = qs.checks({"accuracy_search": res.to_dict()}, 1.5, None)[0]
    assert not row.passed and "percentile" in row.note


class WideSpace(FakeSpace):
    """FakeSpace with per-layer 16-bit activations: a widened layer adds 1/256 of its noise."""

    def widen(self, recipe, layers):
        return qs.Recipe(f"{recipe.name}+a16x{len(layers)}", {**recipe.settings, "wide": layers}, "16-bit")


def test_sixteen_bit_activations_on_the_most_sensitive_layers_come_before_float_layers():
    t = _tuning()
    space = WideSpace(t, NOISE, {"plain": 1.0, "percentile": 0.9})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=4))
    assert res.met and res.float_layers == () and res.recipe.settings["wide"] == ("L2", "L4")
    stages = [x["stage"] for x in res.to_dict()["trials"]]
    assert "mixed" not in stages and stages[-1] == "wide"
    assert [b[0] for b in space.built if "+a16x" in b[0]] == ["percentile+a16x1", "percentile+a16x2"]
    assert "16-bit activations on the 2 most sensitive" in res.reason


def test_float_layers_when_sixteen_bit_activations_cannot_meet_the_budget():
    class Weak(WideSpace):
        def run(self, candidate, feeds):  # 16-bit activations do not help this model at all
            return super().run((candidate[0], candidate[1], ()), feeds)

    t = _tuning()
    space = Weak(t, NOISE, {"plain": 1.0, "percentile": 0.9})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=4))
    assert res.met and set(res.float_layers) == {"L2", "L4"}
    stages = [x["stage"] for x in res.to_dict()["trials"]]
    assert stages.index("wide") < stages.index("mixed")
    assert [x["recipe"] for x in res.to_dict()["trials"] if x["stage"] == "wide"][-1] == "percentile+a16x8"


def test_a_pass_within_the_sampling_error_tries_every_recipe_and_keeps_the_best():
    """98.3% on 400 tuning samples may be 97.5% on the holdout: the search does not stop there, it tries the
    other recipes and keeps the best-scoring one (a pass beyond the sampling error would have stopped it)."""
    t = _tuning()
    space = FakeSpace(t, {"L0": 1.0}, {"plain": 0.06, "worse": 0.07, "better": 0.04, "also": 0.05})
    res = qs.search(space, t, qs.AccuracySearch())
    d = res.to_dict()
    assert [x["recipe"] for x in d["trials"]] == ["plain", "worse", "better", "also"]
    assert all(x["passed"] and not x.get("confident") for x in d["trials"])
    assert res.met and res.recipe.name == "better" and "best of the 4 recipes" in res.reason
    agreement = {x["recipe"]: x["figures"]["checks"]["parity.min_top1_agreement[logits]"] for x in d["trials"]}
    assert agreement["better"] == max(agreement.values()) > agreement["plain"]


def test_a_pass_beyond_the_sampling_error_stops_the_search():
    t = _tuning()
    space = FakeSpace(t, {"L0": 1.0}, {"plain": 0.06, "clean": 0.02, "cleaner": 0.01})
    res = qs.search(space, t, qs.AccuracySearch())
    assert res.recipe.name == "clean" and [b[0] for b in space.built] == ["plain", "clean"]
    assert res.to_dict()["trials"][1]["confident"] and "beyond its sampling error" in res.reason


def test_a_slow_candidate_is_not_kept_as_the_closest_miss_either():
    """Nothing meets the budget: the closest candidate is kept for the report, but never one that runs slower than
    max_latency_ratio × plain INT8 (16-bit activations can cost several times the INT8 latency)."""
    import time as _time

    t = _tuning()

    class Timed(FakeSpace):
        def timer(self, candidate):
            slow = candidate[0] < 0.5  # the near-float recipe is the slow one
            return lambda: _time.sleep(0.004 if slow else 0.0005)

    space = Timed(t, NOISE, {"plain": 1.0, "slowclose": 0.3, "fastfar": 0.6})
    res = qs.search(space, t, qs.AccuracySearch(max_float_layers=0))
    trials = {x["recipe"]: x for x in res.to_dict()["trials"]}
    assert not res.met
    assert trials["slowclose"]["figures"].get("latency_rejected")
    assert trials["slowclose"]["score"] > trials["fastfar"]["score"]  # closer, but too slow: not kept
    assert res.recipe.name == "fastfar"


class MemorizingSpace(qs.Space):
    """Recipe "fit" is exact on the samples it was calibrated on and poor elsewhere (in-sample bias at its
    worst); recipe "general" has the same small error everywhere. Samples are identified by their input value."""

    def __init__(self, tuning: qs.Tuning, calibration: dict) -> None:
        self.tuning, self.seen = tuning, set(calibration["x"][:, 0].tolist())
        self.built: list[str] = []

    def recipes(self):
        return [qs.Recipe("fit", {}), qs.Recipe("general", {})]

    def build(self, recipe, float_layers):
        self.built.append(recipe.name)
        return recipe.name

    def run(self, candidate, feeds):
        x = feeds["x"][:, 0]
        by_x = {float(v): i for i, v in enumerate(self.tuning.feeds["x"][:, 0])}
        ref = self.tuning.reference["logits"][[by_x[float(v)] for v in x]]
        rng = np.random.default_rng(2)
        noise = rng.standard_normal(ref.shape).astype(np.float32)
        if candidate == "fit":
            sigma = np.array([0.0 if float(v) in self.seen else 3.0 for v in x], np.float32)[:, None]
        else:
            sigma = np.full((len(x), 1), 0.02, np.float32)
        return {"logits": ref + sigma * noise}

    def layers(self, candidate):
        return []


def test_cross_fitting_ranks_recipes_out_of_sample_when_tuning_overlaps_calibration():
    t = _tuning()
    calibration = {"x": t.feeds["x"].copy()}  # scarce data: the tuning split is the calibration data
    in_sample = qs.search(MemorizingSpace(t, calibration), t, qs.AccuracySearch())
    assert in_sample.recipe.name == "fit"  # judged in sample, the memorizing recipe looks flawless
    folds = qs.crossfit(lambda cal, j: MemorizingSpace(t, cal), calibration, t)
    assert len(folds) == 2 and sorted(np.concatenate([f.rows for f in folds]).tolist()) == list(range(N))
    for f in folds:  # each fold's space never saw the rows it is judged on
        assert not f.space.seen & set(t.feeds["x"][f.rows, 0].tolist())
    space = MemorizingSpace(t, calibration)
    res = qs.search(space, t, qs.AccuracySearch(), folds=folds)
    d = res.to_dict()
    assert res.met and res.recipe.name == "general", d["reason"]
    oof = {x["recipe"]: x for x in d["trials"] if "cross_fitted" in x["figures"]}
    assert set(oof) == {"fit", "general"} and not oof["fit"]["passed"] and oof["general"]["passed"]
    assert "out of sample" in res.reason and space.built[-1] == "general"  # then built on all the data


def test_cross_fitting_does_not_apply_to_a_disjoint_tuning_split():
    t = _tuning()
    other = {"x": t.feeds["x"] + 10_000}
    assert qs.crossfit(lambda cal, j: MemorizingSpace(t, cal), other, t) == []

"""Accuracy-aware INT8: search quantization recipes on the tuning split, then keep the most sensitive layers in
float, until the profile's parity budget holds. Numpy-only: the backends supply a :class:`Space` (worker side,
with their framework), this module decides.

Order of work (cheapest first, on the **tuning** split):

1. the profile's plain recipe, then the backend's other recipes (calibration method, per-channel weights, bias
   correction, equalisation/smoothing passes), each built with the toolkit's real API. A recipe that meets the
   budget *beyond the tuning split's sampling error* (every rate's 95% bound inside its budget, or no flip at all)
   ends the search at once; one that meets it only on the point estimate does not — a 98.3% on 300 tuning samples
   is as likely 97.5% on the holdout — so every recipe is tried and the best-scoring one is kept (the by-hand
   practice of trying the calibration methods and keeping the best, done on the tuning split instead of the holdout);
2. sensitivity-ranked mixed precision on the best recipe: every quantized layer's contribution to the output
   error (float-one: that layer alone back in float, or the toolkit's own ranking); then, where the backend has
   per-layer 16-bit activations (:meth:`Space.widen`), int16 activations with int8 weights on the 1, 2, 4, ... most
   sensitive layers, then on all of them; then layers go back to float most-sensitive first, one at a time, until the
   budget holds or ``max_float_layers`` is reached — capped below the number of quantized layers (one at least stays
   INT8: a model with every layer in float is no INT8 build, and the search fails naming its best recipe instead);
When the tuning split overlaps the calibration data (scarce data: calibration takes every non-holdout sample), a
recipe's tuning figures are in-sample — its ranges were fit to the very samples it is judged on, which favours
recipes that keep every extreme (MinMax) over those that clip (Percentile) although the latter often do better on
new data. The backends then pass :func:`crossfit` folds and the recipe stage is **cross-fitted**: each recipe is
calibrated on one part of the data and judged on the other part, both ways, and recipes are ranked (and the
stop-early rule applied) on those out-of-sample figures; the chosen recipe is then built on all the calibration data.

3. nothing met the budget: the best candidate found is returned with ``met = False`` and every layer's error; the
   pipeline turns that into a failing check naming the best recipe.

The holdout split never reaches this module: the build's verdict stays independent of every choice made here.
Deterministic: the same inputs give the same trials in the same order (ties broken by layer name).
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgepack.core.limits import Limits
from edgepack.core.metrics import ParityOutcome, parity

Feeds = dict[str, np.ndarray]


class AccuracySearch(BaseModel):
    """``[options.accuracy_search]`` of an INT8 profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="search when the plain INT8 build misses the parity budget on the "
                          "tuning split")
    max_float_layers: int = Field(8, ge=0, le=10_000, description="most layers kept in float")
    max_latency_ratio: float | None = Field(1.5, gt=0, description="a fallback whose host latency exceeds this "
                                            "multiple of the plain INT8 build's is not accepted")
    time_limit_s: float = Field(900.0, gt=0, le=86_400, description="wall-clock limit of the whole search")
    recipes: tuple[str, ...] | None = Field(None, description="only these of the backend's recipes (names as the "
                                            "report lists them); the plain one is always tried first")
    sensitivity: str = Field("auto", pattern="^(auto|float-one|toolkit)$", description="how layers are ranked: "
                             "float-one (each layer alone back in float), toolkit (the toolkit's own analysis "
                             "where the backend has one), auto (toolkit if available, else float-one)")


@dataclass(frozen=True)
class Recipe:
    name: str
    settings: dict[str, Any]
    why: str = ""


@dataclass
class Tuning:
    """The tuning split as the search sees it: inputs, the reference model's outputs, labels, limits and kinds."""

    feeds: Feeds
    reference: Feeds
    labels: np.ndarray | None
    limits: Limits
    kinds: dict[str, str] | None = None
    specs: dict[str, Any] | None = None  # output → core.outspec.OutputSpec (channel groups judged on their own)

    @property
    def samples(self) -> int:
        return len(next(iter(self.feeds.values()))) if self.feeds else 0


class Space(abc.ABC):
    """A backend's quantization search space (worker side). Candidates are whatever the backend needs (paths)."""

    @abc.abstractmethod
    def recipes(self) -> list[Recipe]:
        """Cheapest first; ``[0]`` is the profile's own (plain) recipe."""

    @abc.abstractmethod
    def build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> Any:
        """Quantize with ``recipe``, keeping ``float_layers`` in float; returns a candidate."""

    @abc.abstractmethod
    def run(self, candidate: Any, feeds: Feeds) -> Feeds:
        """The candidate's outputs on every sample of ``feeds`` (reference layout and dtype)."""

    @abc.abstractmethod
    def layers(self, candidate: Any) -> list[str]:
        """Quantized layers that can go back to float, in graph order."""

    def ranking(self, recipe: Recipe, candidate: Any, tuning: Tuning) -> list[tuple[str, float]] | None:
        """The toolkit's own sensitivity ranking (most sensitive first, with its error), or None."""
        return None

    def size(self, candidate: Any) -> int | None:
        return None

    def timer(self, candidate: Any) -> Callable[[], Any] | None:
        """One batch-1 call of the candidate (for the latency cost of a fallback), or None."""
        return None

    def float_timer(self) -> Callable[[], Any] | None:
        """One batch-1 call of the float model in the same runtime (for the INT8 speed ratio), or None."""
        return None

    def int8_share(self, candidate: Any) -> float | None:
        """Share of compute ops (or MACs) that run in INT8."""
        return None

    def widen(self, recipe: Recipe, layers: tuple[str, ...]) -> Recipe | None:
        """``recipe`` with 16-bit activations on ``layers`` (their inputs and outputs; weights stay int8), built by
        :meth:`build` like any recipe; None where the toolkit has no per-layer 16-bit activations."""
        return None

    def release(self, candidate: Any) -> None:
        """Free a candidate that was not chosen."""

    def cleanup(self) -> None:
        """Free what the space itself holds (its work folder, sessions) once the search is over."""


# ------------------------------------------------------------------------------------------------ scoring


def _margin(c) -> float:
    """How far one check is inside (+) or outside (−) its limit, on a comparable scale."""
    m, lim = c.measured, c.limit
    if m is None or (isinstance(m, float) and not math.isfinite(m)):
        return -100.0
    if c.op == ">=":
        scale = max(1.0 - lim, 0.01) if lim <= 1.0 else max(abs(lim), 1e-9)
        return max(-100.0, min(1.0, (m - lim) / scale))
    if c.op == "<=":
        return max(-100.0, min(1.0, (lim - m) / max(abs(lim), 1e-9)))
    return 0.0 if c.passed else -100.0


def score(outcome: ParityOutcome) -> float:
    """0 when every check passes (then the mean margin / 100, so a cleaner pass ranks higher); else the sum of the
    failing margins (closer to 0 = closer to the budget)."""
    margins = [_margin(c) for c in outcome.checks if c.applied]  # "not applied" rows judge nothing
    if not margins:
        return 0.0
    failing = [m for m in margins if m < 0]
    if failing:
        return float(sum(failing))
    return float(np.mean(margins)) / 100.0


def summary(outcome: ParityOutcome) -> dict[str, Any]:
    """The figures a person compares trials by: the judged checks (name → measured) and the verdict."""
    margins = [_margin(c) for c in outcome.checks if c.applied]
    return {"passed": bool(outcome), "score": round(score(outcome), 6),
            # every judged row's margin, passing ones too: breaks ties between candidates that miss alike
            "mean_margin": round(float(np.mean(margins)), 6) if margins else 0.0,
            "checks": {c.name: (None if c.measured is None else round(float(c.measured), 6)) for c in outcome.checks
                       if c.applied},
            "failing": [c.name for c in outcome.checks if not c.passed]}


def evaluate(outputs: Feeds, tuning: Tuning) -> ParityOutcome:
    """Parity on the tuning split. Recipes are compared on the point estimates: too few tuning samples for a rate
    budget is the build's warning (``min_tuning_samples``), never an INCONCLUSIVE candidate; the holdout judges."""
    limits = tuning.limits if tuning.limits.judge != "evidence" else replace(tuning.limits, judge="point")
    return parity(tuning.reference, outputs, limits, tuning.labels, tuning.kinds, tuning.specs)


def confident(outputs: Feeds, tuning: Tuning, outcome: ParityOutcome) -> bool:
    """``outcome`` (a pass on the point estimates) also holds beyond the tuning split's sampling error: every rate and
    accuracy-drop row passes on its 95% bound, or shows no flip at all (a flawless result that a small split cannot
    prove is still the best any recipe can do)."""
    if not outcome:
        return False
    rows = [c for c in outcome.checks if c.applied and c.samples_needed is not None]
    if all((c.op == ">=" and (c.measured or 0.0) >= 1.0) or (c.op == "<=" and (c.measured or 0.0) <= 0.0)
           for c in rows):
        return True
    return bool(parity(tuning.reference, outputs, replace(tuning.limits, judge="bound"), tuning.labels, tuning.kinds,
                       tuning.specs))


# ------------------------------------------------------------------------------------------------ cross-fitting


@dataclass
class Fold:
    """A space calibrated without the tuning rows ``rows`` (so its candidates are judged out of sample on them)."""

    space: "Space"
    rows: np.ndarray


def _row_digests(feeds: Feeds) -> list[bytes]:
    import hashlib

    names = sorted(feeds)
    n = len(feeds[names[0]]) if names else 0
    out = []
    for i in range(n):
        h = hashlib.sha1()
        for k in names:
            h.update(np.ascontiguousarray(feeds[k][i]).tobytes())
        out.append(h.digest())
    return out


def crossfit(make_space: Callable[[Feeds, int], "Space"], calibration: Feeds, tuning: Tuning | None,
             folds: int = 2, min_calibration: int = 16) -> list[Fold]:
    """Spaces for cross-fitting the recipe stage, or [] where it does not apply: no tuning split, tuning disjoint
    from calibration (its figures are already out of sample), an output or input whose samples are not on axis 0,
    or too little data. ``make_space(calibration_part, fold_index)`` builds the backend's space on a part."""
    from edgepack.core.outspec import AUTO

    if tuning is None or not calibration or not tuning.feeds or folds < 2:
        return []
    if any(getattr(sp, "batch_axis", 0) not in (0, AUTO) for sp in (tuning.specs or {}).values()):
        return []
    n_tune = tuning.samples
    if any(v.ndim == 0 or len(v) != n_tune for v in [*tuning.reference.values(), *tuning.feeds.values()]):
        return []
    if set(calibration) != set(tuning.feeds):
        return []
    cal_keys = _row_digests(calibration)
    tune_keys = _row_digests(tuning.feeds)
    if not set(tune_keys) & set(cal_keys):
        return []
    out = []
    for j in range(folds):
        rows = np.arange(j, n_tune, folds)
        held = {tune_keys[i] for i in rows}
        keep = np.array([i for i, key in enumerate(cal_keys) if key not in held], dtype=np.int64)
        if len(keep) < min_calibration or len(rows) == 0:
            close_folds(out)
            return []
        out.append(Fold(make_space({k: v[keep] for k, v in calibration.items()}, j), rows))
    return out


def _why(e: Exception) -> str:
    """One line for a trial that a toolkit refused or that failed to run (the toolkit's message, explained)."""
    from edgepack.errors import explain

    return explain(str(e)) or type(e).__name__


def close_folds(folds: list[Fold]) -> None:
    for f in folds:
        f.space.cleanup()


# ------------------------------------------------------------------------------------------------ the search


TRIAL_LOG: dict[str, str | None] = {"path": None}  # set in a conversion worker: where finished trials are appended


def record_trial(trial: "Trial", number: int) -> None:
    """Append a finished trial as one JSON line to the conversion's trial log (read live by the build, which shows
    the search's trials as they finish); nothing when no log is set. Never fails the search."""
    path = TRIAL_LOG["path"]
    if not path:
        return
    import json

    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"number": number, **trial.to_dict()}, default=str) + "\n")
    except (OSError, TypeError, ValueError):
        pass


@dataclass
class Trial:
    recipe: str
    float_layers: tuple[str, ...]
    stage: str  # "recipe", "sensitivity", "wide" (16-bit activations on some layers), "mixed" (float layers)
    passed: bool = False
    confident: bool = False  # passed beyond the tuning split's sampling error (see :func:`confident`)
    score: float = -math.inf
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    latency_vs_plain_int8: float | None = None  # measured only for a candidate that met the budget

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "float_layers": list(self.float_layers), "stage": self.stage,
                "passed": self.passed, **({"confident": True} if self.confident else {}),
                "score": None if not math.isfinite(self.score) else round(self.score, 6),
                "figures": self.figures, "seconds": round(self.seconds, 3),
                **({"latency_vs_plain_int8": self.latency_vs_plain_int8}
                   if self.latency_vs_plain_int8 is not None else {}),
                **({"error": self.error} if self.error
                                                                                 else {})}


@dataclass
class Result:
    candidate: Any
    recipe: Recipe
    float_layers: tuple[str, ...]
    met: bool
    searched: bool
    trials: list[Trial]
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    sensitivity_method: str | None = None
    reason: str = ""
    cost: dict[str, Any] = field(default_factory=dict)
    tuning_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        chosen = next((t for t in self.trials if t.recipe == self.recipe.name
                       and t.float_layers == self.float_layers and t.error is None), None)
        return {
            "split": f"tuning ({self.tuning_samples} samples; the holdout verdict is independent of this search)",
            "searched": self.searched, "met_budget_on_tuning": self.met, "reason": self.reason,
            "chosen": {"recipe": self.recipe.name, "settings": _jsonable(self.recipe.settings),
                       "why": self.recipe.why, "float_layers": list(self.float_layers),
                       "tuning": chosen.figures if chosen else {}},
            "trials": [t.to_dict() for t in self.trials],
            **({"sensitivity": {"method": self.sensitivity_method,
                                "layers": [{"layer": n, "error": round(float(e), 6)} for n, e in self.sensitivity]}}
               if self.sensitivity else {}),
            "cost": self.cost,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def interleaved(a: Callable[[], Any], b: Callable[[], Any], repeats: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median ms of ``a`` and ``b`` timed alternately in one run (their ratio is fair on a busy host)."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    ma, mb = float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3
    return {"a_ms": round(ma, 4), "b_ms": round(mb, 4), "ratio": round(ma / mb, 4) if mb > 0 else None}


def search(space: Space, tuning: Tuning | None, opts: AccuracySearch,
           progress: Callable[[str], None] = lambda s: None, folds: list[Fold] | None = None) -> Result:
    """Plain recipe first; if it misses the budget on the tuning split (and the search is on), other recipes, then
    sensitivity-ranked mixed precision. Returns the chosen candidate (other candidates are released). With
    ``folds`` (:func:`crossfit`), recipes are compared on cross-fitted, out-of-sample figures."""
    recipes = space.recipes()
    plain = recipes[0]
    if opts.recipes is not None:
        recipes = [plain] + [r for r in recipes[1:] if r.name in opts.recipes]
    t_start = time.monotonic()
    trials: list[Trial] = []
    kept: dict[tuple[str, tuple[str, ...]], Any] = {}

    def over_time() -> bool:
        return time.monotonic() - t_start > opts.time_limit_s

    def attempt(recipe: Recipe, floats: tuple[str, ...], stage: str) -> Trial:
        t0 = time.monotonic()
        trial = Trial(recipe.name, floats, stage)
        try:
            cand = space.build(recipe, floats)
        except Exception as e:  # noqa: BLE001 - a recipe the toolkit cannot apply is a failed trial, not a crash
            trial.error = _why(e)
            trial.seconds = time.monotonic() - t0
            trials.append(trial)
            record_trial(trial, len(trials))
            return trial
        if tuning is not None:
            try:
                outputs = space.run(cand, tuning.feeds)
                outcome = evaluate(outputs, tuning)
                trial.passed, trial.score, trial.figures = bool(outcome), score(outcome), summary(outcome)
                trial.confident = confident(outputs, tuning, outcome)
                # a candidate that would be kept (it passes, or it is the closest yet) must not be slow: 16-bit
                # activations can cost several times the plain INT8 latency on some runtimes
                if (trial.passed or trial.score > floor[0]) and (floats or recipe.name != plain.name):
                    _latency_gate(space, cand, trial)
                    if trial.figures.get("latency_rejected"):
                        trial.confident = False
                if not trial.figures.get("latency_rejected"):
                    floor[0] = max(floor[0], trial.score)
            except Exception as e:  # noqa: BLE001
                trial.error = _why(e)
        kept[(recipe.name, floats)] = cand
        trial.seconds = time.monotonic() - t0
        trials.append(trial)
        record_trial(trial, len(trials))
        progress(f"{stage} {recipe.name}" + (f" + {len(floats)} float layer(s)" if floats else "")
                 + (f": {'meets' if trial.passed else 'misses'} the budget on tuning (score {trial.score:.3f})"
                    if tuning is not None and trial.error is None else (f": {trial.error}" if trial.error else "")))
        return trial

    def attempt_oof(recipe: Recipe) -> Trial:
        """``recipe`` cross-fitted: each fold's candidate judged on the tuning rows its calibration never saw."""
        t0 = time.monotonic()
        trial = Trial(recipe.name, (), "recipe")
        parts: list[tuple[np.ndarray, Feeds]] = []
        try:
            for f in folds or []:
                cand = f.space.build(recipe, ())
                try:
                    parts.append((f.rows, f.space.run(cand, {k: v[f.rows] for k, v in tuning.feeds.items()})))
                finally:
                    f.space.release(cand)
            outputs: Feeds = {}
            for name, ref in tuning.reference.items():
                first_part = parts[0][1][name]
                full = np.zeros((len(ref), *first_part.shape[1:]), dtype=first_part.dtype)
                for rows, out in parts:
                    full[rows] = out[name]
                outputs[name] = full
            outcome = evaluate(outputs, tuning)
            trial.passed, trial.score, trial.figures = bool(outcome), score(outcome), summary(outcome)
            trial.confident = confident(outputs, tuning, outcome)
            trial.figures["cross_fitted"] = (f"{len(folds or [])} folds: each calibrated without the tuning rows it "
                                             "is judged on")
        except Exception as e:  # noqa: BLE001 - a recipe the toolkit cannot apply is a failed trial, not a crash
            trial.error = _why(e)
        trial.seconds = time.monotonic() - t0
        trials.append(trial)
        record_trial(trial, len(trials))
        progress(f"recipe {recipe.name} (cross-fitted)" + (
            f": {'meets' if trial.passed else 'misses'} the budget out of sample (score {trial.score:.3f})"
            if trial.error is None else f": {trial.error}"))
        return trial

    def finish(trial: Trial, recipe: Recipe, met: bool, searched: bool, reason: str,
               sens: list[tuple[str, float]] | None = None, method: str | None = None) -> Result:
        key = (recipe.name, trial.float_layers)
        cand = kept.pop(key)
        for other in kept.values():
            space.release(other)
        res = Result(cand, recipe, trial.float_layers, met, searched, trials, sens or [], method, reason,
                     tuning_samples=tuning.samples if tuning else 0)
        res.cost = _cost(space, cand, trial, plain_cand_size, plain_timer_pair, plain.name)
        return res

    def _latency_gate(space: Space, cand: Any, trial: Trial) -> None:
        """A candidate that meets the budget but runs slower than ``max_latency_ratio`` × plain INT8 (host,
        interleaved) is not accepted: the search goes on (a float layer is often cheaper than 16-bit activations)."""
        if opts.max_latency_ratio is None or plain_timer_pair[0] is None:
            return
        timer = space.timer(cand)
        if timer is None:
            return
        ratio = interleaved(timer, plain_timer_pair[0], repeats=10, warmup=2)["ratio"]
        trial.latency_vs_plain_int8 = ratio  # a timing: kept out of the figures (the manifest stays reproducible)
        if ratio is not None and ratio > opts.max_latency_ratio:
            trial.passed = False
            trial.figures["latency_rejected"] = True
            trial.figures["failing"] = [*trial.figures.get("failing", []),
                                        f"slower than max_latency_ratio {opts.max_latency_ratio} × plain INT8"]

    plain_timer_pair: tuple[Callable | None, Callable | None] = (None, None)
    floor = [-math.inf]  # the best score of a candidate that was not rejected for its latency
    first = attempt(plain, (), "recipe")
    if first.error is not None:
        from edgepack.errors import ConversionFailed

        raise ConversionFailed(f"INT8 quantization failed: {first.error}")
    plain_cand = kept[(plain.name, ())]
    plain_cand_size = space.size(plain_cand)
    plain_timer_pair = (space.timer(plain_cand), space.float_timer())
    if tuning is None:
        return finish(first, plain, True, False, "no tuning split (search off): the profile's plain recipe")
    if first.passed and (not folds or not opts.enabled) and (first.confident or not opts.enabled or
                                                             len(recipes) == 1):
        return finish(first, plain, True, False, "the profile's plain recipe meets the budget on the tuning split"
                      + (" beyond its sampling error" if first.confident else ""))
    wrong = structural(first)
    if wrong:  # no recipe and no float layer changes the graph's outputs: every further trial would miss too
        return finish(first, plain, False, False, "structural mismatch on the tuning split ("
                      + "; ".join(wrong) + "): no quantization recipe can fix it, the search stopped after the "
                      "plain recipe")
    if not opts.enabled:
        return finish(first, plain, False, False, "the plain recipe misses the budget on the tuning split and "
                      "options.accuracy_search.enabled is false")
    by_name = {r.name: r for r in recipes}
    best = first
    if folds and opts.enabled:
        scored: list[tuple[Trial, Recipe]] = []
        for r in recipes:
            if over_time():
                break
            t = attempt_oof(r)
            if t.error is None:
                scored.append((t, r))
            if t.passed and t.confident:
                break
        chosen: tuple[Trial, Trial, Recipe] | None = None  # (out-of-sample trial, full-data trial, recipe)
        for t, r in sorted(scored, key=lambda x: (-x[0].score, -x[0].figures.get("mean_margin", 0.0))):
            full = first if r.name == plain.name else attempt(r, (), "recipe")
            if full.error is None and not full.figures.get("latency_rejected"):
                chosen = (t, full, r)
                break
        if chosen is not None:
            oof, full, r = chosen
            n_tried = len(scored)
            if oof.passed:
                how = ("beyond its sampling error" if oof.confident else
                       f"and scores best of the {n_tried} recipes tried")
                return finish(full, r, True, r.name != plain.name or n_tried > 1,
                              f"recipe '{r.name}' meets the budget on the tuning split out of sample (cross-fitted) "
                              f"{how}; built on all the calibration data")
            best = full  # the base of the float fallback: the recipe closest out of sample
    for r in ([] if folds and opts.enabled else recipes[1:]):
        if over_time():
            break
        t = attempt(r, (), "recipe")
        if t.error is None and t.score > best.score and not t.figures.get("latency_rejected"):
            best = t  # the base of the float fallback: the closest recipe that is not too slow
        if t.passed and t.confident:
            return finish(t, r, True, True, f"recipe '{r.name}' meets the budget on the tuning split beyond its "
                          "sampling error")
    if best.passed:
        tried = sum(1 for t in trials if t.stage == "recipe" and t.error is None)
        return finish(best, by_name[best.recipe], True, True, f"recipe '{best.recipe}' scores best of the {tried} "
                      f"recipes on the tuning split and meets the budget there (none met it beyond the sampling error "
                      f"of {tuning.samples} tuning samples, so each was tried)")
    base = by_name[best.recipe]
    base_cand = kept[(base.name, ())]
    # sensitivity ranking on the best recipe
    sens: list[tuple[str, float]] = []
    method = None
    layers = space.layers(base_cand)
    # at least one compute layer stays quantized: a fallback with every layer back in float is no INT8 build
    cap = min(opts.max_float_layers, max(len(layers) - 1, 0))
    can_widen = bool(layers) and space.widen(base, (layers[0],)) is not None
    float_one_pass: Trial | None = None
    if (cap > 0 or can_widen) and layers and not over_time():
        if opts.sensitivity in ("auto", "toolkit"):
            ranked = space.ranking(base, base_cand, tuning)
            if ranked is not None:
                sens, method = list(ranked), "toolkit"
        if not sens:
            method = "float-one (each layer alone back in float; error = score gained)"
            for layer in layers:
                if over_time():
                    break
                t = attempt(base, (layer,), "sensitivity")
                if t.error is None:
                    sens.append((layer, t.score - best.score))
                    if t.passed and cap >= 1 and not can_widen:
                        sens.sort(key=lambda x: (-x[1], x[0]))
                        return finish(t, base, True, True, f"recipe '{base.name}' with 1 layer in float meets "
                                      "the budget on the tuning split", sens, method)
                    if t.passed and cap >= 1 and float_one_pass is None:
                        float_one_pass = t  # kept: taken if 16-bit activations cannot meet the budget
                        continue
                if (base.name, (layer,)) in kept:
                    space.release(kept.pop((base.name, (layer,))))
            sens.sort(key=lambda x: (-x[1], x[0]))
        # 16-bit activations (int8 weights kept) on the most sensitive layers, 1, 2, 4, ... then all of them
        ranked_layers = [n for n, _ in sens] + [n for n in layers if n not in {m for m, _ in sens}]
        for k in _widths(len(ranked_layers)) if can_widen else []:
            if over_time():
                break
            wide = space.widen(base, tuple(ranked_layers[:k]))
            if wide is None:
                break
            by_name[wide.name] = wide
            t = attempt(wide, (), "wide")
            if t.error is None and not t.figures.get("latency_rejected") and t.score > best.score:
                best = t
            if t.passed:
                return finish(t, wide, True, True, f"recipe '{base.name}' with 16-bit activations on the {k} most "
                              "sensitive layer(s) meets the budget on the tuning split", sens, method)
        if float_one_pass is not None:
            return finish(float_one_pass, base, True, True, f"recipe '{base.name}' with 1 layer in float meets the "
                          "budget on the tuning split (16-bit activations did not)", sens, method)
        floats: tuple[str, ...] = ()
        best_mixed: Trial | None = None
        for layer, _ in sens[:cap]:  # most sensitive first (a layer that gains nothing alone
            # may still matter together with others, so none is skipped)
            if over_time():
                break
            floats = floats + (layer,)
            t = attempt(base, floats, "mixed")
            if t.error is None and not t.figures.get("latency_rejected") and (best_mixed is None
                                                                          or t.score > best_mixed.score):
                best_mixed = t
            if t.passed:
                return finish(t, base, True, True, f"recipe '{base.name}' with {len(floats)} layer(s) in float "
                              "meets the budget on the tuning split", sens, method)
        if best_mixed is not None and best_mixed.score > best.score:
            best = best_mixed
    why = ("time limit reached" if over_time() else "no recipe, no 16-bit-activation mix and no float fallback "
           f"within {cap} float layer(s) (max_float_layers={opts.max_float_layers}, {len(layers)} quantized "
           "layers: one at least stays INT8) meets the budget on the tuning split")
    return finish(best, by_name[best.recipe], False, True, f"{why}; best: recipe '{best.recipe}' with "
                  f"{len(best.float_layers)} layer(s) in float (score {best.score:.3f}; {_figures(best)})", sens,
                  method)


def _widths(n: int) -> list[int]:
    """How many of the ``n`` ranked layers get 16-bit activations, trial by trial: 1, 2, 4, ... then all."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n else out


def _figures(trial: Trial) -> str:
    """The trial's judged figures on the tuning split, as a person reads them."""
    checks = trial.figures.get("checks") or {}
    return ", ".join(f"{k} {v}" for k, v in checks.items()) or (trial.error or "no figures")


def structural(trial: Trial) -> list[str]:
    """The trial's failing structural checks (an output missing or of another shape than the reference's)."""
    return [c for c in trial.figures.get("failing", [])
            if c.startswith("output ") and (c.endswith(" shape") or c.endswith(" present"))]


def problem_key(*parts: Any) -> str:
    """A digest of what defines a quantization problem (the graph to quantize, the data, the settings and limits
    the search judges by): two targets with the same key would run the same search."""
    import hashlib
    import json

    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, dict) and p and all(isinstance(v, np.ndarray) for v in p.values()):
            for k in sorted(p):
                h.update(k.encode())
                h.update(f"{p[k].dtype}{p[k].shape}".encode())
                h.update(np.ascontiguousarray(p[k]).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(_jsonable(p), sort_keys=True).encode())
        h.update(b"\x00")
    return h.hexdigest()


def replay(space: Space, tuning: Tuning | None, earlier: dict[str, Any], target: str) -> Result:
    """The choice of an earlier search of the same problem (``earlier``: its ``Result.to_dict()``), built once and
    judged on the tuning split again, instead of a second search (the Jetson INT8 profiles share one problem)."""
    chosen = earlier["chosen"]
    recipe = next((r for r in space.recipes() if r.name == chosen["recipe"]), None)
    if recipe is None:
        raise ValueError(f"recipe {chosen['recipe']!r} is not one of this space's")
    floats = tuple(chosen["float_layers"])
    t0 = time.monotonic()
    trial = Trial(recipe.name, floats, "reused")
    cand = space.build(recipe, floats)
    if tuning is not None:
        outcome = evaluate(space.run(cand, tuning.feeds), tuning)
        trial.passed, trial.score, trial.figures = bool(outcome), score(outcome), summary(outcome)
    trial.seconds = time.monotonic() - t0
    n = len(earlier.get("trials", []))
    res = Result(cand, recipe, floats, trial.passed if tuning is not None else bool(earlier["met_budget_on_tuning"]),
                 bool(earlier["searched"]), [trial], tuning_samples=tuning.samples if tuning else 0,
                 reason=f"same quantization problem as target {target}: its search's choice reused ({n} trial(s) "
                        f"not repeated); there: {earlier['reason']}")
    if earlier.get("sensitivity"):
        res.sensitivity = [(x["layer"], x["error"]) for x in earlier["sensitivity"]["layers"]]
        res.sensitivity_method = earlier["sensitivity"]["method"]
    res.cost = _cost(space, cand, trial, None, (None, space.float_timer()), recipe.name)
    return res


def _cost(space: Space, cand: Any, trial: Trial, plain_size: int | None,
          timers: tuple[Callable | None, Callable | None], plain_name: str = "") -> dict[str, Any]:
    """Size and host latency of the chosen candidate against the plain INT8 build and the float model."""
    out: dict[str, Any] = {}
    size = space.size(cand)
    if size is not None:
        out["size_bytes"] = size
        if plain_size:
            out["size_vs_plain_int8"] = round(size / plain_size, 4)
    share = space.int8_share(cand)
    if share is not None:
        out["int8_compute_share"] = round(float(share), 4)
    timer = space.timer(cand)
    plain_timer, float_timer = timers
    try:
        if timer is not None and plain_timer is not None and (trial.float_layers or trial.recipe != plain_name):
            # any candidate other than the plain build: a slower recipe (16x8, dynamic) costs latency too
            m = interleaved(timer, plain_timer)
            out["latency_vs_plain_int8"] = m["ratio"]
        if timer is not None and float_timer is not None:
            m = interleaved(timer, float_timer)
            out["int8_ms"], out["float_ms"], out["latency_vs_float"] = m["a_ms"], m["b_ms"], m["ratio"]
    except Exception as e:  # noqa: BLE001 - a timing failure is reported, never fatal
        out["latency_error"] = _why(e)
    return out


VOLATILE_TRIAL = ("seconds", "latency_vs_plain_int8")
VOLATILE_COST = ("int8_ms", "float_ms", "latency_vs_float", "latency_vs_plain_int8", "latency_error")


def stable(details: dict[str, Any]) -> dict[str, Any]:
    """Artifact details without the search's wall-clock figures (trial seconds, host latencies): what the manifest
    stores, so rebuilding the same inputs stays byte-identical; the build's report.json keeps the full figures."""
    s = details.get("accuracy_search")
    if not isinstance(s, dict):
        return details
    s = {**s, "trials": [{k: v for k, v in t.items() if k not in VOLATILE_TRIAL} for t in s.get("trials", [])],
         "cost": {k: v for k, v in s.get("cost", {}).items() if k not in VOLATILE_COST}}
    return {**details, "accuracy_search": s}


def with_timings(details: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's (stable) details completed with the build report's timings, when that report describes
    the same search (its stable part equals the manifest's); else the manifest's details as they are."""
    if not isinstance(reported, dict) or "accuracy_search" not in details or stable(reported) != details:
        return details
    return reported


def checks(details: dict[str, Any], opts_latency_ratio: float | None, max_int8_latency_ratio: float | None):
    """Report rows from an artifact's ``accuracy_search`` details: the search met the budget on the tuning split,
    the fallback's latency cost, and the INT8 speed budget (INT8 ÷ float latency, interleaved in one run)."""
    from edgepack.core.checks import Check, judge

    rows = []
    s = details.get("accuracy_search")
    if s is None:
        if max_int8_latency_ratio is not None:
            rows.append(judge("int8_latency_ratio", None, max_int8_latency_ratio, "<=",
                              note="not measured: this build ran no INT8 quantization search stage"))
        return rows
    if s.get("searched") or not s.get("met_budget_on_tuning", True):
        c = s["chosen"]
        rows.append(Check("accuracy_search.met_budget_on_tuning", 1, 1 if s["met_budget_on_tuning"] else 0,
                          bool(s["met_budget_on_tuning"]), "==",
                          f"chosen: recipe '{c['recipe']}', {len(c['float_layers'])} layer(s) in float; {s['reason']}"))
    cost = s.get("cost", {})
    if opts_latency_ratio is not None and cost.get("latency_vs_plain_int8") is not None:
        rows.append(judge("accuracy_search.latency_vs_plain_int8", cost["latency_vs_plain_int8"], opts_latency_ratio,
                          "<=", "host latency of the chosen fallback ÷ the plain INT8 build, interleaved"))
    if max_int8_latency_ratio is not None:
        r = cost.get("latency_vs_float")
        rows.append(judge("int8_latency_ratio", r, max_int8_latency_ratio, "<=",
                          "host latency INT8 ÷ float model in the same runtime, 1 thread, interleaved in one run"
                          if r is not None else "not measured (no float timer for this backend)"))
    return rows

"""Per-output parity metrics and the parity verdict: numpy arrays in, plain values out.

Host (``edgepack check``/``build``) and device (the bundle's runner) both call :func:`parity`, so they never
disagree. Metrics depend on the output's kind (see ``kinds``) and are computed per sample as well as over the
whole holdout; every rate carries its 95 % Wilson interval. Rules that matter: shapes must match exactly (never
broadcast); an all-zero side has cosine 0 unless both sides are identical; NaN/Inf in the candidate fail the output
and are named with the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .checks import Check, finite_or_none, judge, verdict
from .kinds import decide
from .limits import Limits
from .outspec import OutputSpec, expand, group_note, virtual_name
from .stats import drop_samples_needed, paired_drop_interval, samples_needed, wilson
from .tasks import ROWS as TASK_ROWS, base_kind, is_task, metrics_of, measure as measure_task

RATE_KINDS = {"top1_agreement": "scores", "top5_agreement": "scores", "decision_agreement": "probabilities",
              "retrieval_agreement": "embedding", "pixel_agreement": "dense", "token_agreement": "sequence"}


def is_class_scores(arr: np.ndarray) -> bool:
    """(N, C) with C > 1."""
    return arr.ndim == 2 and arr.shape[1] > 1


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)


def sample_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Cosine per sample; 1 when both rows are all zeros, 0 when one is, NaN when a row is not finite."""
    r, g = _flat(np.asarray(ref, np.float64)), _flat(np.asarray(got, np.float64))
    finite = np.all(np.isfinite(r), axis=1) & np.all(np.isfinite(g), axis=1)
    r, g = np.where(np.isfinite(r), r, 0.0), np.where(np.isfinite(g), g, 0.0)
    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    dot = np.einsum("ij,ij->i", r, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(nr * ng > 0, dot / np.where(nr * ng > 0, nr * ng, 1.0), 0.0)
    both_zero = (nr == 0) & (ng == 0)
    cos = np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))
    return np.where(finite, cos, np.nan)


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine of the flattened arrays; 1.0 only for identical arrays when a side is all zeros."""
    r = np.asarray(ref, np.float64).ravel()
    g = np.asarray(got, np.float64).ravel()
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
        return float("nan")
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    if denom > 0:
        return float(np.clip(r @ g / denom, -1.0, 1.0))
    return 1.0 if np.array_equal(r, g) else 0.0


def _rate(m: dict[str, float], key: str, hits: np.ndarray) -> None:
    n = int(hits.size)
    k = float(np.count_nonzero(hits))
    m[key] = k / n if n else 0.0
    lo, hi = wilson(k, n)
    m[f"{key}_ci_low"], m[f"{key}_ci_high"] = lo, hi
    m[f"{key}_n"] = float(n)


def _argmax_finite(a: np.ndarray, axis: int) -> np.ndarray:
    return np.where(np.isfinite(a), a, -np.inf).argmax(axis)


def output_metrics(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None,
                   kind: str | None = None) -> dict[str, float]:
    """Metrics of one output over the holdout, per sample and overall. Raises ValueError on a shape mismatch."""
    return _measure(ref, got, labels, kind)[0]


def _measure(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None,
             kind: str | None) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(metrics, per-sample cosine, per-sample worst |Δ| relative to the output's range)."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs bundle {got.shape}")
    if kind is None:
        kind = "scores" if is_class_scores(ref) else "other"
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    n = len(ref) if ref.ndim else 1
    nonfinite = ~np.isfinite(_flat(got))
    diff = np.abs(ref - got)
    diff = np.where(np.isfinite(diff), diff, np.inf)  # a NaN/Inf in the bundle is an infinite error
    finite_diff = diff.ravel()
    span = float(np.ptp(ref)) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = finite_diff / (span if span > 0 else max(scale, 1e-12))
    per_sample_rel = _flat(diff).max(axis=1) / (span if span > 0 else max(scale, 1e-12)) if ref.size else np.zeros(0)
    cos = sample_cosines(ref, got)
    m: dict[str, float] = {
        "samples": float(n),
        "max_abs_error": float(finite_diff.max()) if finite_diff.size else 0.0,
        "mean_abs_error": float(np.mean(finite_diff)) if finite_diff.size else 0.0,
        "p99_abs_error": float(np.percentile(finite_diff, 99)) if finite_diff.size else 0.0,
        "rel_error_p99": float(np.percentile(rel, 99)) if rel.size else 0.0,
        "rel_error_max": float(rel.max()) if rel.size else 0.0,
        "rel_error_sample_p99": float(np.percentile(per_sample_rel, 99)) if per_sample_rel.size else 0.0,
        "cosine": cosine(ref, got),
        "sample_cosine_min": float(np.min(cos)) if cos.size else 1.0,
        "sample_cosine_p1": float(np.percentile(cos, 1)) if cos.size else 1.0,
        "reference_spread": float(np.std(ref, axis=0).mean()) if ref.ndim >= 1 and len(ref) > 1 else 0.0,
        "nonfinite_samples": float(nonfinite.any(axis=1).sum()),
    }
    if kind == "scores" and ref.ndim >= 2 and ref.shape[1] > 1:
        r2, g2 = ref.reshape(n, ref.shape[1], -1), got.reshape(n, got.shape[1], -1)
        ra, ga = _argmax_finite(r2, 1), _argmax_finite(g2, 1)
        _rate(m, "top1_agreement", ra == ga)
        if ref.ndim == 2 and ref.shape[1] > 5:
            top5 = np.argsort(-np.where(np.isfinite(got), got, -np.inf), axis=1)[:, :5]
            _rate(m, "top5_agreement", np.any(top5 == ra[:, :1], axis=1))
        if labels is not None and ref.ndim == 2 and len(labels) == n and n and int(np.max(labels)) < ref.shape[1]:
            lab = np.asarray(labels).astype(np.int64)
            ref_ok, got_ok = ra[:, 0] == lab, ga[:, 0] == lab
            _rate(m, "reference_accuracy", ref_ok)
            _rate(m, "bundle_accuracy", got_ok)
            m["accuracy_drop"] = m["reference_accuracy"] - m["bundle_accuracy"]
            lo, hi = paired_drop_interval(int(np.sum(ref_ok & ~got_ok)), int(np.sum(~ref_ok & got_ok)), n)
            m["accuracy_drop_ci_low"], m["accuracy_drop_ci_high"] = lo, hi
    elif kind == "other" and ref.ndim == 2 and ref.shape[1] > 1:  # information only: never judged (see unapplied)
        _rate(m, "top1_agreement", _argmax_finite(ref, 1) == _argmax_finite(got, 1))
    elif kind == "probabilities":
        _rate(m, "decision_agreement", ((ref >= 0.5) == (got >= 0.5)).ravel())
    elif kind == "embedding" and n > 2:
        def nearest(x: np.ndarray) -> np.ndarray:
            x = _flat(np.where(np.isfinite(x), x, 0.0))
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            sim = x @ x.T
            np.fill_diagonal(sim, -np.inf)
            return sim.argmax(axis=1)

        _rate(m, "retrieval_agreement", nearest(ref) == nearest(got))
    elif kind == "dense":
        if ref.ndim >= 3 and ref.shape[1] > 1:
            ra, ga = ref.argmax(1), _argmax_finite(got, 1)
            _rate(m, "pixel_agreement", (ra == ga).ravel())
            ious = [np.sum((ra == c) & (ga == c)) / max(np.sum((ra == c) | (ga == c)), 1)
                    for c in range(ref.shape[1]) if np.any(ra == c)]
            m["mean_iou"] = float(np.mean(ious)) if ious else 1.0
        else:
            mse = float(np.mean(np.where(np.isfinite(diff), diff, span or 1.0) ** 2))  # non-finite: full range
            peak = span if span > 0 else 1.0
            m["psnr_db"] = float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))
    elif kind == "sequence" and ref.ndim >= 3:
        _rate(m, "token_agreement", (ref.argmax(-1) == _argmax_finite(got, -1)).ravel())
    return m, cos, per_sample_rel


def _worst(kind: str, cos: np.ndarray, rel: np.ndarray, k: int = 3) -> list[dict[str, Any]]:
    """The k samples that differ most (index + metric), so a person (and a device) can re-test them."""
    if kind in ("scores", "embedding"):
        order = np.argsort(np.where(np.isnan(cos), -np.inf, cos))[:k]
        return [{"index": int(i), "metric": "sample_cosine", "value": finite_or_none(float(cos[i]))} for i in order]
    order = np.argsort(-rel)[:k]
    return [{"index": int(i), "metric": "rel_error", "value": finite_or_none(float(rel[i]))} for i in order]


@dataclass
class ParityOutcome:
    """Kinds, metrics per output, the checks the limits ask for, worst samples and warnings. ``bool()`` = verdict."""

    metrics: dict[str, dict[str, float]]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    samples: int = 0
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    worst: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        """``passed``, ``inconclusive`` or ``failed`` (see ``checks.verdict``)."""
        return verdict(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": bool(self), "verdict": self.verdict, "samples": self.samples,
                "kinds": {k: {"kind": v[0], "how": v[1]} for k, v in self.kinds.items()},
                "metrics": {k: {mk: finite_or_none(mv) for mk, mv in m.items()} for k, m in self.metrics.items()},
                "worst_samples": self.worst,
                "checks": [c.to_dict() for c in self.checks], "warnings": list(self.warnings)}


def _rate_check(name: str, out: str, m: dict[str, float], key: str, limit: float, limits: Limits,
                warnings: list[str]) -> Check:
    """A minimum-rate budget row (agreement, recall, …) from the rate ``key`` and its ``_n``/``_ci_low``/``_ci_high``
    companions. INCONCLUSIVE (unless ``limits.judge`` is ``point``) when the point estimate meets the budget on fewer
    samples than a flawless result needs to prove it."""
    n = int(m.get(f"{key}_n", 0))
    need = samples_needed(limit)
    bound = limits.judge == "bound"
    measured = m[f"{key}_ci_low"] if bound else m[key]
    note = f"95% interval {m[f'{key}_ci_low']:.4f}–{m[f'{key}_ci_high']:.4f} on {n} samples" + \
        (" (judged on the lower bound)" if bound else "")
    short = n < need and limit < 1  # a budget of 1 asks for no flip at all: judged as stated
    why = f"a flawless result's 95% lower bound is {wilson(n, n)[0]:.4f} < {limit}"
    if short and limits.judge == "point":
        warnings.append(f"{name}[{out}]: {n} samples are too few for this budget to mean anything ({why}); it needs "
                        f"≥ {need} samples")
    row = judge(f"{name}[{out}]", measured, limit, ">=", note)
    if short and limits.judge != "point" and m[key] >= limit:
        return replace(row, passed=False, inconclusive=True, samples_needed=need,
                       note=f"{note}; INCONCLUSIVE: {n} samples cannot support {limit} ({why}): needs ≥ {need} "
                            "samples, or judge = \"point\"")
    return replace(row, samples_needed=need if limit < 1 else None)


def _drop_check(out: str, m: dict[str, float], limit: float, limits: Limits) -> Check:
    """The accuracy-drop budget row; INCONCLUSIVE like :func:`_rate_check` when the holdout is too small for even no
    discordant sample to prove the budget."""
    n = int(m.get("reference_accuracy_n", 0))
    need = drop_samples_needed(limit)
    bound = limits.judge == "bound"
    measured = m["accuracy_drop_ci_high"] if bound else m["accuracy_drop"]
    note = f"95% interval {m['accuracy_drop_ci_low']:.4f}–{m['accuracy_drop_ci_high']:.4f}" + \
        (" (judged on the upper bound)" if bound else "")
    row = replace(judge(f"parity.max_accuracy_drop[{out}]", measured, limit + 1e-12, "<=", note), samples_needed=need)
    if n < need and limits.judge != "point" and m["accuracy_drop"] <= limit + 1e-12:
        return replace(row, passed=False, inconclusive=True, samples_needed=need,
                       note=f"{note}; INCONCLUSIVE: {n} labelled samples cannot support a drop ≤ {limit} (with no "
                            f"sample changed the upper bound is {1 / max(n, 1):.4f}): needs ≥ {need} samples, or "
                            "judge = \"point\"")
    return row


CLASS_BUDGETS = (("min_top1_agreement", "top1_agreement"), ("min_top5_agreement", "top5_agreement"),
                 ("max_accuracy_drop", "accuracy_drop"))


def unapplied(name: str, kind: str, ref: np.ndarray, m: dict[str, float], limits: Limits,
              labels: np.ndarray | None) -> list[Check]:
    """Rows for the class-score budgets ``limits`` sets that the verdict does not apply to output ``name``: shown
    (state ``not applied``, with the one-line fix), judging nothing. A 2-D output of kind ``other`` shows its top-1
    agreement as information; a class-score output without usable labels says the accuracy budget needs them."""
    rows: list[Check] = []
    two_d = ref.ndim == 2 and ref.shape[1] > 1
    if kind == "other" and two_d:
        for field_name, key in CLASS_BUDGETS:
            limit = getattr(limits, field_name)
            if limit is None or (key == "top5_agreement" and ref.shape[1] <= 5) or \
                    (key == "accuracy_drop" and labels is None):
                continue
            info = ""
            if key == "top1_agreement" and "top1_agreement" in m:
                info = f"; top-1 agreement {m['top1_agreement']:.4f} on {int(m['top1_agreement_n'])} samples shown as " \
                       "information"
            rows.append(Check(f"parity.{field_name}[{name}]", limit, m.get(key), True,
                              "<=" if field_name.startswith("max") else ">=",
                              f"not applied: output {name} is 'other'{info}; if it is class scores: "
                              f"--output {name}=scores", applied=False))
    elif kind == "scores" and two_d and limits.max_accuracy_drop is not None and "accuracy_drop" not in m:
        why = "the holdout has no labels" if labels is None else "the labels do not match its classes"
        rows.append(Check(f"parity.max_accuracy_drop[{name}]", limits.max_accuracy_drop, None, True, "<=",
                          f"not applied: {why}; give a labelled holdout (a recipe with labels, or --holdout DATA.npz "
                          "with a 'labels' array)", applied=False))
    return rows


def _task_params(spec: OutputSpec | None) -> dict[str, str]:
    """A task's parameters from its output spec, with the model-layout batch axis its axis parameters count from."""
    if spec is None:
        return {}
    params = dict(spec.params)
    if isinstance(spec.batch_axis, int) and not isinstance(spec.batch_axis, bool):
        params.setdefault("batch_axis", str(spec.batch_axis))
    return params


def _task_checks(name: str, task: str, ref: np.ndarray, got: np.ndarray, params: dict[str, str],
                 m: dict[str, float], limits: Limits, warnings: list[str]) -> list[Check]:
    """Decode both sides with the task's post-processor (``core.tasks``), add its metrics to ``m`` and judge
    them by the task rows (``tasks.ROWS``)."""
    try:
        tm = measure_task(task, ref, got, params)
    except (ValueError, LookupError) as e:
        return [Check(f"output {name} {task}", 1, 0, False, "==", f"cannot decode as {task}: {e}")]
    m.update(tm)
    out: list[Check] = []
    for key in metrics_of(task):
        field_name, op, is_rate = TASK_ROWS[key]
        limit = getattr(limits, field_name)
        if limit is None or key not in tm:
            continue
        if is_rate:
            out.append(_rate_check(f"parity.{field_name}", name, tm, key, limit, limits, warnings))
        else:
            out.append(judge(f"parity.{field_name}[{name}]", tm[key], limit, op))
    return out


def parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], limits: Limits,
           labels: np.ndarray | None = None, kinds: dict[str, str] | None = None,
           specs: dict[str, OutputSpec] | None = None) -> ParityOutcome:
    """Metrics for every reference output, judged by the rows of its kind. ``kinds`` are the decided kinds
    (from the manifest); when absent they are inferred conservatively (see ``kinds.decide``). Outputs are
    samples first; ``specs`` (the manifest's output specs) turn an output's channel groups into virtual outputs
    ``NAME[a:b]``, each judged by the rows of its own kind. A task kind (``core.tasks``) is judged by its base
    kind's rows and by its task rows; its parameters are its spec's ``params``."""
    group_how: dict[str, str] = {}
    if specs and any(s.groups for s in specs.values()):
        reference, group_kinds = expand(reference, specs)
        candidate, _ = expand(candidate, specs)
        kinds = {**{k: v for k, v in (kinds or {}).items() if k in reference}, **group_kinds}
        group_how = {virtual_name(n, g): group_note(n, s, g) for n, s in specs.items() for g in s.groups}
    decided = decide(reference, labels) if kinds is None else \
        {**decide(reference, labels), **{k: (v, "from the manifest") for k, v in kinds.items()}}
    decided.update({k: (decided[k][0], how) for k, how in group_how.items() if k in decided})
    metrics: dict[str, dict[str, float]] = {}
    checks: list[Check] = []
    warnings: list[str] = []
    worst: dict[str, list[dict[str, Any]]] = {}
    for name, ref in reference.items():
        task = decided[name][0]
        kind = base_kind(task)
        if name not in candidate:
            checks.append(Check(f"output {name} present", 1, 0, False, "==", "bundle produced no such output"))
            continue
        try:
            m, cos, rel = _measure(ref, candidate[name], labels if kind == "scores" else None, kind)
        except ValueError as e:
            checks.append(Check(f"output {name} shape", 1, 0, False, "==", str(e)))
            continue
        metrics[name] = m
        worst[name] = _worst(kind, cos, rel)
        if m["nonfinite_samples"]:
            checks.append(Check(f"output {name} finite", 0, m["nonfinite_samples"], False, "==",
                                f"bundle produced NaN/Inf in output {name} for {int(m['nonfinite_samples'])} samples"))
        if m["reference_spread"] == 0.0 and len(ref) > 1:
            warnings.append(f"reference output '{name}' is identical for every holdout sample: parity cannot tell a "
                            "working bundle from a broken one on this data")
        if limits.max_abs_error is not None:
            checks.append(judge(f"parity.max_abs_error[{name}]", m["max_abs_error"], limits.max_abs_error, "<="))
        if kind in ("scores", "embedding") and limits.min_cosine is not None:
            # an embedding is used sample by sample: its worst sample counts; class scores are judged by their
            # decisions (agreement rows), so their cosine row guards the bulk (1st percentile)
            key = "sample_cosine_min" if kind == "embedding" else "sample_cosine_p1"
            checks.append(judge(f"parity.min_cosine[{name}]", m[key], limits.min_cosine, ">=",
                                "worst sample's cosine" if kind == "embedding" else
                                "1st percentile of the per-sample cosine"))
        if kind in ("regression", "state", "other") and limits.max_rel_error is not None:
            checks.append(judge(f"parity.max_rel_error[{name}]", m["rel_error_p99"], limits.max_rel_error, "<=",
                                "p99 of |Δ| relative to the output's range"))
        for key, limit in (("top1_agreement", limits.min_top1_agreement),
                           ("top5_agreement", limits.min_top5_agreement),
                           ("decision_agreement", limits.min_decision_agreement),
                           ("retrieval_agreement", limits.min_retrieval_agreement),
                           ("pixel_agreement", limits.min_pixel_agreement),
                           ("token_agreement", limits.min_token_agreement)):
            if limit is not None and key in m and RATE_KINDS[key] == kind:
                checks.append(_rate_check(f"parity.min_{key}", name, m, key, limit, limits, warnings))
        if kind == "dense" and "psnr_db" in m and limits.min_psnr_db is not None:
            checks.append(judge(f"parity.min_psnr_db[{name}]", m["psnr_db"], limits.min_psnr_db, ">="))
        if limits.max_accuracy_drop is not None and "accuracy_drop" in m:
            checks.append(_drop_check(name, m, limits.max_accuracy_drop, limits))
        if kind == "dense" and "mean_iou" in m and limits.min_mean_iou is not None:
            checks.append(judge(f"parity.min_mean_iou[{name}]", m["mean_iou"], limits.min_mean_iou, ">=",
                                "mean IoU of the class maps over the reference's classes"))
        if is_task(task):
            checks += _task_checks(name, task, ref, candidate[name], _task_params((specs or {}).get(name)), m,
                                   limits, warnings)
        checks += unapplied(name, kind, ref, m, limits, labels)
    n = len(next(iter(reference.values()))) if reference else 0
    return ParityOutcome(metrics=metrics, checks=checks, warnings=warnings, samples=n, kinds=decided, worst=worst)

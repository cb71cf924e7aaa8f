"""Task-level defects (issue 19), caught on the host (``edgepack check``) and by each bundle's own runner
(``run_bundle.py``), with 0 false alarms on correct bundles over 20 unseen holdouts — the same harness as
``test_parity_sensitivity.py`` (defective bundles disguised as the correct model: its golden outputs, source and
kinds, re-signed; only parity can catch them).

The models and data are ``ps_tasks.py``'s: a CTC head declared ``ctc`` (wrong on every time step but the first), a
YOLOv8 head declared ``detections:yolo`` (score channels crushed to two values, boxes exact) and a classifier
declared ``topk`` (+0.5 on one class: 2.5 % of the logits' range, 5 % of top-1 decisions flipped), built for ONNX
Runtime Mobile and OpenVINO (fp32; the classifier INT8, whose relative-error row would let the defect through).
The CTC head also comes in the PyTorch layout ``(T, B=1, C)``, declared ``ctc,batch_axis=1`` (every time step kept
whole, wip/parity-shapes). The classifier left undeclared is caught through kind inference from the output name ``logits`` (its top-1
agreement row applies).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ps_tasks import MODELS
from test_parity_sensitivity import collect_runners, disguise, host_check, start_runners, with_golden

from edgepack import pipeline
from edgepack.bundle import read_manifest
from edgepack.errors import EdgepackError
from edgepack.isolation import Workers

pytestmark = pytest.mark.slow  # real conversions and runs (~2-3 min)

BACKENDS = ("ort_mobile", "openvino")
TARGET = {("ort_mobile", "fp32"): "android-ort-fp32", ("openvino", "fp32"): "intel-openvino-fp32",
          ("ort_mobile", "int8"): "android-ort-int8", ("openvino", "int8"): "intel-openvino-int8"}
PRECISION = {"ctc": "fp32", "ctc_tbc": "fp32", "det": "fp32", "cls": "int8", "cls_undeclared": "int8"}
SAMPLES = 400  # ≥ 381: what a flawless fp32 result needs to prove a 0.99 rate (else INCONCLUSIVE)
SEEDS = 20
TASK_ROW = {"ctc": "parity.min_string_agreement", "ctc_tbc": "parity.min_string_agreement",
            "det": "parity.min_detection_", "cls": "parity.min_top1_agreement",
            "cls_undeclared": "parity.min_top1_agreement"}


def _reference(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _build(case: str, root: Path) -> dict[tuple[str, bool], Path | str]:
    """(backend, defective) → bundle folder (or why it failed); the defective bundles disguised as the correct."""
    model = case.replace("_undeclared", "")
    make, inp, data, out, kind = MODELS[model]
    work = root / case
    work.mkdir(parents=True)
    np.savez(work / "calibration.npz", **{inp: data(SAMPLES, 0)})
    np.savez(work / "holdout.npz", **{inp: data(SAMPLES, 100)})
    outputs = {} if case.endswith("_undeclared") else {out: kind}
    built: dict[tuple[str, bool], Path | str] = {}
    for defect in (False, True):
        onnx_path = make(work / f"{model}{'_defect' if defect else ''}.onnx", defect)
        targets = [TARGET[(b, PRECISION[case])] for b in BACKENDS]
        try:
            reports = pipeline.build(str(onnx_path), targets, calibration=str(work / "calibration.npz"),
                                     holdout=str(work / "holdout.npz"), out=work / ("defect" if defect else "ok"),
                                     outputs=outputs)
        except EdgepackError as e:
            for b in BACKENDS:
                built[(b, defect)] = f"build failed: {e.message}"
            continue
        by_target = {r.target: r for r in reports}
        for b in BACKENDS:
            r = by_target[TARGET[(b, PRECISION[case])]]
            built[(b, defect)] = Path(r.bundle) if r.bundle else f"build failed: {r.reason}"
    for b in BACKENDS:
        good, bad = built[(b, False)], built[(b, True)]
        if isinstance(good, Path) and isinstance(bad, Path):
            disguise(bad, good)
    return built


def _alarm_copies(case: str, backend: str, correct: Path, root: Path) -> list[Path]:
    """The correct bundle with 20 unseen holdouts (and the correct model's reference outputs), re-signed."""
    model = case.replace("_undeclared", "")
    _, inp, data, out, _ = MODELS[model]
    onnx_path = root / case / f"{model}.onnx"
    copies = []
    for seed in range(1, SEEDS + 1):
        x = data(SAMPLES, 1000 + seed)
        copies.append(with_golden(correct, root / case / "alarms" / f"{backend}-{seed}", {inp: x},
                                  {out: _reference(onnx_path, {inp: x})[out]}))
    return copies


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_defects")
    built: dict[str, dict[tuple[str, bool], Path | str]] = {}
    with Workers():
        for case in PRECISION:
            built[case] = _build(case, root)
        alarms: dict[tuple[str, str, int], Path] = {}
        for case in ("ctc", "det", "cls"):
            for b in BACKENDS:
                good = built[case][(b, False)]
                assert isinstance(good, Path), f"{case} {b}: {good}"
                for i, copy in enumerate(_alarm_copies(case, b, good, root)):
                    alarms[(case, b, i)] = copy
        jobs: dict[object, tuple[Path, str]] = {}
        for case, bundles in built.items():
            for (b, defect), bundle in bundles.items():
                if isinstance(bundle, Path):
                    jobs[("bundle", case, b, defect)] = (bundle, b)
        jobs.update({("alarm", *k): (v, k[1]) for k, v in alarms.items()})
        procs = start_runners(jobs)
        host = {key: host_check(bundle) for key, (bundle, _) in jobs.items()}
    runner = collect_runners(procs, jobs)
    yield {"built": built, "host": host, "runner": runner}
    shutil.rmtree(root, ignore_errors=True)


def _assert_caught(experiment, case: str) -> None:
    problems = []
    for b in BACKENDS:
        bundle = experiment["built"][case][(b, True)]
        assert isinstance(bundle, Path), f"{case} {b}: {bundle}"
        assert read_manifest(bundle).kinds == read_manifest(experiment["built"][case][(b, False)]).kinds
        for who in ("host", "runner"):
            v = experiment[who][("bundle", case, b, True)]
            failing = [r[0] for r in (v.parity or {}).get("rows", []) if not r[1]]
            if v.outcome != "caught" or not any(r.startswith(TASK_ROW[case]) for r in failing):
                problems.append(f"{case} × {b} × {who}: {v.outcome} ({v.detail}); failing rows {failing}")
    assert not problems, "\n".join(problems)


def test_ctc_wrong_on_every_step_but_the_first_is_caught(experiment):
    _assert_caught(experiment, "ctc")


def test_detector_with_crushed_score_channels_is_caught(experiment):
    _assert_caught(experiment, "det")


def test_classifier_flipping_5_percent_of_top1_is_caught(experiment):
    _assert_caught(experiment, "cls")
    v = experiment["host"][("bundle", "cls", "ort_mobile", True)]
    rows = {r[0]: r for r in v.parity["rows"]}
    assert rows["parity.max_rel_error[logits]"][1] is not False if "parity.max_rel_error[logits]" in rows else True
    assert abs(v.parity["metrics"]["logits"]["top1_agreement"] - 0.95) < 0.02  # the injected 5 %


def test_time_first_ctc_wrong_on_every_step_but_the_first_is_caught(experiment):
    _assert_caught(experiment, "ctc_tbc")


def test_undeclared_logits_flipping_5_percent_of_top1_are_caught(experiment):
    _assert_caught(experiment, "cls_undeclared")


def test_no_false_alarms_on_correct_bundles(experiment):
    alarms = []
    for who in ("host", "runner"):
        for key, v in experiment[who].items():
            correct = key[0] == "alarm" or (key[0] == "bundle" and not key[3] and key[1] in ("ctc", "det", "cls"))
            if correct and v.outcome != "passed":
                alarms.append(f"{key} × {who}: {v.outcome} ({v.detail})")
    n = sum(1 for k in experiment["host"] if k[0] == "alarm")
    assert n == 3 * len(BACKENDS) * SEEDS
    assert not alarms, "\n".join(alarms)
    for key, v in experiment["host"].items():  # host and device compute the same verdict and figures
        r = experiment["runner"][key]
        if v.parity and r.parity:
            assert v.parity["rows"] == r.parity["rows"], key

"""The harness proves itself: a fixed catalogue of injected defects must be CAUGHT on every backend that runs here,
by the host (``edgepack check``: exit 1, or 2 with an error line; never a pass, never a traceback) and by the
bundle's own runner (``run_bundle.py``: never a pass; Core ML's runner cannot run on Linux: "not run"), and correct
fp32/fp16/int8 bundles must pass (no false alarms).

How a defect is injected (realistically): the bundle is BUILT by ``pipeline.build`` from a defective version of the
source model (``ps_models.Defective``: the correct model inside a wrapper, or a perturbed state dict), then its
``golden/outputs.npz`` is replaced by the CORRECT model's golden outputs, its manifest's ``source`` by the correct
model's, and every file entry re-signed, so the bundle claims to be the correct model and integrity passes: only
parity can catch it. Byte corruption is applied to a correct bundle's largest model file (then re-signed).

Off-by-one batching: with batch 1 a wrapper cannot see another sample, and dynamic batch is refused by the TFLite
(PyTorch) and Core ML converters; so the off-by-one models are built with a FIXED batch of 8
(``--input input=8x1x32x32``, 400 holdout samples = 50 calls): inside each batch, sample i is answered with sample
i-1's output (sample 0 with its own). That is what a batching bug in a deployed graph looks like, and it needs no
change to edgepack's runners.

Models are trained at test time (``ps_train.py``, its own process): the digits CNN (session fixture), the
multi-output detector (softmax scores + box/landmark regression heads) and a 3-channel classifier on colourized
digits with asymmetric channels (R = x, G = 0.5 x, B = -x) fed from an .npz, for the colour-order and layout defects.

Status: opt-in (``EDGEPACK_SENSITIVITY=1 pytest tests/parity_sensitivity``; tests/conftest.py leaves it out of the
default run) until it is fast enough for CI and the 20-seed false-alarm run has been made: see issue 10's note.

Environment knobs: ``EDGEPACK_PS_SEEDS`` (false-alarm CNN seeds, default 5 in CI; 20 for the full run) and
``EDGEPACK_PS_SLOW_SEEDS`` (seeds on the slowest backends, ``SLOW_BACKENDS``; default 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ps_catalogue import CASES, DEFECTS

from edgepack import pipeline
from edgepack.bundle import FileEntry, read_manifest
from edgepack.core.integrity import sha256_file
from edgepack.errors import EdgepackError
from edgepack.isolation import Workers
from edgepack.signature import TensorSpec

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BACKENDS = ("ort_mobile", "tflite", "openvino", "coreml")
FP32 = {"ort_mobile": "android-ort-fp32", "tflite": "android-tflite-fp32", "openvino": "intel-openvino-fp32",
        "coreml": "ios-coreml-fp32"}
FP16 = {"ort_mobile": "android-ort-fp16", "tflite": "android-tflite-fp16", "openvino": "intel-openvino-fp16",
        "coreml": "ios-coreml-fp16"}
INT8 = {"ort_mobile": "android-ort-int8", "tflite": "android-tflite-int8", "openvino": "intel-openvino-int8",
        "coreml": "ios-coreml-w8"}
NO_DEVICE_RUNTIME = {"coreml"}  # MLModel.predict exists only on macOS/iOS: its bundle runner reports "not run"
# Default CI: 5 seeds (2 on the slowest backends); the full false-alarm run is EDGEPACK_PS_SEEDS=20
# EDGEPACK_PS_SLOW_SEEDS=20 (each seed trains a CNN, ~20-45 s on a loaded 2-core host, plus an 8-target build).
SEEDS = int(os.environ.get("EDGEPACK_PS_SEEDS", "5"))
SLOW_BACKENDS: tuple[str, ...] = ("tflite", "coreml")  # slowest conversion / slowest host check
SLOW_SEEDS = int(os.environ.get("EDGEPACK_PS_SLOW_SEEDS", "2"))
REGRESSION = {"boxes": "regression", "landmarks": "regression"}

pytestmark = pytest.mark.slow


def kinds_ready() -> bool:
    import inspect

    return Path("/tmp/kinds-ready").exists() and "outputs" in inspect.signature(pipeline.build).parameters


# ---------------------------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    outcome: str  # "caught" | "passed" | "not run" | "traceback" | "not built"
    detail: str = ""

    @property
    def symbol(self) -> str:
        return {"caught": "caught", "passed": "PASSED", "not run": "not run", "traceback": "TRACEBACK",
                "not built": "not built"}[self.outcome]


def host_check(bundle: Path) -> Verdict:
    """``edgepack check BUNDLE`` in this process (the active Workers block stays warm)."""
    from typer.testing import CliRunner

    from edgepack.cli import app

    res = CliRunner().invoke(app, ["check", str(bundle)])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return Verdict("traceback", f"{type(res.exception).__name__}: {res.exception}")
    text = res.output + (getattr(res, "stderr", "") if getattr(res, "stderr_bytes", None) else "")
    if res.exit_code == 0:
        return Verdict("passed", "exit 0")
    if res.exit_code == 1:
        failing = [ln.strip() for ln in text.splitlines() if "✗" in ln or "FAIL" in ln.upper()]
        return Verdict("caught", "exit 1" + (f": {failing[0][:90]}" if failing else ""))
    if res.exit_code == 2 and "error" in text.lower():
        line = next(ln for ln in text.splitlines() if "error" in ln.lower())
        return Verdict("caught", f"exit 2: {line.strip()[:100]}")
    return Verdict("traceback", f"exit {res.exit_code} without an error line: {text[-200:]}")


def runner_check(bundle: Path, backend: str) -> Verdict:
    """The bundle's own ``run_bundle.py`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), "--repeats", "1", "--warmup", "0"],
                          capture_output=True, text=True, cwd="/", timeout=600)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = None
    if result is not None and result.get("passed") and proc.returncode == 0:
        return Verdict("passed", "exit 0")
    if proc.returncode == 2 and result is not None and "runtime unavailable" in str(result.get("error", "")):
        if backend in NO_DEVICE_RUNTIME:
            return Verdict("not run", "runtime unavailable on Linux")
        return Verdict("traceback", f"runtime unavailable: {result.get('error')}")  # should run here
    if result is None:
        return Verdict("caught", f"exit {proc.returncode}, crashed: {proc.stderr.strip().splitlines()[-1][:100]}"
                       if proc.stderr.strip() else f"exit {proc.returncode}, no output")
    failing = [c["name"] for c in result.get("parity", {}).get("checks", []) if not c.get("passed")]
    return Verdict("caught", f"exit {proc.returncode}: " + (", ".join(failing[:3]) or str(result.get("error", ""))))


# ---------------------------------------------------------------------------------------------- injection


def resign(bundle: Path, **update) -> None:
    """Re-sign every file entry of the manifest (and apply ``update``), as a forger would."""
    m = read_manifest(bundle)
    files = [FileEntry(path=e.path, size=(bundle / e.path).stat().st_size, sha256=sha256_file(bundle / e.path))
             for e in m.files]
    (bundle / "manifest.json").write_text(m.model_copy(update={"files": files, **update}).to_json())


def disguise(bundle: Path, correct: Path) -> None:
    """Make a defective bundle claim to be the correct model: its golden outputs and source, re-signed."""
    shutil.copyfile(correct / "golden" / "outputs.npz", bundle / "golden" / "outputs.npz")
    resign(bundle, source=read_manifest(correct).source)


def corrupt_bytes(correct: Path, dest: Path) -> Path:
    """A copy of a correct bundle with 1 KiB of seeded random bytes in the middle of its largest model file."""
    shutil.copytree(correct, dest)
    files = pipeline.model_files(dest, read_manifest(dest).artifact)
    biggest = dest / max(files, key=lambda f: (dest / f).stat().st_size)
    data = bytearray(biggest.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 1024] = np.random.default_rng(0).bytes(1024)
    biggest.write_bytes(bytes(data))
    resign(dest)
    return dest


# ---------------------------------------------------------------------------------------------- the experiment


@dataclass
class Results:
    backends: list[str]
    defects: dict[tuple[str, str, str], tuple[Verdict, Verdict]] = field(default_factory=dict)
    alarms: dict[tuple[str, str, str], tuple[Verdict, Verdict]] = field(default_factory=dict)  # (backend, kind, what)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _build(model: str, weights: Path, targets: dict[str, str], out: Path, *, calibration: str, channels: int = 1,
           batch: int = 1, regression: bool = False) -> dict[str, Path | str]:
    """Build every target in one pipeline.build call; backend → bundle folder (or the error that stopped it)."""
    kwargs = {"outputs": REGRESSION} if regression and kinds_ready() else {}
    common = dict(weights=str(weights), inputs=(TensorSpec("input", (batch, channels, 32, 32)),),
                  calibration=calibration, out=out, **kwargs)
    backend_of = {t: b for b, t in targets.items()}
    try:
        reports = pipeline.build(model, list(targets.values()), **common)
    except EdgepackError:  # one backend's conversion stops the whole call: salvage the others one by one
        reports = []
        failed: dict[str, Path | str] = {}
        for b, t in targets.items():
            try:
                reports += pipeline.build(model, [t], **common)
            except EdgepackError as e:
                failed[b] = f"build failed: {e.message}"
        return {**{backend_of[r.target]: Path(r.bundle) for r in reports}, **failed}
    return {backend_of[r.target]: Path(r.bundle) for r in reports}


def _run_runners(jobs: list[tuple[object, Path, str]]) -> dict[object, Verdict]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(runner_check, bundle, backend) for key, bundle, backend in jobs}
    return {k: f.result() for k, f in futures.items()}


@pytest.fixture(scope="module")
def experiment(trained_digits, tmp_path_factory, sensitivity_table_path) -> Results:
    targets = pipeline.resolve_targets(list(FP32.values()))
    available = [b for b, t in zip(FP32, targets) if not t.backend.missing()]
    if not available:
        pytest.skip("no backend installed")
    res = Results(available)
    root = tmp_path_factory.mktemp("parity_sensitivity")
    models = root / "models"
    t_start = time.perf_counter()
    train = subprocess.Popen([sys.executable, str(HERE / "ps_train.py"), "--cnn", str(trained_digits / "cnn.pt"),
                              "--out", str(models), "--seeds", str(SEEDS)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    fp32 = {b: FP32[b] for b in available}
    fp16 = {b: FP16[b] for b in available}
    int8 = {b: INT8[b] for b in available}
    digits_py = f"{REPO}/examples/digits.py"
    ps_py = f"{HERE}/ps_models.py"
    spec = {  # model → (correct factory, channels, calibration)
        "cnn": (f"{digits_py}:make_cnn", 1, "digits"),
        "detector": (f"{digits_py}:make_detector", 1, "digits"),
        "rgb": (f"{ps_py}:make_rgb", 3, str(models / "rgb.npz")),
    }
    runner_jobs: list[tuple[object, Path, str]] = []
    host: dict[object, Verdict] = {}
    with Workers():
        # correct CNN fp32 and int8 bundles while the other models train
        t0 = time.perf_counter()
        correct = {"cnn": _build(spec["cnn"][0], trained_digits / "cnn.pt", fp32, root / "correct", calibration="digits")}
        int8_bundles = _build(spec["cnn"][0], trained_digits / "cnn.pt", int8, root / "int8", calibration="digits")
        out, _ = train.communicate(timeout=1800)
        assert train.returncode == 0, out[-3000:]
        info = json.loads((models / "info.json").read_text())
        res.notes.append(f"trained: detector/rgb/{SEEDS} seeds {info['timings_s']}, "
                         f"rgb holdout accuracy {info['rgb_holdout_accuracy']:.3f}, noise on {info['noise_layer']}")
        weights = {"cnn": trained_digits / "cnn.pt", "detector": models / "detector.pt", "rgb": models / "rgb.pt"}
        for m in ("detector", "rgb"):
            correct[m] = _build(spec[m][0], weights[m], fp32, root / "correct" / m, calibration=spec[m][2],
                                channels=spec[m][1], regression=m == "detector")
        res.timings["correct builds (incl. waiting for training)"] = time.perf_counter() - t0

        # defective bundles
        t0 = time.perf_counter()
        defective: dict[tuple[str, str, str], Path | str] = {}
        for m, d in CASES:
            factory, channels, calibration = spec[m]
            if d == "corrupt_bytes":
                for b in available:
                    good = correct[m][b]
                    defective[(m, d, b)] = (corrupt_bytes(good, root / "defects" / f"{m}__{d}" / b)
                                            if isinstance(good, Path) else f"correct bundle missing: {good}")
                continue
            if d == "weight_noise":
                built = _build(factory, models / "defects" / f"{m}__{d}.pt", fp32, root / "defects" / f"{m}__{d}",
                               calibration=calibration, channels=channels, regression=m == "detector")
            else:
                built = _build(f"{ps_py}:{m}__{d}", models / "defects" / f"{m}__{d}.pt", fp32,
                               root / "defects" / f"{m}__{d}", calibration=calibration, channels=channels,
                               batch=8 if d == "off_by_one" else 1, regression=m == "detector")
            for b in available:
                got = built.get(b, "not built")
                if isinstance(got, Path) and isinstance(correct[m].get(b), Path):
                    disguise(got, correct[m][b])
                defective[(m, d, b)] = got
        res.timings["defective builds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        for key, bundle in defective.items():
            if isinstance(bundle, Path):
                host[key] = host_check(bundle)
                runner_jobs.append((key, bundle, key[2]))
            else:
                host[key] = Verdict("not built", str(bundle))
        res.timings["host checks of defective bundles"] = time.perf_counter() - t0

        # false alarms: the correct fp32 bundles (edgepack check), int8 CNN, seeds fp32 + fp16
        t0 = time.perf_counter()
        alarm_bundles: dict[tuple[str, str, str], Path | str] = {}
        for m in correct:
            for b in available:
                alarm_bundles[(b, "fp32", f"{m} (trained)")] = correct[m][b]
        for b in available:
            alarm_bundles[(b, "int8", "cnn (trained)")] = int8_bundles[b]
        det16 = _build(spec["detector"][0], weights["detector"], fp16, root / "fp16" / "detector",
                       calibration="digits", regression=True)
        for b in available:
            alarm_bundles[(b, "fp16", "detector (trained)")] = det16[b]
        for s in range(1, SEEDS + 1):
            chosen = {b: t for b, t in {**{f"{b}/fp32": FP32[b] for b in available},
                                         **{f"{b}/fp16": FP16[b] for b in available}}.items()
                      if b.split("/")[0] not in SLOW_BACKENDS or s <= SLOW_SEEDS}
            built = _build(spec["cnn"][0], models / "seeds" / f"cnn_seed{s}.pt", chosen, root / "seeds" / str(s),
                           calibration="digits")
            for key, bundle in built.items():
                b, prec = key.split("/")
                alarm_bundles[(b, prec, f"cnn seed {s}")] = bundle
        res.timings["false-alarm builds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for key, bundle in alarm_bundles.items():
            if isinstance(bundle, Path):
                # the seeds' build already ran host parity (same evaluate() as check): read its verdict from
                # report.json; the trained models' bundles go through `edgepack check`
                if key[2].startswith("cnn seed"):
                    status = json.loads((bundle / "report.json").read_text())["status"]
                    host[("alarm", *key)] = Verdict("passed" if status == "passed" else "caught", f"build: {status}")
                else:
                    host[("alarm", *key)] = host_check(bundle)
                runner_jobs.append((("alarm", *key), bundle, key[0]))
            else:
                host[("alarm", *key)] = Verdict("not built", str(bundle))
        res.timings["host checks of correct bundles"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runner = _run_runners(runner_jobs)
    res.timings["bundle runners (2 at a time)"] = time.perf_counter() - t0
    for key, v in host.items():
        r = runner.get(key, Verdict("not built", v.detail))
        if key[0] == "alarm":
            res.alarms[key[1:]] = (v, r)
        else:
            res.defects[key] = (v, r)
    res.timings["total"] = time.perf_counter() - t_start
    sensitivity_table_path.write_text(table(res))
    return res


# ---------------------------------------------------------------------------------------------- the table


def _caught_host(v: Verdict) -> bool:
    return v.outcome == "caught"


def _caught_runner(v: Verdict, backend: str) -> bool:
    return v.outcome == "caught" or (backend in NO_DEVICE_RUNTIME and v.outcome == "not run")


def table(res: Results) -> str:
    lines = []
    head = f"{'model':9} {'defect':16} " + " ".join(f"{b:>22}" for b in res.backends)
    lines += ["Injected defects: host (edgepack check) / bundle runner (run_bundle.py)", head, "-" * len(head)]
    for m, d in CASES:
        cells = []
        for b in res.backends:
            h, r = res.defects[(m, d, b)]
            cells.append(f"{h.symbol + ' / ' + r.symbol:>22}")
        lines.append(f"{m:9} {d:16} " + " ".join(cells))
    n = len(res.defects)
    host_caught = sum(_caught_host(h) for h, _ in res.defects.values())
    run_cells = [(r, k[2]) for k, (_, r) in res.defects.items()]
    run_caught = sum(r.outcome == "caught" for r, _ in run_cells)
    not_run = sum(r.outcome == "not run" for r, _ in run_cells)
    lines += ["", f"catch rate: host {host_caught}/{n} ({host_caught / n:.0%}); bundle runner {run_caught}/"
                  f"{n - not_run} run ({run_caught / max(1, n - not_run):.0%}), {not_run} not run (Core ML on Linux)"]
    lines += ["", "False alarms on correct bundles (host alarms / runner alarms / bundles):"]
    groups: dict[tuple[str, str], list[tuple[Verdict, Verdict]]] = {}
    for (b, prec, _), vv in res.alarms.items():
        groups.setdefault((b, prec), []).append(vv)
    for (b, prec), vv in sorted(groups.items()):
        ha = sum(h.outcome != "passed" for h, _ in vv)
        ra = sum(r.outcome not in ("passed", "not run") for _, r in vv)
        nr = sum(r.outcome == "not run" for _, r in vv)
        lines.append(f"  {b:11} {prec:5} host {ha}/{len(vv)}  runner {ra}/{len(vv) - nr}"
                     + (f" ({nr} not run)" if nr else ""))
    total = len(res.alarms)
    ha = sum(h.outcome != "passed" for h, _ in res.alarms.values())
    ra = sum(r.outcome not in ("passed", "not run") for _, r in res.alarms.values())
    lines.append(f"false-alarm rate: host {ha}/{total} ({ha / max(1, total):.1%}), runner {ra}/"
                 f"{sum(r.outcome != 'not run' for _, r in res.alarms.values())}")
    bad = [f"  {k}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
           for k, (h, r) in res.alarms.items() if h.outcome != "passed" or r.outcome not in ("passed", "not run")]
    missed = [f"  {k}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
              for k, (h, r) in res.defects.items() if not (_caught_host(h) and _caught_runner(r, k[2]))]
    if missed:
        lines += ["", "NOT caught:", *missed]
    if bad:
        lines += ["", "False alarms:", *bad]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.timings.items()),
              f"Output kinds declared for the detector: {kinds_ready()}", *res.notes, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("model", "defect"), CASES, ids=[f"{m}-{d}" for m, d in CASES])
def test_defect_is_caught(experiment, model, defect, backend):
    if backend not in experiment.backends:
        pytest.skip(f"backend {backend} not installed")
    host, runner = experiment.defects[(model, defect, backend)]
    if host.outcome == "not built":  # the converter cannot build this defective model: nothing to check
        pytest.xfail(f"defect not injectable on {backend}: {host.detail}")
    assert host.outcome == "caught", f"edgepack check did not catch {DEFECTS[defect][0]}: {host.detail}"
    assert _caught_runner(runner, backend), f"run_bundle.py did not catch {DEFECTS[defect][0]}: {runner.detail}"
    if backend in NO_DEVICE_RUNTIME:
        assert runner.outcome == "not run"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_correct_bundles_pass(experiment, backend, precision):
    if backend not in experiment.backends:
        pytest.skip(f"backend {backend} not installed")
    rows = {k: v for k, v in experiment.alarms.items() if k[0] == backend and k[1] == precision}
    assert rows
    alarms = [f"{k[2]}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
              for k, (h, r) in rows.items() if h.outcome != "passed" or r.outcome not in ("passed", "not run")]
    assert not alarms, "false alarms:\n" + "\n".join(alarms)
    if backend in NO_DEVICE_RUNTIME:
        assert all(r.outcome == "not run" for _, r in rows.values())


def test_summary(experiment, sensitivity_table_path):
    text = sensitivity_table_path.read_text()
    assert "catch rate" in text
    built = {k: v for k, v in experiment.defects.items() if v[0].outcome != "not built"}
    assert all(h.outcome == "caught" and _caught_runner(r, k[2]) for k, (h, r) in built.items())
    assert all(h.outcome == "passed" and r.outcome in ("passed", "not run") for h, r in experiment.alarms.values())

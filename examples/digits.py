"""Example models trained on scikit-learn's digits (the `calibration/digits.toml` recipe's preprocessing).

Factories for `edgepack build examples/digits.py:make_cnn --weights ...`:
* ``make_cnn``     a small VGG-style CNN (~0.3 M parameters)
* ``make_dwcnn``   a depthwise-separable CNN (MobileNet-style blocks), the shape that trips default quantizers
* ``make_dwsilu``  a depthwise/SiLU residual network (inverted residual blocks, MobileNetV2/EfficientNet-lite style)
* ``make_resnet``  a ResNet-shaped model (~1.2 M parameters) for latency benchmarks
* ``make_detector`` a multi-output model (depthwise-separable SiLU trunk, ~0.2 M parameters) returning a dict
  ``{"scores", "boxes", "landmarks"}``: softmax digit probabilities (N, 10), the ink bounding box (N, 4) and five
  ink centroids (N, 10), both regressions normalised to [0, 1] (see ``detector_targets``)

Training uses only images outside the recipe's calibration and holdout splits; it then prints metrics on the holdout:

    python examples/digits.py --model cnn --out dist/example        # writes cnn.pt + cnn.onnx
    python examples/digits.py --model detector --out dist/example   # writes detector.pt + detector.onnx
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


def _dw_block(cin: int, cout: int, stride: int, act: type[nn.Module] = nn.ReLU6) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), act(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), act(),
    )


def make_dwcnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        _dw_block(32, 64, 1), _dw_block(64, 128, 2), _dw_block(128, 128, 1), _dw_block(128, 256, 2),
        _dw_block(256, 256, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


class _InvertedSiLU(nn.Module):
    """MobileNetV2/EfficientNet-lite block: 1x1 expand, 3x3 depthwise, SiLU, 1x1 linear projection, residual add."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def make_dwsilu() -> nn.Module:
    """A depthwise/SiLU residual network (inverted residual blocks, ~0.1 M parameters): the phone-style shape whose
    default INT8 builds lose agreement (issue 11)."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.SiLU(),
        _InvertedSiLU(24, 24, 1), _InvertedSiLU(24, 32, 2), _InvertedSiLU(32, 32, 1), _InvertedSiLU(32, 48, 2),
        _InvertedSiLU(48, 48, 1), _InvertedSiLU(48, 64, 2), _InvertedSiLU(64, 64, 1),
        nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
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


class Detector(nn.Module):
    """Digit "detector": one trunk, three heads. ``forward`` returns a dict, so edgepack (and the ONNX export) name
    the outputs ``scores``, ``boxes`` and ``landmarks``, in that order.

    * ``scores``    (N, 10) softmax over the digits (rows sum to 1); ``heads`` gives the logits for training
    * ``boxes``     (N, 4)  ink bounding box x0, y0, x1, y1 in [0, 1] (sigmoid)
    * ``landmarks`` (N, 10) five ink centroids (x, y) in [0, 1]: top-left, top-right, bottom-left, bottom-right
      quadrant, then the whole image (sigmoid)
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),      # 16x16
            _dw_block(16, 32, 1, nn.SiLU), _dw_block(32, 64, 2, nn.SiLU),               # 8x8
            _dw_block(64, 64, 1, nn.SiLU), _dw_block(64, 96, 2, nn.SiLU),               # 4x4: keeps where the ink is
            nn.Flatten(), nn.Linear(96 * 4 * 4, 128), nn.SiLU(),
        )
        self.cls = nn.Linear(128, 10)
        self.box = nn.Linear(128, 4)
        self.landmark = nn.Linear(128, 10)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits (before softmax), boxes, landmarks."""
        f = self.trunk(x)
        return self.cls(f), torch.sigmoid(self.box(f)), torch.sigmoid(self.landmark(f))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, boxes, landmarks = self.heads(x)
        return {"scores": torch.softmax(logits, dim=-1), "boxes": boxes, "landmarks": landmarks}


def make_detector() -> nn.Module:
    return Detector()


FACTORIES = {"cnn": make_cnn, "dwcnn": make_dwcnn, "dwsilu": make_dwsilu, "resnet": make_resnet,
             "detector": make_detector}
OUTPUT_NAMES = {"detector": ["scores", "boxes", "landmarks"]}  # ONNX output names; single-output models: "logits"
# Training threads (default 2). The detector's ops are tiny: a second intra-op thread only adds synchronisation, and on
# a loaded 2-core machine that made its training 10-25x slower (~100-250 s instead of ~10 s with one thread).
THREADS = {"detector": 1, "dwsilu": 1}


def detector_targets(images) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets of preprocessed images (N, 1, H, W) → boxes (N, 4), landmarks (N, 10), float32 in [0, 1].

    Ink: the pixels above each image's midpoint between its min and max. ``boxes`` is the ink's bounding box in pixel
    edges, x0 = first ink column / W, x1 = (last ink column + 1) / W (same for y). ``landmarks`` are intensity-weighted
    centroids of the ink, at pixel centres ((col + 0.5) / W), weight = pixel value minus the image's min, for the
    top-left, top-right, bottom-left and bottom-right quadrants (H/2, W/2 halves) and then the whole image, laid out
    x, y, x, y, ... A quadrant without ink gets its own centre; an image without ink the box (0, 0, 1, 1).
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    x = x.reshape(len(x), *x.shape[-2:])  # one channel
    n, h, w = x.shape
    lo, hi = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    ink = x > (lo + hi) / 2
    cols, rows = ink.any(dim=1), ink.any(dim=2)  # (N, W), (N, H)
    ar_w, ar_h = torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32)

    def extent(mask: torch.Tensor, ar: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.where(mask, ar, float(size)).amin(dim=1)
        last = torch.where(mask, ar, -1.0).amax(dim=1)
        empty = ~mask.any(dim=1)
        return torch.where(empty, 0.0, first / size), torch.where(empty, 1.0, (last + 1) / size)

    x0, x1 = extent(cols, ar_w, w)
    y0, y1 = extent(rows, ar_h, h)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)

    weight = torch.where(ink, x - lo, 0.0)  # (N, H, W)
    cx, cy = (ar_w + 0.5) / w, (ar_h + 0.5) / h
    points = []
    for r0, r1, c0, c1 in ((0, h // 2, 0, w // 2), (0, h // 2, w // 2, w), (h // 2, h, 0, w // 2),
                           (h // 2, h, w // 2, w), (0, h, 0, w)):
        wq = weight[:, r0:r1, c0:c1]
        total = wq.sum(dim=(1, 2))
        px = (wq.sum(dim=1) * cx[c0:c1]).sum(dim=1) / total.clamp_min(1e-12)
        py = (wq.sum(dim=2) * cy[r0:r1]).sum(dim=1) / total.clamp_min(1e-12)
        empty = total <= 0
        points += [torch.where(empty, (c0 + c1) / (2 * w), px), torch.where(empty, (r0 + r1) / (2 * h), py)]
    return boxes, torch.stack(points, dim=1)


def _recipe_data(recipe: str):
    """Preprocessed digits, labels and the recipe's (calibration, holdout, rest) index splits."""
    import numpy as np

    from edgepack import calibration
    from edgepack.config import load_recipe

    rec = load_recipe(recipe)
    raw, labels, _ = calibration._digits(rec.preprocess)
    x = calibration._normalize(raw, rec.preprocess)
    return torch.from_numpy(x), torch.from_numpy(np.asarray(labels)), calibration.split_indices(len(x), rec)


def training_data(recipe: str = "digits"):
    """Preprocessed digits outside the recipe's calibration and holdout splits, and their labels."""
    x, y, (_, _, rest) = _recipe_data(recipe)
    return x[rest], y[rest]


def holdout_data(recipe: str = "digits"):
    """The recipe's holdout split (never trained on), for the metrics ``main`` prints."""
    x, y, (_, hold, _) = _recipe_data(recipe)
    return x[hold], y[hold]


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each image n by (dy[n], dx[n]) pixels, filling with its background (its min) instead of wrapping
    around: the digits touch the top and bottom rows, and a wrapped-around stroke would be ink in the wrong place."""
    n, c, h, w = x.shape
    p = int(max(dy.abs().max(), dx.abs().max()))
    padded = x.amin(dim=(1, 2, 3), keepdim=True).expand(n, c, h + 2 * p, w + 2 * p).clone()
    padded[..., p:p + h, p:p + w] = x
    rows = torch.arange(h) + p - dy[:, None]  # output row i is input row i - dy
    cols = torch.arange(w) + p - dx[:, None]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


REG_WEIGHT = 50.0  # detector loss: cross-entropy on the logits + REG_WEIGHT * (MSE boxes + MSE landmarks)


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
        if name == "detector":  # per-image shifts, and regression targets of the shifted images, once per epoch
            shifts = torch.randint(-2, 3, (len(x), 2), generator=g)
            xe = _shift(x, shifts[:, 0], shifts[:, 1])
            boxes, landmarks = detector_targets(xe)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            if name == "detector":
                logits, pb, pl = model.heads(xe[idx])
                loss = (nn.functional.cross_entropy(logits, y[idx]) + REG_WEIGHT * (
                    nn.functional.mse_loss(pb, boxes[idx]) + nn.functional.mse_loss(pl, landmarks[idx])))
            else:
                xb = x[idx]
                shift = torch.randint(-2, 3, (2,), generator=g)  # light augmentation: small translations
                xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
                loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def evaluate(name: str, model: nn.Module) -> str:
    """Metrics on the recipe's holdout split: top-1 accuracy; for the detector also mean |error| of the regressions."""
    x, y = holdout_data()
    with torch.no_grad():
        out = model(x)
    if name != "detector":
        return f"holdout accuracy {(out.argmax(1) == y).float().mean().item():.1%} ({len(y)} images)"
    boxes, landmarks = detector_targets(x)
    acc = (out["scores"].argmax(1) == y).float().mean().item()
    return (f"holdout ({len(y)} images): accuracy {acc:.1%}, mean |error| boxes "
            f"{(out['boxes'] - boxes).abs().mean().item():.4f}, landmarks "
            f"{(out['landmarks'] - landmarks).abs().mean().item():.4f} (normalised coordinates; x 32 for pixels)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(FACTORIES), default="cnn")
    ap.add_argument("--out", type=Path, default=Path("dist/example"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--onnx", action="store_true", help="also export <model>.onnx")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.set_num_threads(THREADS.get(args.model, 2))
    model = train(args.model, args.epochs)
    weights = args.out / f"{args.model}.pt"
    torch.save(model.state_dict(), weights)
    print(f"trained {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params) "
          f"in {time.perf_counter() - t0:.1f} s → {weights}")
    print(evaluate(args.model, model))
    if args.onnx:
        path = args.out / f"{args.model}.onnx"
        torch.onnx.export(model, (torch.zeros(1, 1, 32, 32),), str(path), dynamo=True, input_names=["input"],
                          output_names=OUTPUT_NAMES.get(args.model, ["logits"]), external_data=False)
        print(f"exported {path}")


if __name__ == "__main__":
    main()

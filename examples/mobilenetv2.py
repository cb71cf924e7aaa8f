"""A plain-PyTorch MobileNetV2 (width 1.0, ~3.5 M parameters) sized for 32x32 inputs, for build-time benchmarks.

Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection), ReLU6, the ImageNet layer table of
Sandler et al. (2018). The stem and the second stage use stride 1 instead of 2, so the bundled `digits`
calibration recipe's 1x1x32x32 input ends at 4x4 before global pooling instead of being reduced to 1x1;
strides do not change the parameter count (3.50 M at 1000 classes, 1 input channel).

    edgepack build examples/mobilenetv2.py:make_mobilenetv2 --weights mnv2.pt --input input=1x1x32x32 \\
        -t android-ort-int8 -c digits
    python examples/mobilenetv2.py --out dist/example/mobilenetv2.pt   # seeded random init, prints the count
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

INPUT = "input=1x1x32x32"

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat); ImageNet strides are
# 2 (stem), 1, 2, 2, 2, 1, 2, 1: here the stem and the 24-channel stage keep stride 1 for 32x32 inputs.
STEM_STRIDE = 1
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))                        # expand
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),         # depthwise
                   _conv_bn(hidden, cout, 1, 1, act=False)]                    # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 1, width: float = 1.0,
                 last_channel: int = 1280, dropout: float = 0.2) -> None:
        super().__init__()
        cin = _divisible(32 * width)
        last = _divisible(last_channel * max(1.0, width))
        layers: list[nn.Module] = [_conv_bn(in_channels, cin, 3, STEM_STRIDE)]
        for t, c, n, s in SETTINGS:
            cout = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def make_mobilenetv2(num_classes: int = 1000, in_channels: int = 1) -> nn.Module:
    """MobileNetV2, width 1.0, for NCHW inputs of at least 8x8 (1x1x32x32 for the digits recipe)."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="save a seeded random-init state dict here (for --weights)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--in-channels", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = make_mobilenetv2(args.num_classes, args.in_channels).eval()
    n = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        y = model(torch.zeros(1, args.in_channels, 32, 32))
    print(f"MobileNetV2: {n:,} parameters ({n / 1e6:.2f} M), 1x{args.in_channels}x32x32 -> {tuple(y.shape)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.out)
        print(f"saved state dict → {args.out}")


if __name__ == "__main__":
    main()

"""Test-only torch modules for the parity-sensitivity suite: a small 3-channel digits classifier, a small 1-channel
one (the false-alarm seeds) and the DEFECTIVE versions of the example models (a wrapper around the correct model that
injects one output defect; input defects are injected in the bundle's golden inputs, see ps_catalogue.py).

Imported by path (``ps_models.py:<factory>``) in edgepack's torch worker and by ``ps_train.py``; never by pytest's
own process (no torch there).

Factories are named ``<model>__<defect>`` (``cnn__zero_output``, ``detector__swap_outputs``, ``rgb__rgb_bgr``, ...);
their state dicts are the correct model's weights under ``m.`` plus the defect's buffers, written by ``ps_train.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ps_catalogue import WRAPPED  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _digits():
    name = "ps_examples_digits"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "digits.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def make_rgb() -> nn.Module:
    """A small 3-channel classifier (colourized digits, asymmetric channels R = x, G = 0.5 x, B = -x)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(256, 10),
    )


def make_small() -> nn.Module:
    """A small 1-channel digits classifier (the false-alarm seeds: seconds to train, quantizes well)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(256, 10),
    )


INNER = {"cnn": lambda: _digits().make_cnn(), "detector": lambda: _digits().make_detector(), "rgb": make_rgb}
CHANNELS = {"cnn": 1, "detector": 1, "rgb": 3}

DEFECTS = WRAPPED


class Defective(nn.Module):
    """The correct model ``m`` with one defect around it (or, for the detector's softmax, inside its heads)."""

    def __init__(self, model: str, defect: str) -> None:
        super().__init__()
        self.model, self.defect = model, defect
        self.m = INNER[model]()
        c = CHANNELS[model]
        if defect == "nan_one_sample":
            self.register_buffer("probe", torch.zeros(1, c, 32, 32))  # one holdout sample (set by ps_train.py)
        if defect == "constant_output":
            self.register_buffer("const", torch.zeros(10))  # the reference's mean output on the holdout

    def forward(self, x: torch.Tensor):
        d = self.defect
        if d == "dropped_softmax":
            logits, boxes, landmarks = self.m.heads(x)
            return {"scores": logits, "boxes": boxes, "landmarks": landmarks}
        out = self.m(x)
        named = dict(out) if isinstance(out, dict) else {"output": out}
        first = "scores" if "scores" in named else "output"
        if d == "swap_outputs":
            named["scores"], named["landmarks"] = named["landmarks"], named["scores"]
        elif d == "zero_output":
            key = "boxes" if "boxes" in named else first
            named[key] = named[key] - named[key]
        elif d == "constant_output":
            if "landmarks" in named:  # a regression head stuck at the image centre
                named["landmarks"] = named["landmarks"] - named["landmarks"] + 0.5
            else:
                named[first] = named[first] - named[first] + self.const
        elif d == "nan_one_sample":
            hit = ((x - self.probe).abs().flatten(1).amax(1) < 1e-4).to(x.dtype).reshape(-1, 1)
            named[first] = named[first] / (1.0 - hit)  # x/0: Inf (NaN where x is 0) for that sample only
        elif d == "off_by_one":
            named = {k: torch.cat([v[:1], v[:-1]], dim=0) for k, v in named.items()}
        elif d == "shape_mismatch":
            key = "boxes" if "boxes" in named else first
            v = named[key]
            # cnn: (N, 10) → (N, 1, 10); detector: boxes (N, 4) → (2N, 2) (litert-torch refuses a 3-D output in a dict)
            named[key] = v.reshape(-1, 2) if key == "boxes" else v.unsqueeze(1)
        return named if isinstance(out, dict) else named["output"]


def _factory(model: str, defect: str):
    def make() -> nn.Module:
        return Defective(model, defect)

    make.__name__ = f"{model}__{defect}"
    return make


for _d, (_, _models) in DEFECTS.items():
    for _m in _models:
        globals()[f"{_m}__{_d}"] = _factory(_m, _d)

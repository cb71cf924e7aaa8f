"""PyTorch factories for the tests (loaded by path in the torch worker: `tests/torchmodels.py:make_encoder`)."""

import torch
from torch import nn


class Encoder(nn.Module):
    """Token ids (int64) → a pooled, normalised sentence embedding; its layers are named like BERT's."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(100, 32)
        self.dense = nn.Linear(32, 32)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.dense(self.embedding(input_ids)))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return {"embedding": torch.nn.functional.normalize(pooled, dim=-1)}


def make_encoder():
    return Encoder().eval()


class CtcRecognizer(nn.Module):
    """A CNN+LSTM line recognizer in PyTorch's CTC layout: image (B, 1, 8, T) → log-probabilities (T, B, classes),
    time first. ``broken`` makes every time step but the first wrong (class order reversed), as a bundle that
    dropped the recurrence would be."""

    def __init__(self, classes: int = 12, hidden: int = 16, broken: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lstm = nn.LSTM(4 * 8, hidden)
        self.fc = nn.Linear(hidden, classes)
        self.broken = broken

    def forward(self, image):
        f = torch.relu(self.conv(image))  # B, 4, 8, T
        b, c, h, t = f.shape
        y, _ = self.lstm(f.permute(3, 0, 1, 2).reshape(t, b, c * h))
        out = self.fc(y).log_softmax(-1)  # T, B, classes
        if self.broken:
            out = torch.cat([out[:1], out[1:].flip(-1)], 0)
        return {"logits": out}


def make_ctc():
    return CtcRecognizer().eval()


def make_ctc_broken():
    return CtcRecognizer(broken=True).eval()


class TinyYolo(nn.Module):
    """A YOLOv8-style head: image (B, 1, 16, 16) → one output (B, 4 + classes, anchors): pixel boxes (0..320) next
    to sigmoid class scores (0..1). ``crushed`` rounds the scores to two values {0, 1.26} and keeps the boxes
    exact (what an INT8 output quantized with the boxes' scale does)."""

    def __init__(self, classes: int = 6, crushed: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, classes, 1)
        self.crushed = crushed

    def forward(self, image):
        f = torch.relu(self.conv(image))  # B, 8, 8, 8
        boxes = torch.sigmoid(self.box(f)).flatten(2) * 320.0
        scores = torch.sigmoid(self.cls(f)).flatten(2)
        if self.crushed:
            scores = (scores > 0.5).to(scores.dtype) * 1.26
        return {"output0": torch.cat([boxes, scores], 1)}


def make_yolo():
    return TinyYolo().eval()


def make_yolo_crushed():
    return TinyYolo(crushed=True).eval()


class TwoHeads(nn.Module):
    """A small detector head that returns a dict (class scores and boxes per cell), as many detection models do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                  nn.ReLU())
        self.cls = nn.Conv2d(8, 4, 1)
        self.box = nn.Conv2d(8, 4, 1)

    def forward(self, image):
        f = self.body(image)
        return {"scores": self.cls(f).flatten(2), "boxes": self.box(f).flatten(2)}


def make_twoheads():
    return TwoHeads().eval()


class TinyCNN(nn.Module):
    """A small digits-shaped classifier (1x1x32x32 → 10 logits): conv, depthwise conv, pooling and a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1, groups=8),
                                      nn.ReLU(), nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def make_tiny_cnn():
    return TinyCNN().eval()


class Branchy(TinyCNN):
    """TinyCNN whose path depends on the input's values: torch.export cannot capture that (data-dependent control
    flow); a tracing exporter follows the branch the example input takes."""

    def forward(self, x):
        y = self.features(x).flatten(1)
        if y.sum() > 0:
            y = y * 2
        return self.head(y)


def make_branchy():
    return Branchy().eval()

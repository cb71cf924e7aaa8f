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

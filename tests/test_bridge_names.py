"""The torch → ONNX bridge keeps output names valid (issue 9): an output named like a tensor inside the graph
(BERT-style `embedding` module and `embedding` output) used to give "Duplicate definition of name (embedding)"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

HERE = Path(__file__).parent


def test_output_named_like_an_inner_tensor(tmp_path, cli):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (800, 12)).astype(np.int64)  # 400 held out: enough for the 99 % retrieval row
    mask = (rng.random((800, 12)) > 0.2).astype(np.int64)
    mask[:, 0] = 1
    np.savez(tmp_path / "tok.npz", input_ids=ids, attention_mask=mask)
    res = cli("build", f"{HERE / 'torchmodels.py'}:make_encoder", "--input", "input_ids=?x12:int64",
              "--input", "attention_mask=?x12:int64", "-c", tmp_path / "tok.npz", "-t", "android-ort-fp32",
              "--output", "embedding=embedding", "--out", tmp_path / "dist")
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "dist" / "make_encoder" / "android-ort-fp32" / "report.json").read_text())
    assert rep["parity"]["kinds"]["embedding"]["kind"] == "embedding"
    assert rep["parity"]["metrics"]["embedding"]["sample_cosine_min"] > 0.9999

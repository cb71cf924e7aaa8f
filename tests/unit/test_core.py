"""edgepack.core: the numpy-only code shared by the host and every bundle's runner."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.core import batching, integrity, latency, npz
from edgepack.core.checks import Check, judge
from edgepack.core.limits import Limits
from edgepack.core.metrics import cosine, output_metrics, parity

CORE = Path(__file__).resolve().parents[2] / "edgepack" / "core"
LIMITS = Limits(1e-3, 0.999, 0.98, 0.01)


def _logits(n=100, c=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def test_core_imports_only_stdlib_numpy_and_itself():
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for py in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: core's own modules
                    continue
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] in allowed, f"{py.name} imports {n}"


def test_cosine_zero_sides():
    ref = _logits()
    assert cosine(np.zeros_like(ref), np.zeros_like(ref)) == 1.0
    assert cosine(ref, np.zeros_like(ref)) == 0.0  # an all-zero bundle never passes min_cosine
    assert cosine(np.zeros_like(ref), ref) == 0.0


@pytest.mark.parametrize("defect", ["zeros", "constant", "nan", "inf", "shape"])
def test_degenerate_outputs_fail(defect):
    ref = _logits()
    got = {"zeros": np.zeros_like(ref), "constant": np.full_like(ref, 0.5), "shape": ref[:, :-1]}.get(defect)
    if got is None:
        got = ref.copy()
        got[3, 1] = np.nan if defect == "nan" else np.inf
    out = parity({"y": ref}, {"y": got}, LIMITS, labels=ref.argmax(1))
    assert not out
    assert json.loads(json.dumps(out.to_dict(), allow_nan=False))  # strict JSON even with NaN metrics
    if defect in ("nan", "inf"):
        finite = next(c for c in out.checks if c.name == "output y finite")
        assert not finite.passed and "for 1 samples" in finite.note


def test_shape_mismatch_never_broadcasts():
    ref = _logits(n=4, c=1)
    with pytest.raises(ValueError, match="shape mismatch"):
        output_metrics(ref, ref[:, 0])  # (4,) would broadcast against (4, 1)


def test_judge_non_finite_or_missing_never_passes():
    assert not judge("x", float("nan"), 1.0, "<=").passed
    assert not judge("x", None, 1.0, "<=").passed
    assert judge("x", 0.5, 1.0, "<=").passed and judge("x", 2.0, 1.0, ">=").passed
    c = Check("x", 1.0, float("inf"), False)
    assert c.to_dict()["measured"] is None and Check.from_dict(c.to_dict()).passed is False


def test_run_batched_pads_fixed_batch_and_drops_padding():
    feeds = {"x": np.arange(10, dtype=np.float32).reshape(10, 1)}
    seen = []

    def infer(f):
        seen.append(len(f["x"]))
        return {"y": f["x"] * 2}

    out = batching.run_batched(infer, feeds, 4)
    assert seen == [4, 4, 4] and out["y"].shape == (10, 1) and np.array_equal(out["y"], feeds["x"] * 2)
    with pytest.raises(ValueError):
        batching.num_samples({"a": np.zeros(2), "b": np.zeros(3)})


def test_verify_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    entries = [{"path": "a.bin", "size": 3, "sha256": integrity.sha256_file(tmp_path / "a.bin")}]
    assert integrity.verify_files(tmp_path, entries) == (1, [])
    (tmp_path / "a.bin").write_bytes(b"abd")
    (tmp_path / "extra").write_text("x")
    _, problems = integrity.verify_files(tmp_path, entries + [{"path": "../outside", "size": 1, "sha256": "0"}])
    assert any("content changed: a.bin" in p for p in problems)
    assert any("unexpected file: extra" in p for p in problems)
    assert any("outside the bundle: ../outside" in p for p in problems)


def test_latency_and_npz_are_deterministic(tmp_path):
    stats = latency.measure(lambda: None, warmup=2, repeats=5)
    assert stats["repeats"] == 5 and stats["warmup"] == 2 and stats["p50_ms"] >= 0
    arrays = {"b": np.ones((2, 2)), "a": np.arange(3)}
    npz.save_npz(tmp_path / "1.npz", arrays)
    npz.save_npz(tmp_path / "2.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    assert np.array_equal(npz.load_npz(tmp_path / "1.npz")["a"], np.arange(3))

"""tests/modelgen.py: seeded, trained, low-margin models the INT8 benchmark (benchmarks/int8_generalization.py) and
tests build from."""

from __future__ import annotations

import json

import modelgen
import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("family", modelgen.FAMILIES)
def test_every_family_builds_and_runs_on_its_task(family):
    x, y = modelgen.task(family, 0, 4, 1)
    for seed in (0, 1):
        model = modelgen.build({"family": family, "seed": seed, "arch": modelgen.arch_for(family, seed)}).eval()
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        if family == "dethead":
            assert tuple(out["scores"].shape) == (4, modelgen.DET_CLASSES, 16)
            assert tuple(out["boxes"].shape) == (4, 4, 16)  # differs from scores: outputs are told apart by shape
            assert set(y) == {"cells", "boxes"}
        else:
            assert tuple(out.shape) == (4, modelgen.CLASSES)
            assert y.dtype == np.int64 and y.min() >= 0 and y.max() < modelgen.CLASSES


def test_seeded_and_splits_independent():
    for fam in modelgen.FAMILIES:
        assert modelgen.arch_for(fam, 3) == modelgen.arch_for(fam, 3)
        a, _ = modelgen.task(fam, 3, 8, 1)
        b, _ = modelgen.task(fam, 3, 8, 1)
        c, _ = modelgen.task(fam, 3, 8, 2)
        assert np.array_equal(a, b) and not np.allclose(a, c)
    # seeds change the architectures (not only the weights) somewhere in every multi-choice family
    assert len({json.dumps(modelgen.arch_for("dwsilu", s)) for s in range(6)}) > 1
    assert len({json.dumps(modelgen.arch_for("transformer", s)) for s in range(6)}) > 1
    assert len(modelgen.model_set(seeds=5)) >= 30


def test_generate_writes_a_complete_trained_low_margin_model(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "lstm-0"
    meta = modelgen.generate("lstm", 0, out)
    for f in ("model.py", "weights.pt", "model.onnx", "calibration.npz", "holdout.npz", "meta.json"):
        assert (out / f).is_file(), f
    cal, hold = np.load(out / "calibration.npz"), np.load(out / "holdout.npz")
    assert set(cal.files) == {"input"} and cal["input"].shape == (modelgen.N_CAL, *modelgen.LSTM_SEQ)
    assert set(hold.files) == {"input", "labels"} and len(hold["labels"]) == modelgen.N_HOLD
    # trained (well above chance) yet uncertain: a real share of holdout decisions sit on a small logit margin
    assert 0.3 < meta["holdout_accuracy"] < 0.99
    assert meta["share_margin_below_0.1"] > 0.005 and meta["margin_p10"] < 1.0
    # the factory file + weights give the same model the ONNX file holds
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_factory_test", out / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.make()
    model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    x = hold["input"][:1]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    args = modelgen.cli_args(out)
    assert args[args.index("--calibration") + 1].endswith("calibration.npz")
    assert args[args.index("--holdout") + 1].endswith("holdout.npz")
    assert f"input=1x{modelgen.LSTM_SEQ[0]}x{modelgen.LSTM_SEQ[1]}" in args and "output=scores" in args
    # a complete folder is reused, not retrained
    mtime = (out / "weights.pt").stat().st_mtime_ns
    assert modelgen.generate("lstm", 0, out) == meta and (out / "weights.pt").stat().st_mtime_ns == mtime

from __future__ import annotations

import numpy as np
import pytest

from edgepack import calibration
from edgepack.config import load_recipe
from edgepack.errors import ConfigError, InputError
from edgepack.signature import TensorSpec

IMG = (TensorSpec("input", (1, 1, 32, 32)),)


def test_digits_recipe_is_real_labelled_and_split_disjointly():
    rec = load_recipe("digits")
    data = calibration.load("digits", IMG)
    n_cal, n_hold = data.sizes
    assert (n_cal, n_hold) == (rec.split.calibration, rec.split.holdout)
    assert not data.synthetic and data.holdout_labels is not None
    assert set(np.unique(data.holdout_labels)) == set(range(10))
    x = data.calibration["input"]
    assert x.shape[1:] == (1, 32, 32) and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.9 and 0.9 < x.max() <= 1.0  # mean/std 0.5 maps [0,1] to [-1,1]
    cal, hold, rest = calibration.split_indices(1797, rec)
    assert not set(cal) & set(hold) and not set(rest) & (set(cal) | set(hold))
    assert len(cal) + len(hold) + len(rest) == 1797


def test_splits_are_deterministic():
    a = calibration.load("digits", IMG)
    b = calibration.load("digits", IMG)
    np.testing.assert_array_equal(a.holdout["input"], b.holdout["input"])
    np.testing.assert_array_equal(a.calibration["input"], b.calibration["input"])


def test_image_folder_recipe(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "r.toml").write_text(
        'name = "pets"\n[data]\nkind = "image-folder"\npath = "imgs"\n'
        '[preprocess]\nresize = [36, 36]\ncenter_crop = [32, 32]\nscale = 0.00392156862745098\n'
        'mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\nlayout = "nhwc"\ncolor = "bgr"\n'
        '[split]\ncalibration = 6\nholdout = 4\n')
    data = calibration.load(str(tmp_path / "r.toml"), (TensorSpec("x", (1, 32, 32, 3)),))
    # 10 images: holdout 4; of the 6 left, a third (2) is the tuning split, calibration gets the other 4
    assert data.sizes == (4, 4) and len(data.tuning["x"]) == 2
    assert data.calibration["x"].shape == (4, 32, 32, 3)
    assert data.class_names == ["cat", "dog"] and data.holdout_labels is not None


def test_npz_keyed_by_input_name(tmp_path):
    arr = np.random.default_rng(0).standard_normal((20, 1, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "c.npz", input=arr, labels=np.arange(20) % 10)
    data = calibration.load(str(tmp_path / "c.npz"), IMG)
    n_cal, n_hold = data.sizes
    assert n_cal + n_hold + len(data.tuning["input"]) == 20 and n_hold == 10 and len(data.tuning["input"]) == 3
    assert data.holdout_labels is not None and len(data.tuning_labels) == 3


def test_three_disjoint_splits_and_a_separate_holdout(tmp_path):
    """Calibration, tuning and holdout never share a sample; a separate holdout set is used whole, and the
    calibration source then gives calibration + tuning only."""
    arr = np.arange(60, dtype=np.float32).reshape(60, 1, 1, 1) * np.ones((1, 1, 32, 32), np.float32)
    np.savez(tmp_path / "c.npz", input=arr, labels=np.arange(60) % 10)
    held = np.full((7, 1, 32, 32), -1.0, np.float32)
    np.savez(tmp_path / "h.npz", input=held, labels=np.arange(7))
    data = calibration.load(str(tmp_path / "c.npz"), IMG)
    ids = [set(d["input"][:, 0, 0, 0].tolist()) for d in (data.calibration, data.tuning, data.holdout)]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    sep = calibration.load(str(tmp_path / "c.npz"), IMG, holdout=str(tmp_path / "h.npz"))
    assert len(sep.holdout["input"]) == 7 and (sep.holdout["input"] == -1).all()
    assert sep.holdout_labels.tolist() == list(range(7)) and sep.holdout_origin.endswith("h.npz")
    assert len(sep.calibration["input"]) + len(sep.tuning["input"]) == 60
    assert sep.describe()["holdout_origin"].endswith("h.npz")


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "c.npz", images=np.zeros((4, 1, 32, 32), np.float32))
    with pytest.raises(InputError) as e:
        calibration.load(str(tmp_path / "c.npz"), IMG)
    assert "['images']" in e.value.message and "input" in e.value.message


def test_empty_and_mismatched_data(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 32, 32), np.float32))
    with pytest.raises(InputError, match="is empty"):
        calibration.load(str(tmp_path / "empty.npy"), IMG)
    np.save(tmp_path / "bad.npy", np.zeros((8, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"axis 1 of 1x1x32x32 is 1 in the model, 3 in the data"):
        calibration.load(str(tmp_path / "bad.npy"), IMG)


def test_pickled_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled"):
        calibration.load(str(tmp_path / "obj.npy"), IMG)


def test_synthetic_only_on_request():
    with pytest.raises(ConfigError, match="no calibration data"):
        calibration.load(None, IMG)
    data = calibration.load(None, IMG, allow_synthetic=True)
    assert data.synthetic and data.describe()["synthetic"] is True

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
    # 10 images: holdout 4; calibration gets the 6 others, and the tuning split is those same 6 (overlap)
    assert data.sizes == (6, 4) and len(data.tuning["x"]) == 6
    assert data.calibration["x"].shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(data.tuning["x"], data.calibration["x"])
    assert data.class_names == ["cat", "dog"] and data.holdout_labels is not None


def test_npz_keyed_by_input_name(tmp_path):
    arr = np.random.default_rng(0).standard_normal((20, 1, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "c.npz", input=arr, labels=np.arange(20) % 10)
    data = calibration.load(str(tmp_path / "c.npz"), IMG)
    # sizes from the data: half is the holdout, calibration and tuning both use the other half
    assert data.sizes == (10, 10) and len(data.tuning["input"]) == 10
    assert data.holdout_labels is not None and len(data.tuning_labels) == 10
    assert data.describe()["split"]["unused"] == 0 and data.describe()["split"]["tuning_overlaps_calibration"] == 10


def test_only_the_holdout_is_disjoint_and_a_separate_holdout(tmp_path):
    """The holdout shares no sample with calibration or tuning; calibration uses every other sample and tuning
    overlaps it. A separate holdout set is used whole, and the calibration source then gives calibration + tuning
    from all of its samples."""
    arr = np.arange(60, dtype=np.float32).reshape(60, 1, 1, 1) * np.ones((1, 1, 32, 32), np.float32)
    np.savez(tmp_path / "c.npz", input=arr, labels=np.arange(60) % 10)
    held = np.full((7, 1, 32, 32), -1.0, np.float32)
    np.savez(tmp_path / "h.npz", input=held, labels=np.arange(7))
    data = calibration.load(str(tmp_path / "c.npz"), IMG)
    ids = [set(d["input"][:, 0, 0, 0].tolist()) for d in (data.calibration, data.tuning, data.holdout)]
    assert all(ids) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[2] == set(range(60)) and ids[1] == ids[0] and len(ids[2]) == 30
    sep = calibration.load(str(tmp_path / "c.npz"), IMG, holdout=str(tmp_path / "h.npz"))
    assert len(sep.holdout["input"]) == 7 and (sep.holdout["input"] == -1).all()
    assert sep.holdout_labels.tolist() == list(range(7)) and sep.holdout_origin.endswith("h.npz")
    assert len(sep.calibration["input"]) == len(sep.tuning["input"]) == 60
    assert sep.describe()["holdout_origin"].endswith("h.npz")


def test_split_sizes_come_from_the_data_bounded():
    """200 samples: 100 holdout / 100 calibration / the same 100 tuning (was 67/33/100); 960: 480/480/480 and
    nothing unused (was 256/256/256, 192 unused); large sets are bounded, tuning then takes the samples
    calibration leaves unused first; sizes given in the recipe are maxima."""
    s = calibration.split_sizes(200)
    assert (s.holdout, s.calibration, s.tuning, s.overlap, s.unused) == (100, 100, 100, 100, 0)
    s = calibration.split_sizes(960)
    assert (s.holdout, s.calibration, s.tuning, s.unused) == (480, 480, 480, 0)
    s = calibration.split_sizes(10_000)
    assert (s.holdout, s.calibration, s.tuning) == (calibration.HOLDOUT_MAX, calibration.CALIBRATION_MAX,
                                                    calibration.TUNING_MAX)
    assert s.overlap == 0 and s.unused == 10_000 - 2000 - 1000 - 500
    cal, hold, tune = calibration._split(10_000, None, None, 0)
    assert not set(tune) & set(cal) and not set(hold) & (set(cal) | set(tune))
    s = calibration.split_sizes(1797, calibration=300, holdout=400, tuning=256)  # the digits recipe
    assert (s.holdout, s.calibration, s.tuning, s.overlap) == (400, 300, 256, 0)
    assert calibration.split_sizes(60, separate_holdout=True).holdout == 0
    a, b = calibration._split(200, None, None, 3), calibration._split(200, None, None, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # seeded
    with pytest.raises(InputError, match="at least 2"):
        calibration.split_sizes(1)


def test_what_more_data_would_buy():
    assert calibration.more_data(400, 381, calibration.split_sizes(800)) == ""
    say = calibration.more_data(100, 381, calibration.split_sizes(200))
    assert "≥ 762 samples of data" in say and "had 200" in say
    assert "--holdout" in calibration.more_data(2000, 3838, calibration.split_sizes(5000))
    assert "--holdout" in calibration.more_data(7, 381, calibration.split_sizes(60, separate_holdout=True))


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

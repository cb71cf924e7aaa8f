"""Calibration and parity data: deterministic splits from a recipe or arrays. Only the holdout is disjoint (the
verdict); calibration uses every other sample (bounded), the tuning split may overlap it (see :func:`split_sizes`).

Sources of data: scikit-learn's bundled digits images, an image folder (``root/<label>/*.png`` or flat), or
``.npz``/``.npy`` arrays (read with ``allow_pickle=False``). Seeded synthetic data only on explicit request,
and flagged as such in every report.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.config import CalibrationRecipe, DataSpec, Preprocess, load_recipe
from edgepack.errors import ConfigError, InputError
from edgepack.feeds import Feeds, num_samples, take
from edgepack.signature import TensorSpec

SYNTHETIC_SAMPLES = 64


@dataclass
class CalibrationData:
    """Calibration split (for quantizers), tuning split (for the INT8 accuracy search; may overlap calibration) and
    holdout split (for parity; disjoint from both). ``holdout_origin`` is set when the user gave a separate holdout
    set."""

    name: str
    calibration: Feeds
    holdout: Feeds
    holdout_labels: np.ndarray | None = None
    tuning: Feeds = field(default_factory=dict)
    tuning_labels: np.ndarray | None = None
    tuning_reference: Feeds = field(default_factory=dict)  # the reference model's outputs on the tuning split
    holdout_origin: str = ""
    class_names: list[str] | None = None
    synthetic: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    defaulted: bool = False  # no --calibration: the profiles' default recipe was used (it fitted the model)
    split: SplitSizes | None = None  # how the calibration source was split (None: synthetic data)

    @property
    def sizes(self) -> tuple[int, int]:
        return num_samples(self.calibration), num_samples(self.holdout)

    def describe(self) -> dict[str, Any]:
        n_cal, n_hold = self.sizes
        return {
            "tuning_samples": num_samples(self.tuning) if self.tuning else 0,
            **({"holdout_origin": self.holdout_origin} if self.holdout_origin else {}),
            "name": self.name,
            "origin": self.origin,
            "synthetic": self.synthetic,
            "defaulted": self.defaulted,
            "calibration_samples": n_cal,
            "holdout_samples": n_hold,
            "labelled": self.holdout_labels is not None,
            "preprocess": self.preprocess,
            **({"split": {"samples": self.split.total, "tuning_overlaps_calibration": self.split.overlap,
                          "unused": self.split.unused,
                          "rule": "holdout disjoint (half the data, ≤ 2000, or a separate set); calibration = "
                                  "the other samples (≤ 1000); tuning ≤ 500 of them, unused ones first"}}
               if self.split else {}),
        }


# -------------------------------------------------------------------------------------------- images


def _to_array(img, pre: Preprocess) -> np.ndarray:
    """PIL image → float array (H, W, C) after resize/crop/scale/colour order."""
    from PIL import Image

    img = img.convert("L" if pre.color == "gray" else "RGB")
    if pre.resize:
        img = img.resize((pre.resize[1], pre.resize[0]), Image.BILINEAR)
    if pre.center_crop:
        ch, cw = pre.center_crop
        w, h = img.size
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if pre.color == "bgr":
        arr = arr[:, :, ::-1]
    return arr


def _normalize(batch_hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    """(N, H, W, C) raw pixels → scaled, mean/std-normalised, laid out and typed as the recipe says."""
    x = batch_hwc.astype(np.float32) * pre.scale
    c = x.shape[-1]
    for name, vals in (("mean", pre.mean), ("std", pre.std)):
        if len(vals) not in (1, c):
            raise ConfigError(f"preprocess.{name} has {len(vals)} values for {c} channels")
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    if pre.dtype != "float32":
        info = np.iinfo(pre.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x.astype(pre.dtype))


def _digits(pre: Preprocess) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = []
    for im in d.images:  # 8x8 values 0..16 → 0..255 grey images, then the recipe's own preprocessing
        pil = Image.fromarray(np.clip(im * (255.0 / 16.0), 0, 255).astype(np.uint8), mode="L")
        imgs.append(_to_array(pil, pre))
    return np.stack(imgs), d.target.astype(np.int64), [str(i) for i in range(10)]


MAX_IMAGES = 100_000


def _image_folder(root: Path, pre: Preprocess, exts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    from edgepack import safety

    if root.is_symlink() or not root.is_dir():
        raise InputError(f"calibration image folder not found: {safety.shown(root)}",
                         hint="data.path must name a real folder next to the recipe")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    files: list[tuple[Path, int | None]] = []
    if subdirs:
        for label, sub in enumerate(subdirs):
            files += [(f, label) for f in sorted(sub.iterdir()) if f.suffix.lower() in exts]
    else:
        files = [(f, None) for f in sorted(root.iterdir()) if f.suffix.lower() in exts]
    if not files:
        raise InputError(f"no images ({', '.join(exts)}) under {safety.shown(root)}",
                         hint="calibration needs at least a few images")
    if len(files) > MAX_IMAGES:
        raise InputError(f"{len(files)} images under {safety.shown(root)}, over the limit of {MAX_IMAGES}")
    imgs = []
    for f, _ in files:
        if f.is_symlink():
            raise InputError(f"calibration image {safety.shown(f)} is a symlink", hint="copy the real image")
        im = safety.open_image(f, "calibration image")
        imgs.append(_to_array(im, pre))
    shapes = {a.shape for a in imgs}
    if len(shapes) > 1:
        raise InputError(f"images under {safety.shown(root)} have different sizes {sorted(shapes)[:3]}",
                         hint="set preprocess.resize in the recipe")
    labels = np.asarray([lab for _, lab in files], np.int64) if subdirs else None
    return np.stack(imgs), labels, [p.name for p in subdirs] if subdirs else None


def _read_arrays(path: Path, inputs: tuple[TensorSpec, ...]) -> tuple[Feeds, np.ndarray | None]:
    from edgepack import safety

    data = safety.load_arrays(path, "calibration data")
    if "" in data:  # an .npy file
        if len(inputs) != 1:
            raise ConfigError(f"{safety.shown(path)}: a .npy file feeds one input; the model has {len(inputs)}",
                              hint="use an .npz with one array per input name")
        data = {inputs[0].name: data[""]}
    for t in inputs:  # a declared constant is fed from its declaration; a value in the file is not needed
        if t.value is not None:
            data.pop(t.name, None)
    for k, arr in data.items():
        if arr.ndim < 1 and arr.dtype.kind in "biuf":
            raise InputError(f"array '{safety.shown(k, 60)}' in {safety.shown(path)} is a scalar; calibration "
                             "arrays hold one row per sample",
                             hint=f"if '{safety.shown(k, 60)}' is a constant (a sample rate, a flag), declare it: "
                                  f"--input {safety.shown(k, 60)}=:DTYPE,value={arr.item()}")
        if arr.ndim < 1 or arr.dtype.kind not in "biuf":
            raise InputError(f"calibration array '{safety.shown(k, 60)}' in {safety.shown(path)} is "
                             f"{'0-dimensional' if arr.ndim < 1 else f'of dtype {arr.dtype}'}",
                             hint="one numeric array per input, one row per sample")
    labels = data.pop("labels", None)
    state = [t.name for t in inputs if t.state_from is not None and t.name in data]  # optional: zeros start
    names = [t.name for t in inputs if t.value is None and t.state_from is None] + state
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"{safety.shown(path)} has arrays {sorted(data)} but the model's inputs are {names}",
                         hint="key each array by its input name (np.savez(path, **{name: array})); declare a "
                              "constant input with --input NAME=:DTYPE,value=NUMBER")
    return _samples_first({n: data[n] for n in names}, inputs), labels


def _samples_first(feeds: Feeds, inputs: tuple[TensorSpec, ...]) -> Feeds:
    """Data files hold samples on axis 0; an input whose batch axis is k > 0 may also come in the model's own layout
    (e.g. a state (layers, N, hidden)): its axis k then holds the samples and moves to the front."""
    firsts = {len(v) for n, v in feeds.items() if next((t.batch_axis for t in inputs if t.name == n), 0) == 0}
    if len(firsts) != 1:
        return feeds
    n = firsts.pop()
    out = dict(feeds)
    for t in inputs:
        a, arr = t.batch_axis, feeds.get(t.name)
        if arr is None or not a or arr.ndim != len(t.shape) or a >= arr.ndim:
            continue
        if arr.shape[0] != n and arr.shape[a] == n:
            out[t.name] = np.ascontiguousarray(np.moveaxis(arr, a, 0))
    return out


# -------------------------------------------------------------------------------------------- split + checks


HOLDOUT_MAX = 2000  # a flawless holdout of 2000 proves ≥ 99.8 % at 95 %; more only costs parity time
CALIBRATION_MAX = 1000  # quantizer ranges settle long before this; NNCF uses 300 (subset_size) by default
TUNING_MAX = 500  # every search trial runs the candidate on the whole tuning split


@dataclass(frozen=True)
class SplitSizes:
    """How many samples each split gets from ``n`` (see :func:`split_sizes`)."""

    total: int
    calibration: int
    tuning: int
    holdout: int
    separate_holdout: bool = False

    @property
    def overlap(self) -> int:
        """Tuning samples that are calibration samples too."""
        return max(0, self.calibration + self.tuning - (self.total - self.holdout))

    @property
    def unused(self) -> int:
        return self.total - self.holdout - min(self.total - self.holdout, self.calibration + self.tuning
                                                - self.overlap)


def split_sizes(n: int, calibration: int | None = None, holdout: int | None = None, tuning: int | None = None,
                separate_holdout: bool = False) -> SplitSizes:
    """Split sizes from the data. Only the holdout is disjoint: half the samples (at most ``holdout`` if given, else
    ``HOLDOUT_MAX``; none when a separate holdout set is given). Calibration takes every other sample (at most
    ``calibration`` if given, else ``CALIBRATION_MAX``). Tuning takes up to ``tuning`` (else ``TUNING_MAX``)
    non-holdout samples, those calibration leaves unused first, then calibration samples (overlap)."""
    if n < 2 and not separate_holdout:
        raise InputError(f"calibration data has {n} sample(s); at least 2 are needed (a holdout and a calibration "
                         "sample)", hint="give more samples, or a separate holdout set with --holdout")
    n_hold = 0 if separate_holdout else min(HOLDOUT_MAX if holdout is None else holdout, n // 2)
    pool = n - n_hold
    n_cal = min(CALIBRATION_MAX if calibration is None else calibration, pool)
    n_tune = min(TUNING_MAX if tuning is None else tuning, pool)
    return SplitSizes(n, n_cal, n_tune, n_hold, separate_holdout)


def _split(n: int, n_cal: int | None, n_hold: int | None, seed: int, n_tune: int | None = None,
           separate_holdout: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration, holdout and tuning indices from one seeded permutation: the holdout first (disjoint), then
    calibration from the start of the rest, then tuning (samples calibration leaves unused first, then the end of
    calibration's own: the overlap)."""
    sizes = split_sizes(n, n_cal, n_hold, n_tune, separate_holdout)
    order = np.random.default_rng(seed).permutation(n)
    hold, pool = order[:sizes.holdout], order[sizes.holdout:]
    cal = pool[:sizes.calibration]
    start = min(sizes.calibration, len(pool) - sizes.tuning)  # right after calibration, or overlapping its end
    tune = pool[start:start + sizes.tuning]
    return np.sort(cal), np.sort(hold), np.sort(tune)


def split_indices(n: int, recipe: CalibrationRecipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration, holdout and remaining (training) indices: deterministic, the three disjoint. The tuning split
    may come from the remaining samples (a model may be trained on them: tuning only chooses among recipes)."""
    cal, hold, _ = _split(n, recipe.split.calibration, recipe.split.holdout, recipe.split.seed, 0)
    rest = np.setdiff1d(np.arange(n), np.concatenate([cal, hold]))
    return cal, hold, rest


def more_data(n_holdout: int, need: int, sizes: SplitSizes | None) -> str:
    """What a holdout of ``need`` samples would take, said for a person: how many samples of data in all under
    the split rule (the holdout gets half, up to ``HOLDOUT_MAX``), or a separate holdout set."""
    if n_holdout >= need:
        return ""
    if sizes is None or sizes.separate_holdout:
        return f"a holdout set of ≥ {need} samples (--holdout)"
    if need > HOLDOUT_MAX:
        return (f"≥ {need} holdout samples: more than the split gives a holdout ({HOLDOUT_MAX} at most); pass a "
                "separate holdout set with --holdout")
    return f"≥ {2 * need} samples of data in all (the holdout gets half: ≥ {need}; this build had {sizes.total})"


def _with_constants(feeds: Feeds, inputs: tuple[TensorSpec, ...]) -> Feeds:
    """Declared constants (``--input sr=:int64,value=16000``) repeated once per sample (one whole tensor each)."""
    n = len(next(iter(feeds.values()))) if feeds else 0
    out = dict(feeds)
    for t in inputs:
        if t.value is not None and t.name not in out:
            out[t.name] = np.full((n, *t.concrete_shape(1)), t.value, dtype=np.dtype(t.dtype))
        elif t.state_from is not None and t.name not in out:  # a recurrent state starts at zero
            shape = t.concrete_shape(1)
            if t.batch_axis is not None:
                shape = shape[:t.batch_axis] + shape[t.batch_axis + 1:]
            out[t.name] = np.zeros((n, *shape), dtype=np.dtype(t.dtype))
    return out


def _check_shapes(feeds: Feeds, inputs: tuple[TensorSpec, ...], origin: str) -> Feeds:
    out = {}
    for t in inputs:
        arr = feeds[t.name]
        if arr.ndim == 0 or arr.size == 0 or len(arr) == 0:
            raise InputError(f"calibration data for input '{t.name}' is empty or a scalar ({origin})",
                             hint="one row per sample; a constant input is declared with --input NAME=:DTYPE,value=N")
        want = t.sample_shape()
        got = tuple(arr.shape[1:])
        where = "" if t.batch_axis == 0 else (" (a whole tensor per sample: batch_axis none)" if t.batch_axis is None
                                              else f" (samples on axis {t.batch_axis})")
        if len(got) != len(want):
            hint = ("check resize/layout in the recipe" if len(arr.shape) == len(t.shape)
                    else f"one array row per sample; declare the batch axis with --input '{t.name}=,batch_axis=N' "
                         "or batch_axis=none")
            raise InputError(f"calibration data for '{t.name}' has samples of shape {got}; input '{t.name}' "
                             f"{t.shape_str()}{where} takes samples of rank {len(want)} ({origin})", hint=hint)
        model_axes = [i for i in range(len(t.shape)) if i != t.batch_axis]
        for axis, w, g in zip(model_axes, want, got):
            if w is not None and w != g:
                looks = ("; the data looks channels-last (NHWC) and the model channels-first (NCHW): check the "
                         "recipe's layout" if len(t.shape) == 4 and got[-1] == w and g != w else "")
                raise InputError(f"calibration data for '{t.name}': axis {axis} of {t.shape_str()}{where} is {w} in "
                                 f"the model, {g} in the data ({origin}){looks}",
                                 hint="check resize/layout in the recipe, or the input declaration (--input)")
        if arr.dtype != np.dtype(t.dtype):
            arr = arr.astype(t.dtype)
        out[t.name] = np.ascontiguousarray(arr)
    return out


def from_recipe(recipe: CalibrationRecipe, inputs: tuple[TensorSpec, ...],
                separate_holdout: bool = False, whole: bool = False) -> CalibrationData:
    pre = recipe.preprocess
    labels = None
    class_names = recipe.labels
    if recipe.data.kind == "arrays":
        if not recipe.data.path:
            raise ConfigError(f"{recipe.path}: data.path is required for kind 'arrays'")
        feeds, labels = _read_arrays(recipe.directory / recipe.data.path, inputs)
        origin = str(recipe.directory / recipe.data.path)
    else:
        if recipe.data.kind == "sklearn-digits":
            raw, labels, names = _digits(pre)
            origin = "scikit-learn digits (bundled with scikit-learn)"
        else:
            if not recipe.data.path:
                raise ConfigError(f"{recipe.path}: data.path is required for kind 'image-folder'")
            root = recipe.directory / recipe.data.path
            raw, labels, names = _image_folder(root, pre, recipe.data.extensions)
            origin = str(root)
        class_names = class_names or names
        fed = [t for t in inputs if t.value is None and t.state_from is None]
        target = recipe.input or (fed or inputs)[0].name
        if target not in {t.name for t in inputs}:
            raise ConfigError(f"{recipe.path}: input '{target}' is not a model input",
                              hint=f"inputs are: {', '.join(t.name for t in inputs)}")
        if len(fed) > 1:
            raise ConfigError(f"{recipe.path}: image data feeds one input; the model has {len(fed)} "
                              f"({', '.join(t.name for t in fed)})",
                              hint="use kind = 'arrays' with an .npz keyed by input name, and declare constant "
                                   "inputs with --input NAME=:DTYPE,value=NUMBER")
        feeds = {target: _normalize(raw, pre)}
    feeds = _with_constants(feeds, inputs)
    feeds = _check_shapes(feeds, inputs, origin)
    counts = {name: len(a) for name, a in feeds.items() if np.ndim(a)}
    if len(set(counts.values())) > 1:
        from edgepack.safety import shown

        raise InputError(f"calibration inputs hold different numbers of samples ({origin}): "
                         + shown(", ".join(f"{n}: {c}" for n, c in sorted(counts.items())), 300),
                         hint="every input array needs one row per sample, the same samples in the same order")
    if labels is not None and (np.ndim(labels) != 1 or len(labels) != num_samples(feeds)):
        raise InputError(f"calibration labels have shape {np.shape(labels)} for {num_samples(feeds)} samples "
                         f"({origin})", hint="one label per sample")
    sizes = None
    if whole:  # a separate holdout set: every sample is holdout
        cal, hold, tune = np.arange(0), np.arange(num_samples(feeds)), np.arange(0)
    else:
        sp = recipe.split
        sizes = split_sizes(num_samples(feeds), sp.calibration, sp.holdout, sp.tuning, separate_holdout)
        cal, hold, tune = _split(num_samples(feeds), sp.calibration, sp.holdout, sp.seed, sp.tuning, separate_holdout)
    return CalibrationData(
        name=recipe.name,
        calibration=take(feeds, cal),
        holdout=take(feeds, hold),
        holdout_labels=None if labels is None else np.asarray(labels)[hold],
        tuning=take(feeds, tune) if len(tune) else {},
        tuning_labels=None if labels is None or not len(tune) else np.asarray(labels)[tune],
        class_names=class_names,
        preprocess=pre.model_dump(mode="json") if recipe.data.kind != "arrays" else {},
        origin=origin, split=sizes,
    )


def from_arrays(path: Path, inputs: tuple[TensorSpec, ...], separate_holdout: bool = False,
                whole: bool = False) -> CalibrationData:
    recipe = CalibrationRecipe(name=Path(path).stem, data=DataSpec(kind="arrays", path=str(Path(path).resolve())))
    return from_recipe(recipe, inputs, separate_holdout, whole)


def synthetic(inputs: tuple[TensorSpec, ...], seed: int = 0) -> CalibrationData:
    from edgepack import safety

    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    total = 0
    for t in inputs:
        shape = (2 * SYNTHETIC_SAMPLES,) + t.concrete_shape(1)[1:]
        try:
            dtype = np.dtype(t.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biuf":
            raise InputError(f"--synthetic-calibration cannot make values for input '{safety.shown(t.name, 80)}' "
                             f"of type {safety.shown(t.dtype, 40)}: only numeric inputs get random data",
                             hint="give real data with --calibration (an .npz keyed by input name, or a recipe)")
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if total > safety.max_unpacked_bytes():
            raise InputError(f"--synthetic-calibration would make {total / (1 << 20):.0f} MB of random inputs "
                             f"({2 * SYNTHETIC_SAMPLES} samples of '{safety.shown(t.name, 80)}' "
                             f"{'x'.join(map(str, shape[1:]))}), over the {safety.max_unpacked_bytes() >> 20} MB "
                             "limit", hint="declare a smaller --input shape, give real data with --calibration, or "
                             "raise EDGEPACK_MAX_UNPACKED_MB")
        if t.dtype.startswith("float"):
            feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
        else:
            feeds[t.name] = rng.integers(0, 10, shape).astype(t.dtype)
    idx = np.arange(2 * SYNTHETIC_SAMPLES)
    return CalibrationData(name="synthetic", calibration=take(feeds, idx[:SYNTHETIC_SAMPLES]),
                           holdout=take(feeds, idx[SYNTHETIC_SAMPLES:]), synthetic=True,
                           tuning=take(feeds, idx[:SYNTHETIC_SAMPLES]),  # = calibration; never the holdout
                           split=SplitSizes(2 * SYNTHETIC_SAMPLES, SYNTHETIC_SAMPLES, SYNTHETIC_SAMPLES,
                                            SYNTHETIC_SAMPLES),
                           origin=f"seeded standard-normal noise (seed {seed})")


def load(spec: str | None, inputs: tuple[TensorSpec, ...], *, allow_synthetic: bool = False,
         relative_to: Path | None = None, holdout: str | None = None) -> CalibrationData:
    """Calibration data from a recipe name/path, an .npz/.npy file, or (only if allowed) synthetic noise.
    ``holdout`` (a recipe or an .npz/.npy) is a separate holdout set: all of it is the holdout, and the calibration
    source is split into calibration and tuning only."""
    if spec is None:
        if allow_synthetic:
            return synthetic(inputs)
        raise ConfigError("no calibration data given",
                          hint="pass --calibration RECIPE|file.npz (real data), or --synthetic-calibration to accept "
                               "random inputs (parity on noise can hide broken models)")
    data = _load_one(spec, inputs, relative_to, separate_holdout=holdout is not None)
    if holdout is None:
        return data
    held = _load_one(holdout, inputs, relative_to, separate_holdout=False, whole=True)
    return replace(data, holdout=held.holdout, holdout_labels=held.holdout_labels, holdout_origin=held.origin)


def _load_one(spec: str, inputs: tuple[TensorSpec, ...], relative_to: Path | None, separate_holdout: bool,
              whole: bool = False) -> CalibrationData:
    """One data source, split; ``whole``: every sample is holdout (a separate holdout set)."""
    if Path(spec).suffix in (".npz", ".npy"):
        return from_arrays(Path(spec), inputs, separate_holdout, whole)
    return from_recipe(load_recipe(spec, relative_to=relative_to), inputs, separate_holdout, whole)

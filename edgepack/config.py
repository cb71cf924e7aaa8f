"""Target profiles and calibration recipes: frozen pydantic models read from TOML.

Unknown keys are refused with a close-match suggestion; every error names the file and the key at fault.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgepack.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
MAX_SIDE = 16384  # pixels, for resize/crop

OutputKind = Literal["scores", "probabilities", "regression", "embedding", "dense", "sequence", "state", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParityBudget(_Model):
    """Limits on how far a bundle's outputs may drift from the reference (unset → backend default row)."""

    min_cosine: float | None = Field(None, ge=-1.0, le=1.0)
    max_abs_error: float | None = Field(None, ge=0.0)
    min_top1_agreement: float | None = Field(None, ge=0.0, le=1.0)
    max_accuracy_drop: float | None = Field(
        None, ge=0.0, le=1.0, description="max top-1 accuracy loss vs the reference on labelled data (0.01 = 1 point)"
    )
    min_top5_agreement: float | None = Field(None, ge=0.0, le=1.0)
    max_rel_error: float | None = Field(None, ge=0.0, description="regression/state/other heads: p99 of |Δ| "
                                        "relative to the output's range")
    min_decision_agreement: float | None = Field(None, ge=0.0, le=1.0, description="probabilities: same side of 0.5")
    min_retrieval_agreement: float | None = Field(None, ge=0.0, le=1.0, description="embeddings: nearest "
                                                  "neighbour in the holdout unchanged")
    min_pixel_agreement: float | None = Field(None, ge=0.0, le=1.0)
    min_psnr_db: float | None = Field(None, ge=0.0, le=200.0)
    min_token_agreement: float | None = Field(None, ge=0.0, le=1.0)
    min_mean_iou: float | None = Field(None, ge=0.0, le=1.0, description="dense class maps: mean IoU")
    min_detection_recall: float | None = Field(None, ge=0.0, le=1.0, description="detections:yolo: share of the "
                                               "reference's detections the bundle keeps (same class, IoU ≥ 0.5)")
    min_detection_precision: float | None = Field(None, ge=0.0, le=1.0, description="detections:yolo: share of the "
                                                  "bundle's detections the reference has")
    min_class_detection_recall: float | None = Field(None, ge=0.0, le=1.0, description="detections:yolo: recall "
                                                     "of the worst class with enough reference detections")
    min_string_agreement: float | None = Field(None, ge=0.0, le=1.0, description="ctc: decoded strings equal")
    max_char_error_rate: float | None = Field(None, ge=0.0, description="ctc: character error rate of the "
                                              "bundle's decode against the reference's")
    min_topk_overlap: float | None = Field(None, ge=0.0, le=1.0, description="topk: share of the reference's "
                                           "top-k classes in the bundle's top-k")
    min_retrieval_recall: float | None = Field(None, ge=0.0, le=1.0, description="retrieval: recall@k of the "
                                               "holdout neighbours")
    min_task_agreement: float | None = Field(None, ge=0.0, le=1.0, description="task:NAME: an installed "
                                             "post-processor's agreement rate")
    judge: Literal["evidence", "bound", "point"] | None = Field(
        None, description="how rate budgets (agreement, accuracy drop) are judged: evidence (default: the point "
        "estimate, INCONCLUSIVE when the holdout has too few samples for even a flawless result to prove the "
        "budget), bound (the 95% Wilson bound, INCONCLUSIVE on too few samples too) or point (the point estimate "
        "alone: the explicit opt-out)")


DEVICE_CLASS_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
# Device classes whose latency the x86 build host may stand in for: the top-level max_latency_p50_ms/p90_ms of a
# profile for any other class (android-*, jetson-*, iphone, ...) is never judged on host numbers.
HOST_CLASSES = ("generic", "intel-x86", "linux-x86_64", "x86_64", "x86-64")


def host_judges_latency(device_class: str) -> bool:
    """True when a profile's device class is one the x86 build host can judge latency for."""
    return device_class in HOST_CLASSES or device_class.startswith(("intel-x86", "linux-x86"))


class DeviceLatencyBudget(_Model):
    """A latency budget for one device class (``[budgets.device.<class>]``), judged by ``edgepack device run`` on
    real devices of that class only (emulated devices record their latency, labelled emulated, never judged).

    The run is sized by ``warmup``, ``min_runs`` and ``min_seconds`` (timed calls continue until both are reached);
    p50/p90 come with a bootstrap interval at ``confidence``: the budget is met when the interval's upper bound is
    within it, exceeded when the lower bound is over it, inconclusive otherwise."""

    p50_ms: float | None = Field(None, gt=0)
    p90_ms: float | None = Field(None, gt=0)
    warmup: int = Field(10, ge=0, le=100_000)
    min_runs: int = Field(50, ge=5, le=1_000_000)
    min_seconds: float = Field(1.0, ge=0, le=3600)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    resamples: int = Field(2000, ge=200, le=100_000, description="bootstrap resamples")


class Budgets(_Model):
    max_size_mb: float | None = Field(None, gt=0)
    max_int8_latency_ratio: float | None = Field(None, gt=0, description="host latency of the INT8 build ÷ the "
                                                 "float model in the same runtime (1 thread, interleaved in one "
                                                 "run): keeps a float fallback from erasing INT8's gain")
    int8_must_pay: bool | None = Field(None, description="an INT8 build both larger and slower (host, same runtime) "
                                       "than the float model fails its row int8_pays; default: on for profiles whose "
                                       "latency this host judges (linux-*, intel-*), a note elsewhere")
    max_latency_p50_ms: float | None = Field(None, gt=0)
    max_latency_p90_ms: float | None = Field(None, gt=0)
    parity: ParityBudget = ParityBudget()
    device: dict[str, DeviceLatencyBudget] = Field(
        default_factory=dict, description="device class → latency budget judged on real devices of that class "
        "(edgepack device run); the top-level max_latency_* of a non-x86 profile is its own class's budget")

    @field_validator("device")
    @classmethod
    def _classes(cls, v: dict[str, DeviceLatencyBudget]) -> dict[str, DeviceLatencyBudget]:
        bad = [k for k in v if not re.match(DEVICE_CLASS_PATTERN, k)]
        if bad:
            raise ValueError(f"device class names are lower-case [a-z0-9._-]: {bad}")
        return v


class LatencySettings(_Model):
    warmup: int = Field(5, ge=0, le=10_000)
    repeats: int = Field(50, ge=1, le=100_000)
    threads: int = Field(1, ge=1, le=256)


class Metadata(_Model):
    """App-facing metadata that backends embed where their format allows it."""

    author: str = ""
    license: str = ""
    version: str = ""
    description: str = ""


class Resources(_Model):
    """What one build of this target needs from the machine that runs it, when a zoo is built on a cluster
    (``edgepack zoo build --executor ray``): CPUs, memory, GPUs and custom resources (a node that can build it
    declares them, e.g. ``ray start --resources '{"tensorrt": 1}'``). Not part of the bundle or its content key."""

    num_cpus: float = Field(1.0, ge=0, le=1024)
    memory_mb: int | None = Field(None, ge=1, le=16 * 1024 * 1024, description="memory reserved for the build")
    gpus: float = Field(0.0, ge=0, le=64, description="GPUs (e.g. 1 for a TensorRT engine built on the host)")
    custom: dict[str, float] = Field(default_factory=dict, description="custom resource name → amount")

    @field_validator("custom")
    @classmethod
    def _names(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", k) or not 0 < x <= 1024]
        if bad:
            raise ValueError(f"custom resources are [A-Za-z0-9_.:-] names with an amount in (0, 1024]: {bad}")
        return v


class TargetProfile(_Model):
    """One deployment target: a backend, a precision, a device class and its budgets."""

    name: str = Field(..., pattern=NAME_PATTERN, description="[A-Za-z0-9._-], 1-64 characters, not starting with "
                      "'.' (the bundle's folder name)")
    backend: str = Field(..., max_length=64)
    precision: str = Field(..., max_length=64)
    device: str = Field("generic", max_length=200)
    description: str = ""
    calibration: str | None = None
    min_calibration_samples: int = Field(32, ge=1, le=1_000_000)
    min_tuning_samples: int = Field(64, ge=1, le=1_000_000, description="fewest tuning samples the INT8 accuracy "
                                    "search may judge recipes on (fewer: a warning, the figures are noisy)")
    golden_max_mb: float = Field(16.0, gt=0, le=4096, description="cap on the golden inputs + outputs kept in a "
                                 "bundle (uncompressed MiB); the worst samples are always kept, the rest is an even "
                                 "spread of the holdout")
    layout: Literal["nchw", "nhwc"] | None = None
    dynamic_batch: bool = False
    outputs: dict[str, OutputKind] = Field(default_factory=dict, description="output name → kind (scores, "
                                           "probabilities, regression, embedding, dense, sequence, state, other)")
    budgets: Budgets = Budgets()
    latency: LatencySettings = LatencySettings()
    metadata: Metadata = Metadata()
    options: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Resources()
    path: str | None = Field(None, description="file the profile was read from (set by the loader)")

    @property
    def directory(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def device_latency_budget(self, device_class: str) -> DeviceLatencyBudget | None:
        """The latency budget judged on real devices of ``device_class``: ``[budgets.device.<class>]``, or for the
        profile's own non-host class its top-level ``max_latency_p50_ms``/``p90_ms`` (with the default sizing)."""
        b = self.budgets
        if device_class in b.device:
            return b.device[device_class]
        if device_class == self.device and not host_judges_latency(self.device) and (
                b.max_latency_p50_ms is not None or b.max_latency_p90_ms is not None):
            return DeviceLatencyBudget(p50_ms=b.max_latency_p50_ms, p90_ms=b.max_latency_p90_ms)
        return None


class DataSpec(_Model):
    kind: Literal["sklearn-digits", "image-folder", "arrays"]
    path: str | None = Field(None, max_length=1024)
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")


class Preprocess(_Model):
    resize: tuple[int, int] | None = None  # (height, width)
    center_crop: tuple[int, int] | None = None
    scale: float = Field(1.0, allow_inf_nan=False)  # multiply raw pixel values first (e.g. 1/255)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["nchw", "nhwc"] = "nchw"
    color: Literal["rgb", "bgr", "gray"] = "rgb"
    dtype: Literal["float32", "uint8", "int8"] = "float32"

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v

    @field_validator("resize", "center_crop")
    @classmethod
    def _side(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not all(1 <= x <= MAX_SIDE for x in v):
            raise ValueError(f"sizes must be between 1 and {MAX_SIDE} pixels")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not 1 <= len(v) <= 64 or any(x != x or abs(x) == float("inf") for x in v):
            raise ValueError("1 to 64 finite values")
        return v


class Split(_Model):
    """Seeded splits: holdout (the verdict, disjoint from everything, untouched by any choice), calibration
    (quantizer ranges: every non-holdout sample by default) and tuning (choosing among INT8 recipes and ranking
    layer sensitivity; may overlap calibration, as the toolkits' own accuracy-control flows do). A size left out
    comes from the data (``edgepack.calibration.split_sizes``); a size given is a maximum."""

    seed: int = Field(0, ge=0, le=2**32 - 1)
    calibration: int | None = Field(None, ge=1, le=1_000_000, description="most calibration samples (default: "
                                    "every non-holdout sample, up to 1000)")
    tuning: int | None = Field(None, ge=0, le=1_000_000, description="most samples for the INT8 accuracy search "
                               "(0: no search; default: up to 500 non-holdout samples, unused ones first)")
    holdout: int | None = Field(None, ge=1, le=1_000_000, description="most holdout samples (default: half the "
                                "data, up to 2000)")


class CalibrationRecipe(_Model):
    """Where representative data comes from and how it is preprocessed and split."""

    name: str
    description: str = ""
    input: str | None = Field(None, description="model input the data feeds (default: the first input)")
    data: DataSpec
    preprocess: Preprocess = Preprocess()
    split: Split = Split()
    labels: list[str] | None = None
    path: str | None = None

    @property
    def directory(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()


# ----------------------------------------------------------------------------------------------- loading


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the (nested) model addressed by ``loc``."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        ann = field.annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def validation_message(exc: ValidationError, model: type[BaseModel], where: str, prefix: str = "") -> ConfigError:
    """Turn pydantic's error into one ConfigError naming the key, with a close-match suggestion."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = prefix + ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = [f for f in _fields_at(model, loc[:-1]) if f != "path"]
        hint = _suggest(str(loc[-1]), valid) or f"valid keys here: {', '.join(valid)}"
        return ConfigError(f"{where}: unknown key '{key}'", hint=hint)
    if err["type"] == "missing":
        return ConfigError(f"{where}: missing required key '{key}'", hint="see the profiles in targets/ for examples")
    return ConfigError(f"{where}: invalid value for '{key}': {err['msg']}", hint=f"got {err.get('input')!r}")


def read_toml(path: Path) -> dict:
    """A TOML file's table: regular files only (no FIFO, device or folder), size-bounded, UTF-8."""
    from edgepack.safety import read_bytes, shown

    raw = read_bytes(path, "TOML file", error=ConfigError)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{shown(path)}: not UTF-8 text (byte {e.start})", hint="save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{shown(path)}: not valid TOML ({shown(e)})", hint="fix the syntax at the line named") from None
    except RecursionError:
        raise ConfigError(f"{shown(path)}: nested too deeply", hint="fix the file") from None


def targets_dirs(extra: Path | None = None) -> list[Path]:
    """Where target profiles are looked up, in order."""
    dirs = []
    if extra:
        dirs.append(extra)
    if os.environ.get("EDGEPACK_TARGETS"):
        dirs.append(Path(os.environ["EDGEPACK_TARGETS"]))
    dirs += [Path.cwd() / "targets", REPO_ROOT / "targets"]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def available_targets(extra: Path | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in targets_dirs(extra):
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def load_profile(name_or_path: str, targets_dir: Path | None = None) -> TargetProfile:
    """Load a target by profile name (from ``targets/``) or by path to a TOML file.

    Only the profile's own schema is checked here; its backend validates precision and options once, in
    ``backends.registry.resolve``."""
    from edgepack.safety import shown

    p = Path(name_or_path)
    try:
        is_path = p.suffix == ".toml" or p.exists() or p.is_symlink()
    except (OSError, ValueError):  # a name too long for a path, a NUL byte: not a file, so a profile name
        is_path = False
    if is_path:
        path = p
    else:
        found = available_targets(targets_dir)
        if name_or_path not in found:
            hint = (_suggest(name_or_path, list(found)) if len(name_or_path) <= 200 else None) \
                or f"known targets: {', '.join(found) or 'none'}"
            raise ConfigError(f"unknown target '{shown(name_or_path, 120)}'", hint=hint)
        path = found[name_or_path]
    data = read_toml(path)
    data.setdefault("name", path.stem)
    data["path"] = str(path.resolve())
    if isinstance(data.get("calibration"), str):
        _check_data_path(data["calibration"], f"{path}: calibration")
    try:
        return TargetProfile.model_validate(data)
    except ValidationError as e:
        raise validation_message(e, TargetProfile, str(path)) from None


def _check_data_path(value: str, where: str) -> None:
    """A path named inside a profile or recipe: relative, no '..' (it is resolved against the file's folder)."""
    from edgepack.safety import is_safe_relative, shown

    if not is_safe_relative(value):
        raise ConfigError(f"{shown(where)} '{shown(value, 120)}' must be a relative path inside the file's folder",
                          hint="no absolute paths and no '..'; move the data next to the file (or pass "
                               "--calibration PATH on the command line)")


def calibration_dirs() -> list[Path]:
    return [d for d in (Path.cwd() / "calibration", REPO_ROOT / "calibration") if d.is_dir()]


def load_recipe(name_or_path: str | Path, relative_to: Path | None = None) -> CalibrationRecipe:
    """Load a calibration recipe by name (``calibration/<name>.toml``) or path."""
    p = Path(name_or_path)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.append(relative_to / p)
    if p.suffix != ".toml":
        candidates += [d / f"{p.name}.toml" for d in calibration_dirs()]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        known = sorted({q.stem for d in calibration_dirs() for q in d.glob("*.toml")})
        hint = _suggest(p.stem, known) or f"known recipes: {', '.join(known) or 'none'}; or pass an .npz/.npy file"
        raise ConfigError(f"calibration recipe not found: {name_or_path}", hint=hint)
    data = read_toml(path)
    data.setdefault("name", path.stem)
    data["path"] = str(path.resolve())
    if isinstance(data.get("data"), dict) and isinstance(data["data"].get("path"), str):
        _check_data_path(data["data"]["path"], f"{path}: data.path")
    try:
        return CalibrationRecipe.model_validate(data)
    except ValidationError as e:
        raise validation_message(e, CalibrationRecipe, str(path)) from None


# ----------------------------------------------------------------------------------------------- app budgets

# Short names a build may use for the profile's budget keys (``--budget size_mb=40``); the schema names work too.
BUDGET_ALIASES = {"size_mb": "max_size_mb", "latency_p50_ms": "max_latency_p50_ms",
                  "latency_p90_ms": "max_latency_p90_ms", "int8_latency_ratio": "max_int8_latency_ratio"}


class EffectiveBudget(_Model):
    """One budget a build judged: its value and where it came from (``profile NAME``, ``model config PATH``,
    ``command line`` or ``budgets= argument``)."""

    value: Any
    source: str


def budget_key(key: str) -> str:
    """The schema path of a budget key (``size_mb`` → ``max_size_mb``, ``parity.min_cosine`` as is); unknown keys
    are refused naming the key and the valid ones."""
    key = key.strip()
    full = BUDGET_ALIASES.get(key, key)
    parts = full.split(".")
    scalar = [f for f, info in Budgets.model_fields.items() if f not in ("parity", "device")]
    parity = list(ParityBudget.model_fields)
    valid = [*BUDGET_ALIASES, *scalar, *(f"parity.{p}" for p in parity)]
    if (len(parts) == 1 and parts[0] in scalar) or (len(parts) == 2 and parts[0] == "parity" and parts[1] in parity):
        return full
    if parts[0] == "device":
        raise ConfigError(f"budget '{key}': device-class latency budgets are set in the profile "
                          "([budgets.device.<class>])", hint="a build sets " + ", ".join(valid[:6]) + ", parity.*")
    raise ConfigError(f"unknown budget '{key}'", hint=_suggest(key, valid) or f"budgets: {', '.join(valid)}")


def parse_budget(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--budget``: the key as given (checked with :func:`budget_key`) and the value (validated
    with the schema by :func:`with_budgets`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"cannot parse --budget '{text}'", hint="use KEY=VALUE, e.g. --budget size_mb=100 or "
                          "--budget parity.min_top1_agreement=0.97")
    budget_key(key)
    return key.strip(), value.strip()


def with_budgets(budgets: Budgets, overrides: dict[str, tuple[Any, str]], where: str = "budget") -> Budgets:
    """``budgets`` with ``overrides`` (key as given → (value, source)) applied and validated against the schema; an
    invalid value is refused naming the key and its source."""
    data = budgets.model_dump(exclude_none=True)
    for key, (value, source) in overrides.items():
        parts = budget_key(key).split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        try:
            Budgets.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"{where} '{key}' from {source}: invalid value {value!r}: {err['msg']}",
                              hint="the budget schema: [budgets] of a target profile (README, 'Target profiles'; "
                                   "`edgepack schema` writes it as JSON Schema)") from None
    return Budgets.model_validate(data)


def effective_budgets(budgets: Budgets, profile: str, overrides: dict[str, tuple[Any, str]] | None = None
                      ) -> dict[str, EffectiveBudget]:
    """Every budget set for a build, flattened to schema keys, with its source: the override's, else the profile."""
    flat: dict[str, Any] = {}
    for k, v in budgets.model_dump(exclude_none=True).items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[k] = v
    over = {budget_key(k): src for k, (_, src) in (overrides or {}).items()}
    return {k: EffectiveBudget(value=v, source=over.get(k, f"profile {profile}")) for k, v in sorted(flat.items())}


def layered_budgets(*layers: tuple[Mapping[str, object], str]) -> tuple[dict[str, object], dict[str, str]]:
    """The build's budgets (key → value) and where each came from, from ``(budgets, source)`` layers, later layers
    overriding earlier ones key by key (``size_mb`` and ``max_size_mb`` are the same key)."""
    budgets: dict[str, object] = {}
    sources: dict[str, str] = {}
    for table, where in layers:
        for key, value in table.items():
            for k in [k for k in budgets if budget_key(k) == budget_key(key)]:
                del budgets[k], sources[k]
            budgets[key], sources[key] = value, where
    return budgets, sources

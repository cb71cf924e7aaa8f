"""The zoo file: ``[[model]]`` tables validated by pydantic; every error names the model and the key at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgepack.config import NAME_PATTERN, read_toml, validation_message
from edgepack.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Model):
    """One model of the zoo and the targets it is built for."""

    name: str = Field(..., pattern=NAME_PATTERN, description="the model's name (bundle folder, cell id)")
    source: str = Field(..., min_length=1, max_length=1024, description="anything `edgepack build` takes: an "
                        ".onnx file, file.py:factory or pkg.module:factory, a .keras file, a SavedModel folder")
    weights: str | None = Field(None, max_length=1024, description="PyTorch state dict for a factory")
    calibration: str | None = Field(None, max_length=1024, description="recipe name or path, or an .npz/.npy file")
    holdout: str | None = Field(None, max_length=1024, description="a separate holdout set (recipe or .npz/.npy)")
    synthetic_calibration: bool = Field(False, description="seeded random inputs when no calibration is given")
    trust_model_code: bool = False
    skip_unavailable: bool = Field(False, description="targets that cannot build this model are skipped (else "
                                   "their cells are refused, exit 2)")
    signature: str | None = Field(None, max_length=200)
    targets: list[str] | Literal["all"] = Field(..., description="profile names, profile paths, or \"all\"")
    inputs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="[inputs.NAME] as in --model-config")
    outputs: dict[str, str] = Field(default_factory=dict, description="NAME = \"KIND[,...]\" as in --model-config")
    budgets: dict[str, Any] = Field(default_factory=dict, description="budget overrides for this model's targets, "
                                    "as a model config's [budgets] (size_mb, latency_p50_ms, parity.KEY, …), "
                                    "passed to the build as budgets=")

    @field_validator("targets")
    @classmethod
    def _some(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a non-empty list of distinct target names or profile paths, or \"all\"")
        return v


class Zoo(_Model):
    """A zoo file: its models, and optionally the device inventory used by ``edgepack zoo device-run``."""

    model: list[ModelEntry] = Field(..., min_length=1, description="[[model]] tables")
    devices: str | None = Field(None, max_length=1024, description="a devices.toml (edgepack device)")
    targets_dir: str | None = Field(None, max_length=1024, description="extra folder of target profiles")
    path: str | None = Field(None, description="the zoo file (set by the loader)")

    @field_validator("model")
    @classmethod
    def _unique(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique: {', '.join(dup)} appear more than once")
        return v

    @property
    def directory(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def resolve(self, value: str | None) -> str | None:
        """A path named in the zoo file, taken relative to the file's folder (a name without a path is kept: a
        recipe or profile name, a pkg.module:factory)."""
        if value is None:
            return None
        head = value.split(":", 1)[0] if ":" in value and not Path(value).exists() else value
        candidate = self.directory / head
        if Path(head).is_absolute() or not candidate.exists():
            return value
        return str(candidate.resolve()) + value[len(head):]

    def entry(self, name: str) -> ModelEntry:
        for m in self.model:
            if m.name == name:
                return m
        raise ConfigError(f"{self.path}: no model named '{name}'",
                          hint=f"models: {', '.join(m.name for m in self.model)}")


def load(path: str | Path) -> Zoo:
    """Read and validate a zoo file; the inputs/outputs declarations are parsed here too (errors before any work)."""
    path = Path(path)
    data = read_toml(path)
    data["path"] = str(path.resolve())
    models = data.get("model")
    if isinstance(models, list):  # each [[model]] on its own first, so an error names its model
        for i, table in enumerate(models):
            name = table.get("name") if isinstance(table, dict) else None
            where = f"{path}: model '{name}'" if isinstance(name, str) else f"{path}: model #{i + 1}"
            if not isinstance(table, dict):
                raise ConfigError(f"{where} is not a table", hint="write each model as a [[model]] table")
            try:
                ModelEntry.model_validate(table)
            except ValidationError as e:
                raise validation_message(e, ModelEntry, where) from None
    try:
        zoo = Zoo.model_validate(data)
    except ValidationError as e:
        raise validation_message(e, Zoo, str(path)) from None
    for m in zoo.model:
        declarations(zoo, m)
        budgets(zoo, m)
    return zoo


def budgets(zoo: Zoo, m: ModelEntry) -> dict[str, object]:
    """The model's budget overrides as ``--budget`` keys, checked by the model config's budgets parser."""
    from edgepack.signature import budgets_table

    return budgets_table(m.budgets, f"{zoo.path}: model '{m.name}'")


def declarations(zoo: Zoo, m: ModelEntry) -> tuple[tuple, dict]:
    """The model's input declarations and output specs, parsed by the --model-config parser."""
    from edgepack.signature import parse_model_config

    where = f"{zoo.path}: model '{m.name}'"
    try:
        return parse_model_config({"inputs": m.inputs, "outputs": m.outputs}, where)
    except ConfigError as e:
        if e.message.startswith(where):
            raise
        raise ConfigError(f"{where}: inputs: {e.message}", hint=e.hint) from None


__all__ = ["ModelEntry", "Zoo", "budgets", "declarations", "load"]

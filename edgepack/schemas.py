"""JSON Schema of the files edgepack writes (manifest.json, report.json, build-report.json), exported to
``docs/schema/`` and checked in CI so a schema change is always a visible, reviewed diff."""

from __future__ import annotations

import json
from pathlib import Path

from edgepack.bundle import Manifest
from edgepack.report import BuildReport, TargetReport

MODELS = {"manifest.schema.json": Manifest, "report.schema.json": TargetReport,
          "build-report.schema.json": BuildReport}


def render() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(mode="serialization"), indent=2, sort_keys=True) + "\n"
            for name, model in MODELS.items()}


def write(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
    return []


def check(out: Path) -> list[str]:
    """Names of schema files missing from ``out`` or different from this edgepack's models."""
    return [name for name, text in render().items()
            if not (out / name).is_file() or (out / name).read_text() != text]

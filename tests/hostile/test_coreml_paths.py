"""A Core ML package never makes edgepack read outside itself: its Manifest.json items and its MIL weight blobs
must name files inside the package (verify and check refuse it; the evaluator refuses to open it)."""

from __future__ import annotations

import json

import pytest

from edgepack.backends.coreml.mil import program
from edgepack.errors import InputError


def test_manifest_item_outside_the_package_is_refused(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (tmp_path / "outside.mlmodel").write_bytes(b"x")
    (pkg / "Manifest.json").write_text(json.dumps({"itemInfoEntries": {"r": {"path": "../../outside.mlmodel"}},
                                                   "rootModelIdentifier": "r"}))
    with pytest.raises(InputError, match="not a relative path inside"):
        program.spec_path(pkg)


def test_weight_blob_outside_the_package_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("google.protobuf")
    model_dir = tmp_path / "pkg" / "Data" / "com.apple.CoreML"
    model_dir.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "weight.bin").write_bytes(b"\0" * 128)
    reader = program.ValueReader(model_dir)

    class Blob:
        fileName = "@model_path/../../../outside/weight.bin"
        offset = 64

    class Value:
        blobFileValue = Blob()
        type = None

        def WhichOneof(self, _):
            return "blobFileValue"

    monkeypatch.setattr(program, "tensor_type", lambda _: type("T", (), {"shape": (1,), "dtype": "fp32"})())
    with pytest.raises(InputError, match="not a relative path inside"):
        reader.read(Value())

"""App metadata inside a ``.tflite`` file: the TFLite Support metadata schema, written without ``tflite-support``.

Android's Task Library, the model binding code generator and Netron read this metadata: model name, description,
version, author, license; per input tensor the image content and the normalization ``(x - mean) / std``; per output
tensor a ``labels.txt`` that names the classes along its last axis.

The layout follows ``tensorflow_lite_support/metadata/metadata_schema.fbs`` (file identifier ``M001``, schema
1.x; only fields that exist since 1.0.0 are written, so ``min_parser_version`` is ``1.0.0``) and the way
``MetadataPopulator`` attaches it:

* the metadata flatbuffer becomes one more entry of ``Model.buffers`` and ``Model.metadata`` gets
  ``{name: "TFLITE_METADATA", buffer: <index>}`` (an existing entry of that name is replaced);
* associated files are a zip archive (stored, not compressed) appended to the model, so the ``.tflite`` is also
  a valid zip whose members are those files.

Only numpy, ``flatbuffers`` and the LiteRT schema module (through ``flatbuffer.schema``) are used, all imported
inside the functions (importing this module loads no framework). This module imports nothing else of the backend.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.backends.tflite.flatbuffer import enum_names, schema

if TYPE_CHECKING:
    from edgepack.config import TargetProfile

METADATA_NAME = "TFLITE_METADATA"  # Model.metadata entry that points at the metadata buffer
FILE_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
MIN_PARSER_VERSION = "1.0.0"  # every field written here exists since schema 1.0.0 (see metadata_version.cc)
LABELS_FILE = "labels.txt"

# schema enums (metadata_schema.fbs)
TENSOR_AXIS_LABELS = 2  # AssociatedFileType
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2  # ContentProperties union
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}  # ColorSpaceType


# ------------------------------------------------------------------------------------------ what is written


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    description: str = ""
    type: int = TENSOR_AXIS_LABELS


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    description: str = ""
    color_space: int | None = None  # ImageProperties content when set, else FeatureProperties
    mean: tuple[float, ...] = ()  # NormalizationOptions process unit when set
    std: tuple[float, ...] = ()
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()
    associated_files: tuple[AssociatedFile, ...] = ()


@dataclass(frozen=True)
class ModelMetadata:
    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: tuple[TensorMetadata, ...] = ()  # in the order of SubGraph.inputs of subgraph 0
    outputs: tuple[TensorMetadata, ...] = ()
    min_parser_version: str = MIN_PARSER_VERSION


@dataclass(frozen=True)
class AppMetadata:
    """What a target profile (and the build's data) says about the model, before it is matched to tensors."""

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.description or self.version or self.author or self.license or self.input_mean
                    or self.labels)


def app_metadata(target: "TargetProfile", model_name: str, input_mean: tuple[float, ...],
                 input_std: tuple[float, ...], class_names: list[str] | None) -> AppMetadata:
    """The profile's metadata block, normalization and class names; falsy when the profile provides none of them."""
    md = target.metadata
    return AppMetadata(name=model_name, description=md.description, version=md.version, author=md.author,
                       license=md.license, input_mean=tuple(input_mean), input_std=tuple(input_std),
                       labels=tuple(class_names or ()))


# ------------------------------------------------------------------------------------------ flatbuffer builder


def _strings(b, *values: str) -> list[int | None]:
    return [b.CreateString(v) if v else None for v in values]


def _offsets(b, offs: list[int]) -> int | None:
    if not offs:
        return None
    b.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _floats(b, values: tuple[float, ...]) -> int | None:
    if not values:
        return None
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b, n_slots: int, refs: dict[int, int | None], bytes_: dict[int, int] | None = None) -> int:
    """A table whose slots hold offsets (``refs``) and int8/uint8 scalars (``bytes_``); None/0 slots are left out."""
    b.StartObject(n_slots)
    for slot, ref in refs.items():
        if ref is not None:
            b.PrependUOffsetTRelativeSlot(slot, ref, 0)
    for slot, value in (bytes_ or {}).items():
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _associated_file(b, f: AssociatedFile) -> int:
    name, desc = _strings(b, f.name, f.description)
    return _table(b, 4, {0: name, 1: desc}, {2: f.type})  # name, description, type, locale


def _tensor(b, t: TensorMetadata) -> int:
    name, desc = _strings(b, t.name, t.description)
    if t.color_space is not None:
        props, kind = _table(b, 2, {}, {0: t.color_space}), IMAGE_PROPERTIES  # color_space, default_size
    else:
        props, kind = _table(b, 0, {}), FEATURE_PROPERTIES
    content = _table(b, 3, {1: props}, {0: kind})  # content_properties_type, content_properties, range
    units = []
    if t.mean:
        norm = _table(b, 2, {0: _floats(b, t.mean), 1: _floats(b, t.std)})  # mean, std
        units.append(_table(b, 2, {1: norm}, {0: NORMALIZATION_OPTIONS}))  # options_type, options
    stats = None
    if t.stats_min or t.stats_max:
        stats = _table(b, 2, {0: _floats(b, t.stats_max), 1: _floats(b, t.stats_min)})  # max, min
    files = _offsets(b, [_associated_file(b, f) for f in t.associated_files])
    # name, description, dimension_names, content, process_units, stats, associated_files
    return _table(b, 7, {0: name, 1: desc, 3: content, 4: _offsets(b, units), 5: stats, 6: files})


def build(meta: ModelMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (file identifier ``M001``) with one ``SubGraphMetadata``."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    inputs = _offsets(b, [_tensor(b, t) for t in meta.inputs])
    outputs = _offsets(b, [_tensor(b, t) for t in meta.outputs])
    # SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata, associated_files, ...
    subgraph = _table(b, 5, {2: inputs, 3: outputs})
    name, desc, version, author, lic, parser = _strings(b, meta.name, meta.description, meta.version, meta.author,
                                                        meta.license, meta.min_parser_version)
    # ModelMetadata: name, description, version, subgraph_metadata, author, license, associated_files,
    # min_parser_version
    root = _table(b, 8, {0: name, 1: desc, 2: version, 3: _offsets(b, [subgraph]), 4: author, 5: lic, 7: parser})
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# ------------------------------------------------------------------------------------------ reader


class _Table:
    """Just enough of flatbuffers' Table API to read the metadata back (slot numbers as in the .fbs file)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        from flatbuffers.table import Table

        self.t = Table(bytearray(buf), pos)

    def _off(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def has(self, slot: int) -> bool:
        return self._off(slot) != 0

    def str(self, slot: int) -> str:
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode() if o else ""

    def byte(self, slot: int) -> int:
        from flatbuffers import number_types as N

        o = self._off(slot)
        return self.t.Get(N.Uint8Flags, o + self.t.Pos) if o else 0

    def table(self, slot: int) -> "_Table | None":
        o = self._off(slot)
        return _Table(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot: int) -> list["_Table"]:
        o = self._off(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_Table(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> list[float]:
        o = self._off(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [float(x) for x in np.frombuffer(bytes(self.t.Bytes[start:start + 4 * n]), "<f4")]


def _read_file(f: _Table) -> dict[str, Any]:
    return {"name": f.str(0), "description": f.str(1), "type": f.byte(2)}


def _read_tensor(t: _Table) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.str(0), "description": t.str(1)}
    content = t.table(3)
    if content is not None:
        kind = content.byte(0)
        out["content"] = {FEATURE_PROPERTIES: "feature", IMAGE_PROPERTIES: "image"}.get(kind, str(kind))
        props = content.table(1)
        if kind == IMAGE_PROPERTIES and props is not None:
            out["color_space"] = COLOR_SPACES.get(props.byte(0), str(props.byte(0)))
    for unit in t.tables(4):
        options = unit.table(1)
        if unit.byte(0) == NORMALIZATION_OPTIONS and options is not None:
            out["normalization"] = {"mean": options.floats(0), "std": options.floats(1)}
    stats = t.table(5)
    if stats is not None:
        out["stats"] = {"max": stats.floats(0), "min": stats.floats(1)}
    files = [_read_file(f) for f in t.tables(6)]
    if files:
        out["associated_files"] = files
    return out


def parse(metadata_buf: bytes) -> dict[str, Any]:
    """A ``ModelMetadata`` flatbuffer as a dict (the fields this module writes)."""
    import flatbuffers

    if not flatbuffers.util.BufferHasIdentifier(metadata_buf, 0, FILE_IDENTIFIER):
        raise ValueError("not a TFLite metadata buffer (file identifier M001 missing)")
    root = _Table(metadata_buf, int.from_bytes(metadata_buf[:4], "little"))  # root table offset
    return {
        "name": root.str(0), "description": root.str(1), "version": root.str(2),
        "subgraph_metadata": [{"input_tensor_metadata": [_read_tensor(t) for t in sg.tables(2)],
                               "output_tensor_metadata": [_read_tensor(t) for t in sg.tables(3)]}
                              for sg in root.tables(3)],
        "author": root.str(4), "license": root.str(5), "min_parser_version": root.str(7),
    }


def model_metadata(model_buf: bytes) -> dict[str, bytes]:
    """``Model.metadata`` entries of a .tflite file: name → bytes (``TFLITE_METADATA``, ``min_runtime_version``)."""
    fb = schema()
    model = fb.Model.GetRootAs(model_buf, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        b = model.Buffers(entry.Buffer())
        out[entry.Name().decode()] = b.DataAsNumpy().tobytes() if b.DataLength() else b""
    return out


def read(model_buf: bytes) -> dict[str, Any] | None:
    """The metadata of a .tflite file as a dict (None when it has none), with the packed files' names."""
    raw = model_metadata(model_buf).get(METADATA_NAME)
    if not raw:
        return None
    out = parse(raw)
    out["packed_files"] = packed_files(model_buf)
    return out


def packed_files(model_buf: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(model_buf)) as zf:
            return zf.namelist()
    except zipfile.BadZipFile:
        return []


# ------------------------------------------------------------------------------------------ populate


def _tflite_part(model_buf: bytes) -> bytes:
    """The flatbuffer without a zip of associated files appended by an earlier populate."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_buf)) as zf:
            first = min((i.header_offset for i in zf.infolist()), default=None)
    except zipfile.BadZipFile:
        return model_buf
    return model_buf if first is None else model_buf[:first]


def populate(model_buf: bytes, metadata_buf: bytes, files: dict[str, bytes] | None = None) -> bytes:
    """Attach ``metadata_buf`` and ``files`` to a .tflite model the way ``MetadataPopulator`` does.

    Any earlier ``TFLITE_METADATA`` entry and appended files are replaced. Models whose constants live after the
    flatbuffer (offset/size buffers, models > 2 GB) cannot be repacked here: ValueError.
    """
    import flatbuffers

    fb = schema()
    if not flatbuffers.util.BufferHasIdentifier(metadata_buf, 0, FILE_IDENTIFIER):
        raise ValueError("metadata buffer lacks the M001 file identifier")
    model_buf = _tflite_part(bytes(model_buf))
    raw = fb.Model.GetRootAs(model_buf, 0)
    if any(raw.Buffers(i).Offset() > 1 for i in range(raw.BuffersLength())):
        raise ValueError("the model keeps its constants outside the flatbuffer (offset buffers); "
                         "metadata cannot be attached by repacking")
    model = fb.ModelT.InitFromObj(raw)
    holder = fb.BufferT()
    holder.data = np.frombuffer(metadata_buf, np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    entry = next((m for m in model.metadata if (m.name or b"").decode() == METADATA_NAME), None)
    if entry is not None:
        model.buffers[entry.buffer] = holder
    else:
        model.buffers.append(holder)
        entry = fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    b = flatbuffers.Builder(len(model_buf) + len(metadata_buf) + 1024)
    b.Finish(model.Pack(b), file_identifier=TFLITE_IDENTIFIER)
    out = io.BytesIO()
    out.write(b.Output())
    if files:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:  # the extractor wants stored files
            for name, data in files.items():
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)  # reproducible bytes
    return out.getvalue()


# ------------------------------------------------------------------------------------------ from a profile


def _signature_order(model_buf: bytes, signature_key: str) -> tuple[list[tuple[str, list[int], str]], ...]:
    """Subgraph 0's inputs and outputs in order: (signature name, shape, dtype)."""
    fb = schema()
    model = fb.Model.GetRootAs(model_buf, 0)
    sg = model.Subgraphs(0)
    types = enum_names(fb.TensorType)
    names: dict[int, str] = {}
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        if sig.SubgraphIndex() != 0 or (names and sig.SignatureKey().decode() != signature_key):
            continue
        for get, n in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
            names.update({get(j).TensorIndex(): get(j).Name().decode() for j in range(n)})

    def describe(idx: int) -> tuple[str, list[int], str]:
        t = sg.Tensors(idx)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        return names.get(idx, t.Name().decode()), shape, types.get(t.Type(), "?")

    return ([describe(sg.Inputs(i)) for i in range(sg.InputsLength())],
            [describe(sg.Outputs(i)) for i in range(sg.OutputsLength())])


def plan(model_buf: bytes, app: AppMetadata, *, nhwc: bool,
         signature_key: str = "serving_default") -> tuple[ModelMetadata, dict[str, bytes], dict[str, Any], list[str]]:
    """Match the profile's metadata to the model's tensors: metadata, files to pack, a summary, warnings."""
    ins, outs = _signature_order(model_buf, signature_key)
    warnings: list[str] = []
    summary: dict[str, Any] = {k: v for k, v in (("name", app.name), ("description", app.description),
                                                 ("version", app.version), ("author", app.author),
                                                 ("license", app.license)) if v}
    inputs = []
    for name, shape, dtype in ins:
        image = nhwc and len(shape) == 4 and shape[-1] in (1, 3)
        channels = shape[-1] if image else None
        kw: dict[str, Any] = {}
        if image:
            kw["color_space"] = 1 if channels == 3 else 2
        if app.input_mean:
            mean, std = tuple(float(v) for v in app.input_mean), tuple(float(v) for v in app.input_std)
            if channels and len(mean) not in (1, channels):
                warnings.append(f"METADATA: {len(mean)} normalization values for input '{name}' with {channels} "
                                "channels: apps read them per channel")
            kw.update(mean=mean, std=std,
                      description=f"raw 0-255 values normalized as (x - mean) / std, mean {list(mean)}, "
                                  f"std {list(std)}")
            if dtype == "FLOAT32":
                m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
                kw.update(stats_min=tuple(float(v) for v in (0.0 - m) / s),
                          stats_max=tuple(float(v) for v in (255.0 - m) / s))
        inputs.append(TensorMetadata(name, **kw))
    if app.input_mean:
        summary["normalization"] = {"mean": list(app.input_mean), "std": list(app.input_std),
                                    "inputs": [t.name for t in inputs]}
    files: dict[str, bytes] = {}
    label_output = None
    if app.labels:
        label_output = next((n for n, shape, _ in outs if shape and shape[-1] == len(app.labels)), None)
        if label_output is None:
            warnings.append(f"METADATA: {len(app.labels)} class names but no output has {len(app.labels)} values "
                            f"on its last axis ({', '.join(f'{n} {s}' for n, s, _ in outs)}): {LABELS_FILE} was not "
                            "packed into the model")
        else:
            files[LABELS_FILE] = ("\n".join(app.labels) + "\n").encode()
            summary["labels"] = {"file": LABELS_FILE, "count": len(app.labels), "output": label_output}
    outputs = []
    for name, shape, _ in outs:
        if name == label_output:
            outputs.append(TensorMetadata(name, description=f"scores of the {len(app.labels)} classes in "
                                                            f"{LABELS_FILE}",
                                          associated_files=(AssociatedFile(LABELS_FILE, "class names, one per line",
                                                                           TENSOR_AXIS_LABELS),)))
        else:
            outputs.append(TensorMetadata(name))
    meta = ModelMetadata(name=app.name, description=app.description, version=app.version, author=app.author,
                         license=app.license, inputs=tuple(inputs), outputs=tuple(outputs))
    summary["min_parser_version"] = meta.min_parser_version
    summary["associated_files"] = sorted(files)
    return meta, files, summary, warnings


def embed(model_buf: bytes, app: AppMetadata, *, nhwc: bool,
          signature_key: str = "serving_default") -> tuple[bytes, dict[str, Any], list[str]]:
    """Write the profile's app metadata into a .tflite model: (new model bytes, summary for the manifest, warnings)."""
    meta, files, summary, warnings = plan(model_buf, app, nhwc=nhwc, signature_key=signature_key)
    out = populate(model_buf, build(meta), files)
    runtime = model_metadata(out).get("min_runtime_version")
    if runtime:
        summary["min_runtime_version"] = runtime.rstrip(b"\0").decode(errors="replace")
    return out, summary, warnings

"""Read a saved ``.mlpackage`` into plain Python: the MIL program's ops, their declared types, and constant values.

Layout of a package (measured with coremltools 9.0)::

    Manifest.json                         item list; rootModelIdentifier names the spec item
    Data/com.apple.CoreML/model.mlmodel   protobuf ``Model`` whose ``mlProgram`` holds the MIL program
    Data/com.apple.CoreML/weights/weight.bin
        64-byte storage header (uint32 count, uint32 version=2, reserved)
        per blob: 64-byte metadata (uint32 sentinel 0xDEADBEEF, uint32 blob dtype, uint64 size in bytes,
        uint64 data offset, uint64 padding bits, reserved) then the data, each 64-byte aligned.
        Sub-byte types (int4, uint1…uint6) are packed LSB-first.

Nothing here imports coremltools itself (see ``proto.py``) or any ML framework.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import safety
from edgepack.backends.coreml.mil.proto import modules
from edgepack.errors import InputError

# MIL DataType enum value → our dtype name (MIL.proto).
MIL_DTYPES = {
    1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16",
    21: "int8", 22: "int16", 23: "int32", 24: "int64", 25: "int4",
    31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64", 35: "uint4", 36: "uint2", 37: "uint1", 38: "uint6",
    39: "uint3", 40: "fp8e4m3", 41: "fp8e5m2",
}
# Blob storage dtype enum (MILBlob/Blob/BlobDataType.hpp) → our dtype name.
BLOB_DTYPES = {
    1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4", 9: "uint1",
    10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
}
# How each dtype is held in numpy (sub-byte integers widen to a byte; bf16 widens to fp32).
NUMPY_DTYPES = {
    "bool": np.bool_, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "bf16": np.float32,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "int4": np.int8,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "uint1": np.uint8, "uint2": np.uint8, "uint3": np.uint8, "uint4": np.uint8, "uint6": np.uint8,
}
SUB_BYTE_BITS = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}
FLOAT_DTYPES = frozenset({"fp16", "fp32", "fp64", "bf16"})
BLOB_SENTINEL = 0xDEADBEEF
OPSET_IOS = {"CoreML5": 15, "CoreML6": 16, "CoreML7": 17, "CoreML8": 18, "CoreML9": 26}


@dataclass(frozen=True)
class TensorType:
    """A declared tensor type: dtype name and shape (``None`` = unknown dimension)."""

    dtype: str
    shape: tuple[int | None, ...] | None  # None = unknown rank

    def __str__(self) -> str:
        dims = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclass(frozen=True)
class Arg:
    """One argument binding: a variable name, or an inline constant value."""

    name: str | None = None
    value: Any = None


@dataclass
class Op:
    type: str
    name: str  # the op's "name" attribute, else its first output
    inputs: dict[str, list[Arg]]
    outputs: list[tuple[str, TensorType]]
    attributes: dict[str, Any] = field(default_factory=dict)  # values, "name" excluded


@dataclass
class Program:
    """The ``main`` function of an ML program, ready to evaluate."""

    path: Path
    opset: str
    ios: int  # 15, 16, 17, 18 … (the opset's deployment target)
    spec_version: int
    inputs: list[tuple[str, TensorType]]
    outputs: list[str]
    output_types: dict[str, TensorType]
    ops: list[Op]
    description: Any  # protobuf ModelDescription (feature names, metadata, classifier labels)
    classifier: dict[str, Any] | None = None

    def op_types(self) -> list[str]:
        return sorted({op.type for op in self.ops})


# ------------------------------------------------------------------------------------------ values


def unpack_bits(raw: bytes | np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unsigned ``nbits``-wide integers packed LSB-first (element 0 in the lowest bits of byte 0)."""
    bits = np.unpackbits(np.frombuffer(bytes(raw), np.uint8), bitorder="little")
    if bits.size < count * nbits:
        raise InputError(f"packed data holds {bits.size // nbits} {nbits}-bit values, {count} needed")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint16)
    return (bits << np.arange(nbits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)


def decode_raw(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Bytes of a stored tensor → numpy array of ``shape`` (dtype as in ``NUMPY_DTYPES``)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype in SUB_BYTE_BITS:
        out = unpack_bits(raw, SUB_BYTE_BITS[dtype], count)
        if dtype == "int4":
            out = np.where(out >= 8, out.astype(np.int16) - 16, out).astype(np.int8)
        return out.reshape(shape)
    if dtype == "bf16":
        u16 = np.frombuffer(raw, np.uint16, count)
        return (u16.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dtype not in NUMPY_DTYPES:
        raise InputError(f"stored tensors of type {dtype} are not supported by the evaluator")
    npd = np.dtype(NUMPY_DTYPES[dtype])
    if len(raw) < count * npd.itemsize:
        raise InputError(f"stored tensor is {len(raw)} bytes, {count * npd.itemsize} expected for {dtype}{shape}")
    return np.frombuffer(raw, npd, count).reshape(shape).copy()


class WeightFile:
    """A ``weight.bin`` blob store, read through its 64-byte per-blob metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        if len(self.data) < 64:
            raise InputError(f"{path}: weight file is truncated")
        self.count, self.version = struct.unpack_from("<II", self.data, 0)
        if self.version != 2:
            raise InputError(f"{path}: weight storage version {self.version}, only version 2 is known")

    def read(self, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        if offset + 64 > len(self.data):
            raise InputError(f"{self.path}: blob offset {offset} is past the end of the file")
        sentinel, blob_dtype, size, data_offset, _pad_bits = struct.unpack_from("<IIQQQ", self.data, offset)
        if sentinel != BLOB_SENTINEL:
            raise InputError(f"{self.path}: no blob metadata at offset {offset} (sentinel {sentinel:#x})")
        stored = BLOB_DTYPES.get(blob_dtype)
        if stored is None:
            raise InputError(f"{self.path}: blob at {offset} has unknown storage type {blob_dtype}")
        if stored != dtype and not (dtype == "bool" and stored == "uint8"):
            raise InputError(f"{self.path}: blob at {offset} stores {stored}, the program declares {dtype}")
        raw = self.data[data_offset: data_offset + size]
        if len(raw) != size:
            raise InputError(f"{self.path}: blob at {offset} is truncated")
        out = decode_raw(raw, stored, shape)
        return out.astype(np.bool_) if dtype == "bool" else out


def tensor_type(vt: Any) -> TensorType | None:
    """ValueType protobuf → TensorType (None for list/tuple/dict/state types)."""
    if vt.WhichOneof("type") != "tensorType":
        return None
    tt = vt.tensorType
    dtype = MIL_DTYPES.get(tt.dataType, f"dtype#{tt.dataType}")
    if tt.rank < 0:
        return TensorType(dtype, None)
    dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
    return TensorType(dtype, dims)


def _immediate(tt: TensorType, imm: Any) -> Any:
    tv = imm.tensor
    kind = tv.WhichOneof("value")
    shape = tt.shape or ()
    if kind == "strings":
        vals = list(tv.strings.values)
        return vals[0] if not shape else np.array(vals, dtype=object).reshape(shape)
    if kind == "bytes":
        return decode_raw(bytes(tv.bytes.values), tt.dtype, shape)
    if kind is None:
        return np.zeros(shape, NUMPY_DTYPES.get(tt.dtype, np.float32))
    vals = list(getattr(tv, kind).values)
    return np.array(vals, dtype=NUMPY_DTYPES.get(tt.dtype, np.float32)).reshape(shape)


class ValueReader:
    """Turns protobuf ``Value`` messages into numpy arrays / Python strings."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._files: dict[str, WeightFile] = {}

    def read(self, value: Any) -> Any:
        kind = value.WhichOneof("value")
        tt = tensor_type(value.type)
        if tt is None:  # lists (classify's class names); dicts/tuples appear only in metadata
            if kind == "immediateValue" and value.immediateValue.WhichOneof("value") == "list":
                return [self.read(v) for v in value.immediateValue.list.values]
            return None
        if kind == "immediateValue":
            if value.immediateValue.WhichOneof("value") != "tensor":
                return None
            return _immediate(tt, value.immediateValue)
        if kind == "blobFileValue":
            if tt.shape is None or any(d is None for d in tt.shape):
                raise InputError(f"weight blob with unknown shape {tt}")
            fname = value.blobFileValue.fileName
            if fname not in self._files:
                path = safety.coreml_weight_file(self.model_dir, fname)  # never read outside the package (= verify)
                if not path.is_file():
                    raise InputError(f"weight file missing from the package: {path}")
                self._files[fname] = WeightFile(path)
            return self._files[fname].read(value.blobFileValue.offset, tt.dtype, tuple(tt.shape))
        return None


# ------------------------------------------------------------------------------------------ package


def spec_path(package: Path) -> Path:
    """The ``model.mlmodel`` inside a package (via Manifest.json), or the path itself for a bare spec."""
    package = Path(package)
    if package.is_file():
        return package
    manifest = package / "Manifest.json"
    if not manifest.is_file():
        raise InputError(f"{package}: not a Core ML package (no Manifest.json)")
    try:
        info = json.loads(safety.read_bytes(manifest, "Core ML package manifest"))
        root = info.get("rootModelIdentifier")
        entry = info.get("itemInfoEntries", {}).get(root)
    except (ValueError, RecursionError, AttributeError, TypeError):
        raise InputError(f"{manifest}: not a readable Core ML package manifest") from None
    if entry is None:
        raise InputError(f"{manifest}: rootModelIdentifier names no item")
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise InputError(f"{manifest}: the root item has no path")
    return safety.inside(package / "Data", entry["path"], f"{manifest}: model spec")


def load_program(package: Path | str) -> Program:
    """Parse a ``.mlpackage`` (or bare ``.mlmodel`` next to its ``weights/``) into a Program."""
    model_pb2, _ = modules()
    path = spec_path(Path(package))
    if not path.is_file():
        raise InputError(f"{path}: model spec missing from the package")
    model = model_pb2.Model()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError subclasses
        raise InputError(f"{path}: not a Core ML model spec ({type(e).__name__})") from None
    if model.WhichOneof("Type") == "pipelineClassifier" or model.WhichOneof("Type") == "pipeline":
        raise InputError(f"{path}: Core ML pipelines are not supported by the evaluator")
    if model.WhichOneof("Type") != "mlProgram":
        raise InputError(f"{path}: not an ML program (type {model.WhichOneof('Type')})",
                         hint="the evaluator runs ML programs (convert_to='mlprogram'), not neural networks")
    func = model.mlProgram.functions.get("main")
    if func is None:
        raise InputError(f"{path}: ML program has no 'main' function")
    opset = func.opset
    block = func.block_specializations[opset]
    reader = ValueReader(path.parent)
    ops = [_read_op(o, reader) for o in block.operations]
    inputs = [(i.name, tensor_type(i.type)) for i in func.inputs]
    out_types: dict[str, TensorType] = {}
    for op in ops:
        for name, tt in op.outputs:
            out_types[name] = tt
    classifier = None
    desc = model.description
    if model.mlProgram and desc.predictedFeatureName:
        classifier = {"predicted": desc.predictedFeatureName, "probabilities": desc.predictedProbabilitiesName}
    return Program(path=path, opset=opset, ios=OPSET_IOS.get(opset, 18), spec_version=model.specificationVersion,
                   inputs=inputs, outputs=list(block.outputs), output_types=out_types, ops=ops,
                   description=desc, classifier=classifier)


def _read_op(o: Any, reader: ValueReader) -> Op:
    inputs: dict[str, list[Arg]] = {}
    for key, argument in o.inputs.items():
        args = []
        for b in argument.arguments:
            if b.WhichOneof("binding") == "name":
                args.append(Arg(name=b.name))
            else:
                args.append(Arg(value=reader.read(b.value)))
        inputs[key] = args
    attributes = {k: reader.read(v) for k, v in o.attributes.items() if k != "name"}
    outputs = [(n.name, tensor_type(n.type)) for n in o.outputs]
    name = o.attributes["name"].immediateValue.tensor.strings.values[0] if "name" in o.attributes else ""
    return Op(type=o.type, name=name or (outputs[0][0] if outputs else o.type), inputs=inputs, outputs=outputs,
              attributes=attributes)

"""Which model inputs carry code, decided before any framework loads them (``--trust-model-code`` opts in).

* TorchScript, ``.pt2`` and pickles: code by construction (see ``edgepack.sources.torch``; pickles are never loaded).
* ``.keras`` zips: ``config.json`` is read (after the zip guards) and every ``Lambda`` layer, serialized Python
  function and object whose module is not Keras' own is named.
* SavedModel folders are programs: every op of every graph function (initializers and the object graph's restore
  functions included) must be in :data:`SAFE_OPS`, a list of side-effect-free ops. File, network, Python-callback
  and unknown ops are refused, naming the op and the function. ``saved_model.pb`` is read with a small protobuf
  wire-format reader here, so no TensorFlow is imported to decide.

Checkpoint ops (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``) are allowed only in the top-level graph and in the
``__inference__traced_save_*``/``__inference__traced_restore_*`` functions TensorFlow writes for the saver, and no
other function may call those.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgepack import safety
from edgepack.errors import ConfigError, InputError

TRUST_HINT = "pass --trust-model-code only if you trust where this model comes from"

# Side-effect-free TensorFlow ops: math, nn, array, control flow, variables (in-memory), strings (pure).
SAFE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert AssignAddVariableOp
AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D AvgPoolGrad BatchMatMul BatchMatMulV2
BatchMatMulV3 BatchNormWithGlobalNormalization BatchToSpace BatchToSpaceND BiasAdd BiasAddV1 Bincount Bitcast
BitwiseAnd BitwiseOr BitwiseXor BroadcastArgs BroadcastGradientArgs BroadcastTo Bucketize Case Cast Ceil
CheckNumerics CheckNumericsV2 Cholesky ClipByValue ComplexAbs Concat ConcatOffset ConcatV2 Const
Conv Conv2D Conv2DBackpropFilter Conv2DBackpropInput Conv3D Conv3DBackpropInputV2 Cos Cosh CropAndResize Cross
Cumprod Cumsum DepthToSpace DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput Dequantize DestroyResourceOp
Diag DiagPart Digamma Dilation2D DisableCopyOnRead Div DivNoNan DynamicPartition DynamicStitch Einsum Elu Empty
EnsureShape Enter Equal Erf Erfc Exit Exp ExpandDims Expm1 ExtractImagePatches FakeQuantWithMinMaxArgs
FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel Fill Floor FloorDiv FloorMod FusedBatchNorm
FusedBatchNormV2 FusedBatchNormV3 FusedPadConv2D FusedResizeAndPadConv2D Gather GatherNd GatherV2 Greater
GreaterEqual HashTableV2 Identity IdentityN If Imag InTopKV2 InvertPermutation IsFinite IsInf IsNan IsVariableInitialized
L2Loss LRN LeakyRelu LeftShift Less LessEqual Lgamma LinSpace ListDiff Log Log1p LogSoftmax LogicalAnd LogicalNot
LogicalOr LookupTableFindV2 LookupTableImportV2 LookupTableSizeV2 LoopCond MatMul MatrixBandPart MatrixDeterminant
MatrixDiag MatrixDiagPart MatrixDiagPartV3 MatrixDiagV3 MatrixInverse MatrixSetDiag MatrixSetDiagV3 MatrixSolve
MatrixTriangularSolve Max MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax Maximum Mean Merge Min Minimum MirrorPad
Mod Mul MulNoNan Multinomial Ndtri Neg NextIteration NoOp NonMaxSuppressionV2 NonMaxSuppressionV3
NonMaxSuppressionV4 NonMaxSuppressionV5 NotEqual OneHot OnesLike Pack Pad PadV2 ParallelConcat PartitionedCall
Placeholder PlaceholderWithDefault Pow PreventGradient Prod QuantizeAndDequantizeV2 QuantizeAndDequantizeV3
QuantizeAndDequantizeV4 QuantizeV2 RFFT IRFFT FFT IFFT Range Rank ReadVariableOp Real RealDiv Reciprocal Relu Relu6
Reshape ResizeArea ResizeBicubic ResizeBilinear ResizeNearestNeighbor ResourceGather ResourceGatherNd
ResourceScatterAdd ResourceScatterUpdate ResourceStridedSliceAssign Reverse ReverseSequence ReverseV2 RightShift
Rint Roll Round Rsqrt ScatterNd ScatterNdAdd ScatterNdUpdate SegmentMax SegmentMean SegmentMin SegmentProd
SegmentSum Select SelectV2 Selu Shape ShapeN Sigmoid Sign Sin Sinh Size Slice Snapshot Softmax Softplus Softsign
SpaceToBatch SpaceToBatchND SpaceToDepth SparseSoftmaxCrossEntropyWithLogits SparseToDense Split SplitV Sqrt
Square SquaredDifference Squeeze StatefulPartitionedCall StatelessIf StatelessWhile StopGradient StridedSlice
StridedSliceGrad Sub Sum Switch Tan Tanh TensorListFromTensor TensorListGetItem TensorListLength
TensorListReserve TensorListSetItem TensorListStack TensorScatterAdd TensorScatterUpdate Tile TopKV2 Transpose
TruncateDiv TruncateMod Unique Unpack UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentSum VarHandleOp
VarIsInitializedOp VariableShape VariableV2 Where While Xdivy Xlog1py Xlogy ZerosLike Zeta
StaticRegexFullMatch StringJoin Substr StringLength StringFormat ShardedFilename
""".split())

# ops that touch checkpoint files: only where TensorFlow's own saver puts them
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "SaveSlices", "RestoreSlice", "Save",
                            "Restore"})
_SAVER_FN = re.compile(r"^__inference__traced_(save|restore)_\d+$")


@dataclass
class CodeFinding:
    """Why a model counts as code: each item names what was found and where."""

    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasons)


# ------------------------------------------------------------------------------------------ protobuf wire format


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value) of one message: value is an int or a memoryview of the bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        fn, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated field")
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if i > n:
            raise ValueError("truncated message")
        yield fn, wt, v


def _sub(buf: memoryview, number: int):
    for fn, wt, v in _fields(buf):
        if fn == number and wt == 2:
            yield v


def _text(v: memoryview) -> str:
    return bytes(v).decode("utf-8", errors="replace")


def _func_refs(attr_value: memoryview, depth: int = 0) -> list[str]:
    """Function names referenced by an AttrValue (``func`` = 10, ``list.func`` = 1.9)."""
    out = []
    if depth > 4:
        return out
    for fn, wt, v in _fields(attr_value):
        if wt != 2:
            continue
        if fn == 10:  # NameAttrList
            out += [_text(n) for n in _sub(v, 1)]
        elif fn == 1:  # ListValue
            for f in _sub(v, 9):
                out += [_text(n) for n in _sub(f, 1)]
    return out


def _node(node: memoryview) -> tuple[str, list[str]]:
    """(op, functions referenced in its attrs) of a NodeDef."""
    op, refs = "", []
    for fn, wt, v in _fields(node):
        if fn == 2 and wt == 2:
            op = _text(v)
        elif fn == 5 and wt == 2:  # map<string, AttrValue> entry
            for vv in _sub(v, 2):
                refs += _func_refs(vv)
    return op, refs


def savedmodel_ops(pb: bytes) -> dict[str, list[tuple[str, list[str]]]]:
    """Function name (``<graph>`` for top-level nodes) → [(op, referenced functions)] of every meta graph."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    buf = memoryview(pb)
    for meta in _sub(buf, 2):  # SavedModel.meta_graphs
        for graph in _sub(meta, 2):  # MetaGraphDef.graph_def
            for fn, wt, v in _fields(graph):
                if fn == 1 and wt == 2:  # GraphDef.node
                    out.setdefault("<graph>", []).append(_node(v))
                elif fn == 2 and wt == 2:  # GraphDef.library
                    for func in _sub(v, 1):  # FunctionDefLibrary.function
                        name = ""
                        nodes = []
                        for ffn, fwt, fv in _fields(func):
                            if ffn == 1 and fwt == 2:  # OpDef signature
                                name = next((_text(n) for n in _sub(fv, 1)), "")
                            elif ffn == 3 and fwt == 2:  # node_def
                                nodes.append(_node(fv))
                        out.setdefault(name or "<unnamed function>", []).extend(nodes)
    return out


def coreml_blob_files(spec: bytes, depth: int = 0) -> list[str]:
    """Every weight-blob file name (``BlobFileValue.fileName``) a Core ML model spec (``model.mlmodel``) names,
    read with the wire-format reader (no coremltools): ML programs, and the models inside pipelines.

    Raises ValueError for bytes that are not a protobuf message."""
    names: list[str] = []
    if depth > 8:
        raise ValueError("Core ML pipelines nested too deeply")

    def value(v: memoryview) -> None:  # MILSpec.Value: blobFileValue = 5 → fileName = 1
        for blob in _sub(v, 5):
            names.extend(_text(n) for n in _sub(blob, 1))

    def entries(m: memoryview, number: int):  # map<string, X> fields: entry.value = 2
        for entry in _sub(m, number):
            yield from _sub(entry, 2)

    def block(b: memoryview, level: int) -> None:
        if level > 64:
            raise ValueError("MIL blocks nested too deeply")
        for v in entries(b, 4):  # Block.attributes
            value(v)
        for op in _sub(b, 3):  # Block.operations
            for arg in entries(op, 2):  # Operation.inputs → Argument
                for binding in _sub(arg, 1):  # Argument.arguments → Binding.value = 2
                    for v in _sub(binding, 2):
                        value(v)
            for v in entries(op, 5):  # Operation.attributes
                value(v)
            for inner in _sub(op, 4):  # Operation.blocks
                block(inner, level + 1)

    buf = memoryview(spec)
    for program in _sub(buf, 502):  # Model.mlProgram
        for v in entries(program, 4):  # Program.attributes
            value(v)
        for function in entries(program, 2):  # Program.functions
            for v in entries(function, 4):  # Function.attributes
                value(v)
            for b in entries(function, 3):  # Function.block_specializations
                block(b, 0)
    for kind in (200, 201):  # pipelineClassifier / pipelineRegressor → pipeline = 1 → models = 1
        for wrapper in _sub(buf, kind):
            for pipe in _sub(wrapper, 1):
                for model in _sub(pipe, 1):
                    names += coreml_blob_files(bytes(model), depth + 1)
    for pipe in _sub(buf, 202):  # Model.pipeline → models = 1
        for model in _sub(pipe, 1):
            names += coreml_blob_files(bytes(model), depth + 1)
    return names


def scan_savedmodel(folder: Path) -> CodeFinding:
    """Every op outside the allowlist, with the function that uses it."""
    pb_path = Path(folder) / "saved_model.pb"
    data = safety.read_bytes(pb_path, "SavedModel graph", max_bytes=safety.max_input_bytes())
    try:
        functions = savedmodel_ops(data)
    except (ValueError, IndexError) as e:
        raise InputError(f"{safety.shown(pb_path)}: not a readable SavedModel ({e})",
                         hint="the file may be truncated or corrupt") from None
    if not functions:
        raise InputError(f"{safety.shown(pb_path)}: a SavedModel without any graph",
                         hint="the file may be truncated or corrupt")
    library = set(functions) - {"<graph>"}
    saver_fns = {f for f in library if _SAVER_FN.match(f)}
    finding = CodeFinding()
    seen: set[tuple[str, str]] = set()
    for fname, nodes in sorted(functions.items()):
        for op, refs in nodes:
            bad = None
            if op in CHECKPOINT_OPS:
                if fname != "<graph>" and fname not in saver_fns:
                    bad = f"op {op} (writes or reads checkpoint files) in function {fname}"
            elif op in saver_fns or any(r in saver_fns for r in refs):
                if fname != "<graph>":
                    bad = f"function {fname} calls the checkpoint function {op if op in saver_fns else refs[0]}"
            elif op not in SAFE_OPS and op not in library:
                where = "the top-level graph" if fname == "<graph>" else f"function {fname}"
                bad = f"op {op or '<empty>'} in {where}"
            if bad and (fname, op) not in seen:
                seen.add((fname, op))
                finding.reasons.append(bad)
    return finding


# ------------------------------------------------------------------------------------------ keras


_KERAS_MODULE = re.compile(r"^(keras|tf_keras|tensorflow\.keras|builtins)(\.|$)")


def _walk_keras(obj, path: str, finding: CodeFinding, depth: int = 0) -> None:
    if depth > 200:
        raise InputError("the Keras config nests more than 200 levels", hint="the file may be forged")
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        name = obj.get("config", {}).get("name") if isinstance(obj.get("config"), dict) else None
        label = f"{cls} '{safety.shown(name, 60)}'" if name else str(cls)
        module = obj.get("module")
        if cls in ("Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__") or (
                cls == "function" and not (isinstance(module, str) and re.match(r"^keras(\.|$)", module))):
            finding.reasons.append(f"a {safety.shown(label, 80)} layer/object (Python code)")
        else:
            module = obj.get("module")
            registered = obj.get("registered_name")
            if isinstance(module, str) and cls is not None and not _KERAS_MODULE.match(module):
                finding.reasons.append(f"custom object {safety.shown(label, 80)} from module {safety.shown(module, 60)}")
            elif isinstance(registered, str) and ">" in registered:
                finding.reasons.append(f"custom registered object {safety.shown(registered, 80)}")
        for k, v in obj.items():
            _walk_keras(v, f"{path}.{k}", finding, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk_keras(v, f"{path}[{i}]", finding, depth + 1)


def scan_keras(path: Path) -> CodeFinding:
    """Lambda layers and custom objects in a ``.keras`` zip's config (zip guards first)."""
    import zipfile

    infos = safety.check_zip(path, "Keras model")
    config = next((i for i in infos if i.filename == "config.json"), None)
    if config is None:
        raise InputError(f"{safety.shown(path)}: a .keras file without config.json", hint="re-save the model")
    if config.file_size > safety.max_text_bytes():
        raise InputError(f"{safety.shown(path)}: config.json unpacks to {config.file_size // safety.MB} MB, over "
                         f"the {safety.max_text_bytes() // safety.MB} MB limit", hint="the file may be forged")
    try:
        with zipfile.ZipFile(path) as zf, zf.open(config) as f:
            data = json.loads(f.read(safety.max_text_bytes() + 1))
    except (ValueError, RecursionError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{safety.shown(path)}: unreadable config.json ({safety.shown(e, 100)})",
                         hint="re-save the model") from None
    finding = CodeFinding()
    _walk_keras(data, "config", finding)
    return finding


# ------------------------------------------------------------------------------------------ decision

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle")


def require_trust(model: str, finding: CodeFinding, trust: bool, what: str) -> list[str]:
    """Refuse code-carrying models without the flag; with it, the reasons to record in the manifest."""
    if not finding:
        return []
    first = finding.reasons[0]
    more = f" (and {len(finding.reasons) - 1} more)" if len(finding.reasons) > 1 else ""
    if not trust:
        raise ConfigError(f"{safety.shown(model)}: {what} can carry code that runs when loaded: {first}{more}",
                          hint=TRUST_HINT)
    return [f"{what}: {r}" for r in finding.reasons]


__all__ = ["CHECKPOINT_OPS", "CodeFinding", "PICKLE_SUFFIXES", "SAFE_OPS", "require_trust", "savedmodel_ops",
           "scan_keras", "scan_savedmodel"]

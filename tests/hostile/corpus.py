"""The hostile corpus: every input generated at test time, one folder per case.

Each case folder holds the hostile input(s), a ``CANARY`` path that any executed payload would create, planted
victim files (outside the output folder, and sometimes inside it) and the command line to run. A case passes when
edgepack refuses it with exit 2, exactly one ``error:`` line and a hint, no traceback, in time, without a signal
death, without the canary, and with every file of the case folder as it was (nothing written, nothing left behind).
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

CLASSES = ("code", "paths", "files", "hangs", "tracebacks", "bundles")

# More corpus modules, each with ``CLASSES`` and ``build(root, fake_model, tiny_onnx, bundle) -> list[Case]`` (the
# same arguments as :func:`build`); test_hostile_corpus.py runs their cases with these. One module per line.
CORPUS_MODULES = [
    "corpus_runner",  # bundle runner inputs, verify, plug-ins, settings, messages
]


@dataclass
class Case:
    name: str
    cls: str  # one of CLASSES
    argv: list[str]
    needs: str = ""  # "onnx": needs the onnx package (the real-CLI subset uses these)
    fragment: str = ""  # a word the error line must contain
    real_cli: bool = False  # also run through `python -m edgepack`
    env: dict[str, str] = field(default_factory=dict)
    entry: str = "cli"  # "cli": edgepack.cli.main(); "runner": python -I <argv[0]> (a bundle's run_bundle.py)
    sys_path: list[str] = field(default_factory=list)  # prepended to sys.path in the child (installed plug-ins)
    expect_exit: int = 2  # 0: the command must succeed (e.g. doctor listing a broken plug-in as one row)
    stdout_has: list[str] = field(default_factory=list)  # words stdout must contain (when expect_exit is 0)


# ------------------------------------------------------------------------------------------ payload helpers


class _Touch:
    """Unpickling this creates the canary file (what a pickled model could do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def pickle_payload(canary: Path) -> bytes:
    return pickle.dumps(_Touch(str(canary)))


def torch_like_zip(path: Path, canary: Path) -> Path:
    """A torch.save-shaped zip whose data.pkl runs a command when unpickled."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_payload(canary))
        zf.writestr("archive/version", "3\n")
    return path


def lambda_code(canary: Path) -> str:
    """A Keras Lambda layer's serialized function (marshal'd bytecode) that creates the canary."""
    src = f"def f(x):\n    open({str(canary)!r}, 'w').write('ran')\n    return x\n"
    ns: dict = {}
    exec(compile(src, "<lambda>", "exec"), ns)  # noqa: S102 - builds the payload; never called
    return base64.b64encode(marshal.dumps(ns["f"].__code__)).decode()


def _layer(cls: str, name: str, config: dict | None = None, module: str = "keras.layers") -> dict:
    return {"module": module, "class_name": cls, "config": {"name": name, **(config or {})},
            "registered_name": None}


def keras_zip(path: Path, layers: list[dict], extra: dict[str, bytes] | None = None) -> Path:
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": [
        _layer("InputLayer", "in", {"batch_shape": [None, 4]}), *layers]}, "registered_name": None}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
    return path


# protobuf wire format, for SavedModels written without TensorFlow
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def pb_node(name: str, op: str, calls: str | None = None) -> bytes:
    attr = _ld(5, _ld(1, "f") + _ld(2, _ld(10, _ld(1, calls)))) if calls else b""
    return _ld(1, name) + _ld(2, op) + attr


def pb_function(name: str, nodes: list[bytes]) -> bytes:
    return _ld(1, _ld(1, name)) + b"".join(_ld(3, n) for n in nodes)


def saved_model(folder: Path, top: list[bytes], functions: list[bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    graph = b"".join(_ld(1, n) for n in top) + _ld(2, b"".join(_ld(1, f) for f in functions))
    (folder / "saved_model.pb").write_bytes(_varint(1 << 3 | 0) + _varint(1) + _ld(2, _ld(2, graph)))
    (folder / "variables").mkdir(exist_ok=True)
    return folder


SAFE_BODY = [pb_node("x", "Placeholder"), pb_node("w", "Const"), pb_node("y", "MatMul"), pb_node("r", "Relu")]


def evil_savedmodel(folder: Path, op: str, where: str = "serve", canary: Path | None = None) -> Path:
    """A SavedModel whose serving function (or initializer, or top-level graph) uses ``op``."""
    fn_nodes = SAFE_BODY + [pb_node("evil", op)]
    top = [pb_node("sig", "StatefulPartitionedCall", calls="__inference_serve_1")]
    if where == "top":
        return saved_model(folder, top + [pb_node("evil", op)], [pb_function("__inference_serve_1", SAFE_BODY)])
    name = {"serve": "__inference_serve_1", "init": "__inference__initializer_7",
            "restore": "__inference__creator_3"}[where]
    funcs = [pb_function(name, fn_nodes)]
    if name != "__inference_serve_1":
        funcs.append(pb_function("__inference_serve_1", SAFE_BODY))
    return saved_model(folder, top, funcs)


# ------------------------------------------------------------------------------------------ data helpers


def png(path: Path, width: int, height: int, truncated: bool = False) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height)) if width * height <= 1 << 20 else b"\0" * 64
    idat = zlib.compress(rows)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(data[:30] if truncated else data)
    return path


def zip_bomb(path: Path, member: str, unpacked: int, header: bytes = b"") -> Path:
    """A zip whose one member inflates to ``unpacked`` bytes (streamed: never held in memory)."""
    block = b"\x00" * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(member, "w", force_zip64=True) as f:
            f.write(header)
            left = unpacked - len(header)
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
    return path


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_raw(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str | Path) -> Path:
    os.symlink(target, path)
    return path


def profile(path: Path, body: str, backend: str = "fake_identity") -> Path:
    path.write_text(f'backend = "{backend}"\nprecision = "fp32"\n{body}')
    return path


def resign(bundle: Path, mutate: Callable[[dict], None] | None = None) -> None:
    """Rewrite a bundle's manifest: files re-listed (sha256 + size) after tampering, then ``mutate`` on the dict."""
    from edgepack.core import integrity

    mf = bundle / "manifest.json"
    data = json.loads(mf.read_text())
    data["files"] = [{"path": rel, "size": (bundle / rel).stat().st_size,
                      "sha256": integrity.sha256_file(bundle / rel)}
                     for rel in integrity.list_files(bundle) if rel not in ("manifest.json", "report.json")
                     and (bundle / rel).is_file() and not (bundle / rel).is_symlink()]
    if mutate:
        mutate(data)
    mf.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------ the corpus


def tampered_copy(bundle: Path, mutate: Callable[[Path], None], resign_after: bool = True,
                  manifest: Callable[[dict], None] | None = None) -> Callable[[Path], None]:
    """A case setup: a copy of ``bundle`` at ``<case>/out/b``, mutated, then (by default) re-signed so only the
    mutation is wrong. Shared by every corpus module."""
    def setup(d: Path) -> None:
        b = d / "out" / "b"
        shutil.copytree(bundle, b)
        mutate(b)
        if resign_after:
            resign(b, manifest)
    return setup


def make_case(root: Path, name: str, cls: str, argv: list[str], setup: Callable[[Path], None] | None = None,
              **kw) -> Case:
    """One case folder ``root/<name>/`` with ``out/`` and a planted ``victim/keep.txt``; ``{D}`` in the argv (and
    in ``sys_path``) becomes the folder. Shared by every corpus module."""
    d = root / name
    d.mkdir(parents=True)
    (d / "out").mkdir()
    (d / "victim").mkdir()
    (d / "victim" / "keep.txt").write_text("victim file: must stay unchanged\n")
    if setup:
        setup(d)
    if "sys_path" in kw:
        kw["sys_path"] = [p.replace("{D}", str(d)) for p in kw["sys_path"]]
    return Case(name, cls, [a.replace("{D}", str(d)) for a in argv], **kw)


def build(root: Path, fake_model: Path, tiny_onnx: Path | None, bundle: Path) -> list[Case]:
    """Write every case under ``root/<name>/`` and return the cases. ``bundle`` is a finished fake bundle."""
    cases: list[Case] = []

    def case(name: str, cls: str, argv: list[str], setup: Callable[[Path], None] | None = None, **kw) -> None:
        cases.append(make_case(root, name, cls, argv, setup, **kw))

    def copy_model(d: Path, name: str = "linear.fakemodel") -> Path:
        return Path(shutil.copy(fake_model, d / name))

    def calib(d: Path, name: str = "cal.npz") -> Path:
        np.savez(d / name, input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
        return d / name

    base = ["build", "{D}/linear.fakemodel", "--out", "{D}/out", "-c", "{D}/cal.npz"]

    def with_model(extra: Callable[[Path], None] | None = None):
        def setup(d: Path) -> None:
            copy_model(d)
            calib(d)
            profile(d / "ok.toml", "")
            if extra:
                extra(d)
        return setup

    # ---------------------------------------------------------------- code-carrying inputs (canaries)
    for suffix in (".pkl", ".pickle", ".joblib"):
        case(f"pickle{suffix}", "code", ["build", f"{{D}}/model{suffix}", "-t", "{D}/ok.toml", "--out", "{D}/out"],
             lambda d, s=suffix: (with_model()(d), (d / f"model{s}").write_bytes(pickle_payload(d / "CANARY"))),
             fragment="pickled")
    case("inspect-pickle", "code", ["inspect", "{D}/model.pkl"],
         lambda d: (d / "model.pkl").write_bytes(pickle_payload(d / "CANARY")), fragment="pickled")
    for suffix in (".pt", ".pth", ".ts", ".torchscript", ".pt2"):
        case(f"torch{suffix}", "code", ["build", f"{{D}}/model{suffix}", "-t", "{D}/ok.toml", "--input",
                                        "x=1x4", "--out", "{D}/out"],
             lambda d, s=suffix: (with_model()(d), torch_like_zip(d / f"model{s}", d / "CANARY")),
             fragment="carry code")
    case("inspect-torchscript", "code", ["inspect", "{D}/model.pt", "--input", "x=1x4"],
         lambda d: torch_like_zip(d / "model.pt", d / "CANARY"), fragment="carry code")
    for suffix in (".h5", ".hdf5"):
        case(f"keras{suffix}", "code", ["build", f"{{D}}/model{suffix}", "-t", "{D}/ok.toml", "--out", "{D}/out"],
             lambda d, s=suffix: (with_model()(d), (d / f"model{s}").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)),
             fragment="safe mode")

    def lam(d: Path) -> list[dict]:
        return [_layer("Lambda", "boom", {"function": {"class_name": "__lambda__", "config": {
            "code": lambda_code(d / "CANARY"), "defaults": None, "closure": None}}})]

    keras_variants = {
        "keras-lambda": lam,
        "keras-tfoplambda": lambda d: [_layer("TFOpLambda", "op", {"function": "io.write_file"})],
        "keras-custom-module": lambda d: [_layer("Evil", "e", module="os")],
        "keras-registered-custom": lambda d: [{**_layer("Dense", "d", {"units": 2}), "module": None,
                                               "registered_name": "evilpkg>Dense"}],
        "keras-nested-lambda": lambda d: [{"module": "keras", "class_name": "Functional", "config": {
            "name": "inner", "layers": [{"module": "keras.layers", "class_name": "TimeDistributed", "config": {
                "name": "td", "layer": lam(d)[0]}}]}}],
        "keras-function-object": lambda d: [_layer("Activation", "a", {"activation": {
            "class_name": "function", "config": "system", "module": "os"}})],
    }
    for name, layers in keras_variants.items():
        case(name, "code", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
             lambda d, lay=layers: (with_model()(d), keras_zip(d / "model.keras", lay(d))), fragment="carry code")
    case("inspect-keras-lambda", "code", ["inspect", "{D}/model.keras"],
         lambda d: keras_zip(d / "model.keras", lam(d)), fragment="Lambda")

    sm_ops = [("WriteFile", "serve"), ("ReadFile", "serve"), ("WriteFile", "init"), ("ReadFile", "restore"),
              ("WriteFile", "top"), ("EagerPyFunc", "serve"), ("PyFunc", "serve"), ("PyFuncStateless", "init"),
              ("SaveV2", "serve"), ("MatchingFiles", "serve"), ("DeleteFile", "init"), ("PrintV2", "serve"),
              ("InitializeTableFromTextFileV2", "init"), ("ImmutableConst", "serve"), ("TotallyUnknownOp", "serve"),
              ("DebugIdentityV2", "serve"), ("Rpc", "serve")]
    for op, where in sm_ops:
        case(f"savedmodel-{op}-{where}", "code", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
             lambda d, o=op, w=where: (with_model()(d), evil_savedmodel(d / "sm", o, w)), fragment=op)
    case("savedmodel-calls-saver", "code", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), saved_model(d / "sm", [], [
             pb_function("__inference__traced_save_9", [pb_node("s", "SaveV2")]),
             pb_function("__inference_serve_1", SAFE_BODY + [pb_node("c", "StatefulPartitionedCall",
                                                                      calls="__inference__traced_save_9")])])),
         fragment="checkpoint")
    case("inspect-savedmodel-WriteFile", "code", ["inspect", "{D}/sm"],
         lambda d: evil_savedmodel(d / "sm", "WriteFile", "init"), fragment="WriteFile")
    case("savedmodel-truncated", "code", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), evil_savedmodel(d / "sm", "WriteFile"),
                    (d / "sm/saved_model.pb").write_bytes((d / "sm/saved_model.pb").read_bytes()[:-7])))
    case("savedmodel-garbage", "code", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), (d / "sm").mkdir(), (d / "sm/saved_model.pb").write_bytes(b"\xff" * 100)))
    case("profile-metric-file", "code", ["build", "{D}/linear.fakemodel", "-t", "{D}/acc.toml", "--out", "{D}/out",
                                         "-c", "{D}/cal.npz"],
         lambda d: (with_model()(d), (d / "metric.py").write_text(f"open({str(d / 'CANARY')!r}, 'w')\n"),
                    profile(d / "acc.toml", f'[options.accuracy_control]\nmax_drop = 0.01\nmetric = "{d}/metric.py:m"\n',
                            backend="openvino")),
         fragment="metric")
    case("profile-metric-module", "code", ["build", "{D}/linear.fakemodel", "-t", "{D}/acc.toml", "--out", "{D}/out",
                                           "-c", "{D}/cal.npz"],
         lambda d: (with_model()(d), profile(d / "acc.toml", '[options.accuracy_control]\nmax_drop = 0.01\n'
                                                             'metric = "os:system"\n', backend="openvino")),
         fragment="metric")

    # ---------------------------------------------------------------- paths (victims)
    def name_case(tag: str, toml_name: str) -> None:
        def setup(d: Path) -> None:
            with_model()(d)
            other = d / "out" / "linear" / "other"  # another target's bundle (a victim: must survive)
            shutil.copytree(bundle, other)
            profile(d / "bad.toml", f"name = {json.dumps(toml_name)}\n")
        case(f"profile-name-{tag}", "paths", [*base, "-t", "{D}/bad.toml"], setup, fragment="name")

    for tag, value in {"empty": "", "absolute": "/tmp/edgepack-hostile-abs", "dotdot": "..", "parent": "../escape",
                       "slash": "a/b", "newline": "x\nerror: forged", "long": "n" * 200, "markup": "[/]",
                       "dot": ".", "hidden": ".git", "nul": "a\u0000b", "space": "a b"}.items():
        name_case(tag, value)
    case("model-name-dots", "paths", ["build", "{D}/...onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: shutil.copy(tiny_onnx, d / "...onnx"), needs="onnx", fragment="name", real_cli=True)
    case("model-name-hidden", "paths", ["build", "{D}/.x.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: shutil.copy(tiny_onnx, d / ".x.onnx"), needs="onnx", fragment="name")

    def dest(kind: str):
        def setup(d: Path) -> None:
            with_model()(d)
            final = d / "out" / "linear" / "ok"
            final.parent.mkdir(parents=True)
            if kind == "folder":
                final.mkdir()
                (final / "precious.txt").write_text("not a bundle\n")
            elif kind == "file":
                final.write_text("a file\n")
            elif kind == "symlink":
                symlink(final, d / "victim")
            elif kind == "fake-manifest-symlink":
                final.mkdir()
                symlink(final / "manifest.json", d / "victim" / "keep.txt")
            elif kind == "model-symlink":
                final.parent.rmdir()
                symlink(final.parent, d / "victim")
        return setup

    for kind in ("folder", "file", "symlink", "fake-manifest-symlink", "model-symlink"):
        case(f"destination-{kind}", "paths", [*base, "-t", "{D}/ok.toml"], dest(kind),
             fragment="symlink" if kind == "model-symlink" else "never replaced")

    def onnx_external(loc: str, make: Callable[[Path], None] | None = None):
        def setup(d: Path) -> None:
            import onnx

            m = onnx.load(str(tiny_onnx))
            init = m.graph.initializer[0]
            init.data_location = onnx.TensorProto.EXTERNAL
            init.ClearField("raw_data")
            del init.external_data[:]
            init.external_data.add(key="location", value=loc)
            (d / "m").mkdir()
            onnx.save(m, str(d / "m" / "model.onnx"))
            if make:
                make(d)
        return setup

    for tag, loc, make in (
        ("dotdot", "../victim/keep.txt", None),
        ("absolute", "/etc/passwd", None),
        ("symlink", "w.bin", lambda d: symlink(d / "m" / "w.bin", d / "victim" / "keep.txt")),
        ("fifo", "w.bin", lambda d: fifo(d / "m" / "w.bin")),
        ("devzero", "w.bin", lambda d: symlink(d / "m" / "w.bin", "/dev/zero")),
    ):
        case(f"onnx-external-{tag}", "hangs" if tag in ("fifo", "devzero") else "paths",
             ["build", "{D}/m/model.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
             onnx_external(loc, make), needs="onnx", real_cli=tag == "fifo", fragment="external data")

    case("profile-calibration-dotdot", "paths", ["build", "{D}/linear.fakemodel", "-t", "{D}/bad.toml", "--out",
                                                 "{D}/out"],
         with_model(lambda d: profile(d / "bad.toml", 'calibration = "../victim/keep.toml"\n')), fragment="calibration")
    case("profile-calibration-absolute", "paths", ["build", "{D}/linear.fakemodel", "-t", "{D}/bad.toml", "--out",
                                                   "{D}/out"],
         with_model(lambda d: profile(d / "bad.toml", 'calibration = "/etc/passwd"\n')), fragment="calibration")
    for tag, path in (("dotdot", "../victim"), ("absolute", "/etc")):
        case(f"recipe-path-{tag}", "paths", ["build", "{D}/linear.fakemodel", "-t", "{D}/ok.toml", "--out", "{D}/out",
                                             "-c", "{D}/r/recipe.toml"],
             with_model(lambda d, p=path: ((d / "r").mkdir(), (d / "r/recipe.toml").write_text(
                 f'[data]\nkind = "image-folder"\npath = "{p}"\n'))), fragment="data.path")

    # ---------------------------------------------------------------- bundles (verify / check)
    def tampered(mutate: Callable[[Path], None], resign_after: bool = True,
                 manifest: Callable[[dict], None] | None = None):
        return tampered_copy(bundle, mutate, resign_after, manifest)

    def set_file_path(p: str):
        return lambda m: m["files"].append({"path": p, "size": 1, "sha256": "0" * 64})

    bundle_cases = {
        "manifest-entry-dotdot": (lambda b: None, set_file_path("../../victim/keep.txt")),
        "manifest-entry-absolute": (lambda b: None, set_file_path("/etc/passwd")),
        "manifest-golden-dotdot": (lambda b: None, lambda m: m["golden"].update(inputs="../../victim/keep.txt")),
        "manifest-artifact-absolute": (lambda b: None, lambda m: m["artifact"].update(primary="/etc/passwd")),
        "bundle-model-symlink-out": (lambda b: ((b / "model.npz").unlink(), symlink(b / "model.npz", b.parent.parent
                                                                                       / "victim/keep.txt")), None),
        "bundle-extra-symlink": (lambda b: symlink(b / "extra", "/etc/passwd"), None),
        "bundle-runner-dir-symlink": (lambda b: symlink(b / "runner" / "linked", b.parent.parent / "victim"), None),
        "bundle-golden-fifo": (lambda b: ((b / "golden/inputs.npz").unlink(), fifo(b / "golden/inputs.npz")), None),
        "bundle-golden-devzero": (lambda b: ((b / "golden/inputs.npz").unlink(),
                                             symlink(b / "golden/inputs.npz", "/dev/zero")), None),
        "bundle-report-symlink": (lambda b: ((b / "report.json").unlink(),
                                             symlink(b / "report.json", b.parent.parent / "victim/keep.txt")), None),
        "bundle-mlpackage-outside": (lambda b: ((b / "m.mlpackage/Data").mkdir(parents=True),
                                                (b / "m.mlpackage/Manifest.json").write_text(json.dumps({
                                                    "fileFormatVersion": "1.0.0", "itemInfoEntries": {"A": {
                                                        "path": "../../../../victim/keep.txt", "name": "w"}}}))),
                                     None),
    }
    for name, (mutate, mm) in bundle_cases.items():
        for cmd in ("verify", "check"):
            cls = "hangs" if "fifo" in name or "devzero" in name else "bundles"
            case(f"{cmd}-{name}", cls, [cmd, "{D}/out/b"], tampered(mutate, True, mm),
                 real_cli=cmd == "check" and name == "bundle-report-symlink")

    def manifest_bytes(raw: bytes | Callable[[Path], None]):
        def setup(d: Path) -> None:
            b = d / "out" / "b"
            shutil.copytree(bundle, b)
            if callable(raw):
                raw(b)
            else:
                (b / "manifest.json").write_bytes(raw)
        return setup

    big = json.loads((bundle / "manifest.json").read_text())
    big_missing = {k: v for k, v in big.items() if k not in ("files", "target")}
    manifests = {
        "list": b"[1, 2, 3]",
        "string": b'"manifest"',
        "missing-keys": json.dumps(big_missing).encode(),
        "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
        "deep-nesting-dict": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "non-utf8": b'{"schema_version": 3, "x": "\xff\xfe"}',
        "nan": json.dumps({**big, "verdict": float("nan")}).encode(),
        "huge": b'{"pad": "' + b"x" * (20 << 20) + b'"}',
        "old-schema": json.dumps({**big, "schema_version": 2}).encode(),
        "wrong-types": json.dumps({**big, "files": "all"}).encode(),
        "fifo": lambda b: ((b / "manifest.json").unlink(), fifo(b / "manifest.json")),
        "devzero": lambda b: ((b / "manifest.json").unlink(), symlink(b / "manifest.json", "/dev/zero")),
    }
    for tag, raw in manifests.items():
        cls = "hangs" if tag in ("fifo", "devzero", "huge") else "tracebacks"
        case(f"verify-manifest-{tag}", cls, ["verify", "{D}/out/b"], manifest_bytes(raw))
    case("check-manifest-deep-nesting", "tracebacks", ["check", "{D}/out/b"], manifest_bytes(manifests["deep-nesting"]))
    case("check-manifest-list", "tracebacks", ["check", "{D}/out/b"], manifest_bytes(manifests["list"]),
         real_cli=True)

    # ---------------------------------------------------------------- regular files only, with limits (hangs)
    case("model-fifo", "hangs", ["build", "{D}/m.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: fifo(d / "m.onnx"), fragment="FIFO", real_cli=True)
    case("model-fifo-fake", "hangs", [*base, "-t", "{D}/ok.toml"],
         lambda d: (with_model()(d), (d / "linear.fakemodel").unlink(), fifo(d / "linear.fakemodel")), fragment="FIFO")
    case("model-devzero", "hangs", ["build", "{D}/m.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: symlink(d / "m.onnx", "/dev/zero"), fragment="device")
    case("model-devzero-keras", "hangs", ["build", "{D}/m.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), symlink(d / "m.keras", "/dev/zero")), fragment="device")
    case("model-folder", "files", ["build", "{D}/m.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: (d / "m.onnx").mkdir(), fragment="folder")
    case("model-huge-sparse", "files", ["build", "{D}/m.onnx", "-t", "android-ort-fp32", "--out", "{D}/out"],
         lambda d: os.truncate(d / "m.onnx", 9 << 30) if (d / "m.onnx").touch() is None else None, fragment="limit")
    case("savedmodel-with-fifo", "hangs", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), saved_model(d / "sm", [], [pb_function("f", SAFE_BODY)]),
                    fifo(d / "sm/variables/variables.index")), fragment="FIFO")
    case("savedmodel-with-symlink", "paths", ["build", "{D}/sm", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), saved_model(d / "sm", [], [pb_function("f", SAFE_BODY)]),
                    symlink(d / "sm/variables/variables.index", d / "victim/keep.txt")), fragment="symlink")
    case("profile-fifo", "hangs", ["build", "{D}/linear.fakemodel", "-t", "{D}/p.toml", "--out", "{D}/out"],
         with_model(lambda d: fifo(d / "p.toml")), fragment="FIFO", real_cli=True)
    case("profile-devzero", "hangs", ["build", "{D}/linear.fakemodel", "-t", "{D}/p.toml", "--out", "{D}/out"],
         with_model(lambda d: symlink(d / "p.toml", "/dev/zero")), fragment="device")
    case("profile-folder", "tracebacks", ["build", "{D}/linear.fakemodel", "-t", "{D}/p", "--out", "{D}/out"],
         with_model(lambda d: (d / "p").mkdir()), fragment="folder")
    case("profile-huge", "files", ["build", "{D}/linear.fakemodel", "-t", "{D}/p.toml", "--out", "{D}/out"],
         with_model(lambda d: (d / "p.toml").write_bytes(b"# " + b"x" * (20 << 20))), fragment="limit")
    case("calibration-fifo", "hangs", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/f.npz"],
         with_model(lambda d: fifo(d / "f.npz")), fragment="FIFO")
    case("calibration-devzero", "hangs", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/f.npz"],
         with_model(lambda d: symlink(d / "f.npz", "/dev/zero")), fragment="device")
    case("calibration-npy-devzero", "hangs", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/f.npy"],
         with_model(lambda d: symlink(d / "f.npy", "/dev/zero")), fragment="device")
    case("recipe-fifo", "hangs", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/r.toml"],
         with_model(lambda d: fifo(d / "r.toml")))

    def image_recipe(make_image: Callable[[Path], None]):
        def setup(d: Path) -> None:
            with_model()(d)
            (d / "imgs").mkdir()
            (d / "r.toml").write_text('[data]\nkind = "image-folder"\npath = "imgs"\n[preprocess]\nresize = [32, 32]\n'
                                      'color = "gray"\n')
            png(d / "imgs" / "a.png", 8, 8)
            make_image(d / "imgs")
        return setup

    image_fragments = {"fifo": "FIFO", "devzero": "symlink", "bomb": "decompression bomb",
                       "bomb-warning": "decompression bomb", "truncated": "b.png", "not-an-image": "b.png",
                       "symlink-out": "symlink"}
    for tag, make in {
        "fifo": lambda p: fifo(p / "b.png"),
        "devzero": lambda p: symlink(p / "b.png", "/dev/zero"),
        "bomb": lambda p: png(p / "b.png", 100_000, 100_000),
        "bomb-warning": lambda p: png(p / "b.png", 9_000, 9_000),
        "truncated": lambda p: png(p / "b.png", 8, 8, truncated=True),
        "not-an-image": lambda p: (p / "b.png").write_text("hello"),
        "symlink-out": lambda p: symlink(p / "b.png", p.parent / "victim" / "keep.txt"),
    }.items():
        case(f"calibration-image-{tag}", "hangs" if tag in ("fifo", "devzero") else "files",
             [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/r.toml"], image_recipe(make),
             fragment=image_fragments[tag])

    def arrays(make: Callable[[Path], None]):
        def setup(d: Path) -> None:
            with_model()(d)
            make(d)
        return setup

    cal_args = [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/x.npz"]
    case("npz-bomb-1GiB", "files", cal_args,
         arrays(lambda d: zip_bomb(d / "x.npz", "input.npy", 1 << 30, npy_header((1 << 28,)))), fragment="inflates")
    case("npz-unpacked-over-limit", "files", cal_args,
         arrays(lambda d: zip_bomb(d / "x.npz", "input.npy", 96 << 20, npy_header((24 << 20,)))),
         env={"EDGEPACK_MAX_UNPACKED_MB": "64"}, fragment="limit")
    case("npz-header-claims-1TB", "files", cal_args,
         arrays(lambda d: npz_raw(d / "x.npz", {"input.npy": npy_header((1 << 38,)) + b"\0" * 64})), fragment="claims")
    case("npz-object-array", "code", cal_args,
         arrays(lambda d: npz_raw(d / "x.npz", {"input.npy": npy_header((1,), "|O") + pickle_payload(d / "CANARY")})),
         fragment="numeric")
    case("npz-zero-dim", "tracebacks", cal_args,
         arrays(lambda d: np.savez(d / "x.npz", input=np.float32(3.0))), fragment="is a scalar; calibration arrays hold one row per sample")
    case("npz-strings", "tracebacks", cal_args,
         arrays(lambda d: np.savez(d / "x.npz", input=np.array(["a", "b"]))), fragment="numeric")
    case("npz-complex", "tracebacks", cal_args,
         arrays(lambda d: np.savez(d / "x.npz", input=np.zeros((4, 1, 32, 32), np.complex64))))
    case("npz-not-zip", "files", cal_args, arrays(lambda d: (d / "x.npz").write_bytes(b"PK\x03\x04garbage")))
    case("npz-zip-slip", "paths", cal_args,
         arrays(lambda d: npz_raw(d / "x.npz", {"../../victim/input.npy": b"x"})), fragment="unsafe")
    case("npz-labels-mismatch", "tracebacks", cal_args,
         arrays(lambda d: np.savez(d / "x.npz", input=np.zeros((8, 1, 32, 32), np.float32), labels=np.zeros(3))),
         fragment="labels")
    case("npy-header-claims-1TB", "files", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/x.npy"],
         arrays(lambda d: (d / "x.npy").write_bytes(npy_header((1 << 38,)) + b"\0" * 64)), fragment="claims")
    case("npy-pickle", "code", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/x.npy"],
         arrays(lambda d: (d / "x.npy").write_bytes(npy_header((1,), "|O") + pickle_payload(d / "CANARY"))),
         fragment="numeric")
    case("keras-config-bomb-800MB", "files", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), zip_bomb(d / "model.keras", "config.json", 800 << 20, b'{"a": "')),
         fragment="inflates")
    case("keras-config-over-text-limit", "files", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out",
                                                   "{D}/out"],
         lambda d: (with_model()(d), keras_zip(d / "model.keras", [], {}),
                    zip_bomb(d / "model.keras", "config.json", 40 << 20, b'{"a": "')), fragment="config.json")
    case("keras-config-deep", "tracebacks", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), npz_raw(d / "model.keras", {"config.json": b"[" * 100_000 + b"]" * 100_000})))
    case("keras-not-zip", "files", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), (d / "model.keras").write_bytes(b"not a zip")), fragment="zip")
    case("keras-no-config", "files", ["build", "{D}/model.keras", "-t", "{D}/ok.toml", "--out", "{D}/out"],
         lambda d: (with_model()(d), npz_raw(d / "model.keras", {"metadata.json": b"{}"})), fragment="config.json")

    # ---------------------------------------------------------------- profile numbers with bounds
    for tag, body in {
        "repeats-1e8": "[latency]\nrepeats = 100000000\n",
        "warmup-1e9": "[latency]\nwarmup = 1000000000\n",
        "threads-1e5": "[latency]\nthreads = 100000\n",
        "min-calibration-1e12": "min_calibration_samples = 1000000000000\n",
        "max-size-negative": "[budgets]\nmax_size_mb = -1\n",
        "cosine-2": "[budgets.parity]\nmin_cosine = 2.0\n",
        "psnr-1e9": "[budgets.parity]\nmin_psnr_db = 1e9\n",
        "device-huge": f'device = "{"d" * 1000}"\n',
    }.items():
        case(f"profile-bound-{tag}", "hangs" if "repeats" in tag or "warmup" in tag else "files",
             [*base, "-t", "{D}/bad.toml"], with_model(lambda d, b=body: profile(d / "bad.toml", b)),
             real_cli=tag == "repeats-1e8")
    for tag, body in {
        "split-1e12": "[split]\ncalibration = 1000000000000\n",
        "resize-1e5": "[preprocess]\nresize = [100000, 100000]\n",
        "mean-nan": "[preprocess]\nmean = [nan]\n",
        "scale-inf": "[preprocess]\nscale = inf\n",
    }.items():
        case(f"recipe-bound-{tag}", "files", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/r.toml"],
             with_model(lambda d, b=body: (d / "r.toml").write_text(f'[data]\nkind = "sklearn-digits"\n{b}')))

    # ---------------------------------------------------------------- tracebacks that used to escape
    case("toml-non-utf8", "tracebacks", [*base, "-t", "{D}/bad.toml"],
         with_model(lambda d: (d / "bad.toml").write_bytes(b'backend = "fake_identity"\ndevice = "\xff\xfe"\n')),
         fragment="UTF-8")
    case("recipe-non-utf8", "tracebacks", [*base[:4], "-t", "{D}/ok.toml", "-c", "{D}/r.toml"],
         with_model(lambda d: (d / "r.toml").write_bytes(b'name = "\xff"\n')), fragment="UTF-8")
    case("toml-deep", "tracebacks", [*base, "-t", "{D}/bad.toml"],
         with_model(lambda d: (d / "bad.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")))
    case("toml-garbage", "tracebacks", [*base, "-t", "{D}/bad.toml"],
         with_model(lambda d: (d / "bad.toml").write_bytes(b"\x00\x01[[[===")))
    case("rich-markup-path", "tracebacks", ["build", "{D}/[/]x[bold].onnx", "-t", "android-ort-fp32", "--out",
                                            "{D}/out"], fragment="[/]x[bold]", real_cli=True)
    case("newline-path", "tracebacks", ["build", "{D}/a\nerror: forged.onnx", "-t", "android-ort-fp32", "--out",
                                        "{D}/out"])
    case("escape-sequence-path", "tracebacks", ["build", "{D}/\x1b[2Jx.onnx", "-t", "android-ort-fp32", "--out",
                                                "{D}/out"])
    case("junit-is-folder", "tracebacks", [*base, "-t", "{D}/ok.toml", "--junit", "{D}/jdir"],
         with_model(lambda d: (d / "jdir").mkdir()), fragment="--junit", real_cli=True)
    case("report-is-folder", "tracebacks", [*base, "-t", "{D}/ok.toml", "--report", "{D}/rdir"],
         with_model(lambda d: (d / "rdir").mkdir()), fragment="--report")
    case("check-junit-is-folder", "tracebacks", ["check", "{D}/out/b", "--junit", "{D}/jdir"],
         lambda d: (shutil.copytree(bundle, d / "out" / "b"), (d / "jdir").mkdir()), fragment="--junit")
    case("out-is-fifo", "hangs", [*base[:2], "--out", "{D}/o", *base[4:], "-t", "{D}/ok.toml"],
         with_model(lambda d: fifo(d / "o")))
    case("weights-fifo", "hangs", ["build", "{D}/f.py:make", "--weights", "{D}/w.pt", "--input", "x=1x4", "-t",
                                   "{D}/ok.toml", "--out", "{D}/out"],
         with_model(lambda d: ((d / "f.py").write_text(f"open({str(d / 'CANARY')!r}, 'w')\n"), fifo(d / "w.pt"))),
         fragment="FIFO")
    case("weights-devzero", "hangs", ["build", "{D}/f.py:make", "--weights", "{D}/w.pt", "--input", "x=1x4", "-t",
                                      "{D}/ok.toml", "--out", "{D}/out"],
         with_model(lambda d: ((d / "f.py").write_text(f"open({str(d / 'CANARY')!r}, 'w')\n"),
                               symlink(d / "w.pt", "/dev/zero"))), fragment="device")
    for tag, spec in {"huge-dims": "input=1x99999999999999999999", "many-elements": "input=1x65536x65536",
                      "rank-20": "input=" + "x".join(["1"] * 20), "long-name": "n" * 5000 + "=1x2",
                      "control-name": "a\x07=1x2"}.items():
        case(f"input-spec-{tag}", "tracebacks", [*base, "-t", "{D}/ok.toml", "--input", spec], with_model())
    # ---------------------------------------------------------------- real formats and shipped targets only (these
    # also run through `python -m edgepack`, where the test fakes are not registered)
    onnx_t = ["-t", "android-ort-int8", "--out", "{D}/out"]
    case("real-savedmodel-WriteFile-init", "code", ["build", "{D}/sm", *onnx_t],
         lambda d: evil_savedmodel(d / "sm", "WriteFile", "init"), fragment="WriteFile", real_cli=True)
    case("real-keras-lambda", "code", ["build", "{D}/model.keras", *onnx_t],
         lambda d: keras_zip(d / "model.keras", lam(d)), fragment="Lambda", real_cli=True)
    case("real-npz-bomb", "files", ["build", "{D}/m.onnx", *onnx_t, "-c", "{D}/x.npz"],
         lambda d: (shutil.copy(tiny_onnx, d / "m.onnx"),
                    zip_bomb(d / "x.npz", "input.npy", 1 << 30, npy_header((1 << 28,)))),
         needs="onnx", fragment="inflates", real_cli=True)
    case("real-png-bomb", "files", ["build", "{D}/m.onnx", *onnx_t, "-c", "{D}/r.toml"],
         lambda d: (shutil.copy(tiny_onnx, d / "m.onnx"), (d / "imgs").mkdir(),
                    (d / "r.toml").write_text('[data]\nkind = "image-folder"\npath = "imgs"\n[preprocess]\n'
                                              'resize = [32, 32]\ncolor = "gray"\n'),
                    png(d / "imgs" / "a.png", 100_000, 100_000)),
         needs="onnx", fragment="decompression bomb", real_cli=True)
    case("verify-on-fifo", "hangs", ["verify", "{D}/b"], lambda d: fifo(d / "b"))
    case("check-on-file", "tracebacks", ["check", "{D}/b"], lambda d: (d / "b").write_text("x"))
    return cases


def to_json(cases: list[Case]) -> str:
    return json.dumps([asdict(c) for c in cases])

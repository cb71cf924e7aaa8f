"""Hostile corpus, part two: the bundle runner's inputs, `verify` (and `device run`'s verify before pushing),
plug-ins, settings and messages. Cases are generated at test time in the layout of :mod:`corpus` (one folder per
case with ``out/``, a planted ``victim/keep.txt`` and a ``CANARY`` path) and judged by test_hostile_corpus.py.

* runner   ``python -I <bundle>/run_bundle.py`` on a tampered bundle (re-signed unless said otherwise, so the
           runner's sha256 check passes and the bad bytes reach its loaders): exit 2, one JSON error, no traceback.
* verify   `verify`, `check` and `device run` on a bundle whose verdict was edited or whose Core ML weight blob
           points out of its package: refused (exit 2, one error line + hint), nothing run.
* plugins  installed `edgepack.backends` plug-ins that raise on import (SystemExit(0) too), name no class, are not
           backends or carry Rich markup: `doctor` lists them as one row each and the built-ins still (exit 0); a
           build that needs one is refused.
* settings malformed EDGEPACK_* numbers are refused, never read as "no limit".
* messages causes that used to be "internal error" or came without a hint naming the way out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from corpus import (Case, _ld, _varint, fifo, make_case, npy_header, npz_raw, pickle_payload, profile,
                    symlink, tampered_copy, zip_bomb)

CLASSES = ("runner", "verify", "plugins", "settings", "messages")
MIN_CASES = 30


# ------------------------------------------------------------------------------------------ payload helpers


def mil_spec(file_name: str) -> bytes:
    """A Core ML Model whose ML program has one const op reading a weight blob from ``file_name`` (wire format)."""
    blob = _ld(1, file_name) + _varint(2 << 3) + _varint(64)
    op = _ld(1, "const") + _ld(5, _ld(1, "val") + _ld(2, _ld(5, blob)))
    function = _ld(3, _ld(1, "CoreML5") + _ld(2, _ld(3, op)))
    program = _varint(1 << 3) + _varint(1) + _ld(2, _ld(1, "main") + _ld(2, function))
    return _varint(1 << 3) + _varint(7) + _ld(502, program)


def coreml_package(bundle: Path, file_name: str) -> None:
    model_dir = bundle / "m.mlpackage" / "Data" / "com.apple.CoreML"
    (model_dir / "weights").mkdir(parents=True)
    (model_dir / "model.mlmodel").write_bytes(mil_spec(file_name))
    (model_dir / "weights" / "weight.bin").write_bytes(b"\0" * 128)
    (bundle / "m.mlpackage" / "Manifest.json").write_text(json.dumps({
        "fileFormatVersion": "1.0.0", "rootModelIdentifier": "A",
        "itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel", "name": "model.mlmodel"}}}))


def plugin(site: Path, ep_name: str, value: str, body: str, module: str = "evilplug") -> None:
    """An installed distribution (dist-info + module) registering ``ep_name = value`` as an edgepack backend."""
    (site / module).mkdir(parents=True, exist_ok=True)
    (site / module / "__init__.py").write_text(body)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edgepack.backends]\n{ep_name} = {value}\n")


def onnx_model(path: Path, inputs: dict[str, tuple[int, list]], op: str = "Add") -> Path:
    """A tiny ONNX graph (``op`` over the inputs) with the given (elem type, dims) inputs."""
    import onnx
    from onnx import helper

    names = list(inputs)
    node = helper.make_node(op, names, ["y"])
    first = inputs[names[0]]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, d) for n, (t, d) in inputs.items()],
                          [helper.make_tensor_value_info("y", first[0], first[1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


# ------------------------------------------------------------------------------------------ the cases


def build(root: Path, fake_model: Path, tiny_onnx: Path | None, bundle: Path) -> list[Case]:
    cases: list[Case] = []

    def case(name: str, cls: str, argv: list[str], setup: Callable[[Path], None] | None = None, **kw) -> None:
        cases.append(make_case(root, name, cls, argv, setup, **kw))

    def tampered(mutate: Callable[[Path], None], resign_after: bool = True,
                 manifest: Callable[[dict], None] | None = None) -> Callable[[Path], None]:
        return tampered_copy(bundle, mutate, resign_after, manifest)

    def with_model(extra: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        def setup(d: Path) -> None:
            shutil.copy(fake_model, d / "linear.fakemodel")
            np.savez(d / "cal.npz", input=np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32))
            profile(d / "ok.toml", "")
            if extra:
                extra(d)
        return setup

    # ---------------------------------------------------------------- the bundle runner (python -I run_bundle.py)
    runner = ["{D}/out/b/run_bundle.py", "--repeats", "1", "--warmup", "0"]

    def golden(raw: Callable[[Path], None]) -> Callable[[Path], None]:
        return tampered(lambda b: ((b / "golden/inputs.npz").unlink(), raw(b / "golden/inputs.npz")))

    runner_cases: dict[str, tuple[Callable[[Path], None], str, list[str], dict]] = {
        "golden-pickle": (golden(lambda p: npz_raw(p, {"input.npy": npy_header((1,), "|O") + pickle_payload(
            p.parent.parent.parent.parent / "CANARY")})), "not numeric", [], {}),
        "golden-zip-bomb": (golden(lambda p: zip_bomb(p, "input.npy", 1 << 30, npy_header((1 << 28,)))),
                            "decompression bomb", [], {}),
        "golden-header-claims-1TB": (golden(lambda p: npz_raw(p, {"input.npy": npy_header((1 << 38,)) + b"\0" * 64})),
                                     "claims", [], {}),
        "golden-over-unpacked-limit": (golden(lambda p: zip_bomb(p, "input.npy", 96 << 20, npy_header((24 << 20,)))),
                                       "limit", [], {"EDGEPACK_MAX_UNPACKED_MB": "64"}),
        "golden-not-zip": (golden(lambda p: p.write_bytes(b"PK\x03\x04 not a zip at all")), "not a readable zip",
                           [], {}),
        "golden-strings": (golden(lambda p: np.savez(p, input=np.array(["a", "b"]))), "not numeric", [], {}),
        "golden-zip-slip": (golden(lambda p: npz_raw(p, {"../../victim/input.npy": npy_header((1,)) + b"\0" * 4})),
                            "unsafe path", [], {}),
        "golden-fifo-no-verify": (tampered(lambda b: ((b / "golden/inputs.npz").unlink(),
                                                      fifo(b / "golden/inputs.npz")), resign_after=False),
                                  "not a regular file", ["--no-verify"], {}),
        "golden-devzero-no-verify": (tampered(lambda b: ((b / "golden/inputs.npz").unlink(),
                                                         symlink(b / "golden/inputs.npz", "/dev/zero")),
                                              resign_after=False), "golden file", ["--no-verify"], {}),
        "golden-path-dotdot": (tampered(lambda b: None, manifest=lambda m: m["golden"].update(
            inputs="../../victim/keep.txt")), "not a path inside the bundle", [], {}),
        "model-bit-flipped": (tampered(lambda b: (b / "model.npz").write_bytes(bytes(
            x ^ 0xFF if 60 <= i < 70 else x for i, x in enumerate((b / "model.npz").read_bytes())))),
            "cannot run the bundle", [], {}),
        "model-truncated": (tampered(lambda b: (b / "model.npz").write_bytes((b / "model.npz").read_bytes()[:30])),
                            "cannot run the bundle", [], {}),
        "model-pickled-weight": (tampered(lambda b: npz_raw(b / "model.npz", {
            "weight.npy": npy_header((1,), "|O") + pickle_payload(b.parent.parent / "CANARY"),
            "bias.npy": npy_header((1,)) + b"\0" * 4})), "cannot run the bundle", [], {}),
        "manifest-list": (tampered(lambda b: (b / "manifest.json").write_text("[1, 2]"), resign_after=False),
                          "cannot read manifest", [], {}),
        "manifest-not-json": (tampered(lambda b: (b / "manifest.json").write_bytes(b"\xff{"), resign_after=False),
                              "cannot read manifest", [], {}),
        "manifest-deep-nesting": (tampered(lambda b: (b / "manifest.json").write_text("[" * 100_000 + "]" * 100_000),
                                           resign_after=False), "cannot read manifest", [], {}),
        "manifest-files-wrong-type": (tampered(lambda b: None, manifest=lambda m: m.update(files={"a": 1})),
                                      "cannot read manifest", [], {}),
        "manifest-limits-wrong-type": (tampered(lambda b: None, manifest=lambda m: m["limits"].update(
            max_abs_error="abc", max_rel_error="abc")),
                                       "cannot run the bundle", [], {}),
        "env-unpacked-limit-abc": (tampered(lambda b: None), "EDGEPACK_MAX_UNPACKED_MB", [],
                                   {"EDGEPACK_MAX_UNPACKED_MB": "abc"}),
    }
    for name, (setup, fragment, extra, env) in runner_cases.items():
        case(f"runner-{name}", "runner", [*runner, *extra], setup, entry="runner", fragment=fragment, env=env)

    # ---------------------------------------------------------------- verify / check / device run
    def failed_edited_to_passed(m: dict) -> None:  # a failed build's row, the verdict edited to passed
        if m.get("checks"):  # (a bundle of an edgepack that records no rows: nothing to contradict)
            m["checks"][0]["passed"] = False
        m["verdict"] = "passed"

    local = '[[device]]\nname = "here"\nkind = "local"\n'
    for cmd in ("verify", "check", "device-run"):
        argv = (["device", "run", "{D}/out/b", "--devices", "{D}/devices.toml", "--out", "{D}/out/runs"]
                if cmd == "device-run" else [cmd, "{D}/out/b"])

        def with_inventory(setup: Callable[[Path], None]) -> Callable[[Path], None]:
            return lambda d: (setup(d), (d / "devices.toml").write_text(local))

        case(f"{cmd}-verdict-edited", "verify", argv, with_inventory(tampered(lambda b: None,
                                                                              manifest=failed_edited_to_passed)),
             fragment="verdict contradicts the checks")
        for tag, name in (("dotdot", "@model_path/../../../../victim/keep.txt"), ("absolute", "/etc/passwd")):
            case(f"{cmd}-coreml-blob-{tag}", "verify", argv,
                 with_inventory(tampered(lambda b, n=name: coreml_package(b, n))), fragment="weight file")

    def evil_runner(b: Path) -> None:
        evil = b.parent.parent / "victim" / "device.py"
        evil.write_text(f"open({str(b.parent.parent / 'CANARY')!r}, 'w')\n")
        (b / "runner" / "device.py").unlink()
        symlink(b / "runner" / "device.py", evil)

    case("device-run-runner-symlink-out", "verify", ["device", "run", "{D}/out/b", "--devices", "{D}/devices.toml",
                                                     "--out", "{D}/out/runs"],
         lambda d: (tampered(evil_runner)(d), (d / "devices.toml").write_text(local)),
         fragment="symlink in the bundle: runner/device.py")

    def standin(d: Path) -> None:  # not an edgepack manifest: only the symlink/FIFO check applies, and refuses it
        b = d / "out" / "b"
        (b / "runner").mkdir(parents=True)
        (b / "manifest.json").write_text(json.dumps({"target": {"name": "t"}, "artifact": {"backend": "x"},
                                                     "files": []}))
        (b / "run_bundle.py").write_text("print('{}')\n")
        (d / "victim" / "device.py").write_text(f"open({str(d / 'CANARY')!r}, 'w')\n")
        symlink(b / "runner" / "device.py", d / "victim" / "device.py")
        (d / "devices.toml").write_text(local)

    case("device-run-standin-runner-symlink", "verify", ["device", "run", "{D}/out/b", "--devices",
                                                         "{D}/devices.toml", "--out", "{D}/out/runs"], standin,
         fragment="symlink in the bundle: runner/device.py")

    # ---------------------------------------------------------------- plug-ins
    builtins = ["ort_mobile", "openvino"]
    plugins = {
        "system-exit-0": ("evilplug", "evilplug:Backend", "raise SystemExit(0)\n"),
        "runtime-error": ("evilplug", "evilplug:Backend", "raise RuntimeError('boom at import')\n"),
        "keyboard-exit": ("evilplug", "evilplug:Backend", "import sys\nsys.exit('bye')\n"),
        "no-colon": ("evilplug", "evilplug", ""),
        "missing-class": ("evilplug", "evilplug:Nope", ""),
        "not-a-backend": ("evilplug", "evilplug:Backend", "class Backend:\n    name = 'evilplug'\n"),
        "markup-name": ("evil[/]plug", "evilplug:Backend", "raise ValueError('[bold]x[/]')\n"),
        "syntax-error": ("evilplug", "evilplug:Backend", "def (:\n"),
    }
    for tag, (ep, value, body) in plugins.items():
        def site(d: Path, ep=ep, value=value, body=body) -> None:
            plugin(d / "site", ep, value, body)

        case(f"doctor-plugin-{tag}", "plugins", ["doctor"], site, sys_path=["{D}/site"], expect_exit=0,
             stdout_has=[ep.split("[")[0], *builtins])
    case("doctor-two-broken-plugins", "plugins", ["doctor"],
         lambda d: (plugin(d / "site", "evilplug", "evilplug:Backend", "raise SystemExit(3)\n"),
                    plugin(d / "site", "otherplug", "otherplug:Backend", "raise ImportError('gone')\n", "otherplug")),
         sys_path=["{D}/site"], expect_exit=0, stdout_has=["evilplug", "otherplug", *builtins])
    case("build-with-broken-plugin", "plugins", ["build", "{D}/linear.fakemodel", "-t", "{D}/p.toml", "--out",
                                                 "{D}/out", "-c", "{D}/cal.npz"],
         with_model(lambda d: (plugin(d / "site", "evilplug", "evilplug:Backend", "raise SystemExit(0)\n"),
                               profile(d / "p.toml", "", backend="evilplug"))),
         sys_path=["{D}/site"], fragment="cannot be loaded")

    # ---------------------------------------------------------------- settings
    base = ["build", "{D}/linear.fakemodel", "-t", "{D}/ok.toml", "--out", "{D}/out", "-c", "{D}/cal.npz"]
    for var, value in (("EDGEPACK_WORKER_MEMORY_MB", "abc"), ("EDGEPACK_WORKER_MEMORY_MB", "-1"),
                       ("EDGEPACK_WORKER_MEMORY_MB", "1e400"), ("EDGEPACK_TIMEOUT", "nan"),
                       ("EDGEPACK_TIMEOUT", "-5"), ("EDGEPACK_JOBS", "0"), ("EDGEPACK_MAX_UNPACKED_MB", "abc"),
                       ("EDGEPACK_MAX_INPUT_MB", "-1")):
        case(f"setting-{var[9:].lower()}-{value}", "settings", base, with_model(), env={var: value}, fragment=var,
             real_cli=(var, value) == ("EDGEPACK_WORKER_MEMORY_MB", "abc"))

    # ---------------------------------------------------------------- messages
    for tag, stem in (("space", "my model"), ("non-ascii", "modèle"), ("dots", "a..b c")):
        case(f"model-stem-{tag}-hint-names---name", "messages",
             ["build", f"{{D}}/{stem}.fakemodel", "-t", "{D}/ok.toml", "--out", "{D}/out", "-c", "{D}/cal.npz"],
             with_model(lambda d, s=stem: shutil.copy(fake_model, d / f"{s}.fakemodel")), fragment="--name")
    case("name-option-invalid", "messages", [*base, "--name", "../escape"], with_model(), fragment="--name")
    case("check-missing-primary", "messages", ["check", "{D}/out/b"],
         tampered(lambda b: (b / "model.npz").unlink()), fragment="is missing")
    case("check-missing-primary-unsigned", "messages", ["check", "{D}/out/b"],
         tampered(lambda b: (b / "model.npz").unlink(), resign_after=False), fragment="is missing")
    case("target-name-5000", "messages", ["build", "{D}/linear.fakemodel", "-t", "n" * 5000, "--out", "{D}/out"],
         with_model(), fragment="unknown target", real_cli=True)
    case("plan-target-name-5000", "messages", ["plan", "{D}/linear.fakemodel", "-t", "n" * 5000], with_model(),
         fragment="unknown target")
    case("plan-json-folder", "messages", ["plan", "{D}/linear.fakemodel", "-t", "{D}/ok.toml", "--json", "{D}/jd"],
         with_model(lambda d: (d / "jd").mkdir()), fragment="--json", real_cli=True)
    case("plan-json-under-a-file", "messages", ["plan", "{D}/linear.fakemodel", "-t", "{D}/ok.toml", "--json",
                                                "{D}/victim/keep.txt/plan.json"], with_model(), fragment="--json")
    case("holdout-folder-symlink", "messages", base,
         with_model(lambda d: ((d / "out" / "linear").mkdir(), symlink(d / "out" / "linear" / "holdout",
                                                                         d / "victim"))), fragment="holdout")
    case("inventory-unknown-kind-has-hint", "messages",
         ["device", "run", "{D}/out/b", "--devices", "{D}/devices.toml", "--out", "{D}/out/runs"],
         lambda d: (shutil.copytree(bundle, d / "out" / "b"),
                    (d / "devices.toml").write_text('[[device]]\nname = "x"\nkind = "banana"\n')))
    if tiny_onnx is not None:
        from onnx import TensorProto as T

        case("calibration-sample-counts-differ", "messages",
             ["build", "{D}/two.onnx", "-t", "android-ort-fp32", "--out", "{D}/out", "-c", "{D}/ab.npz"],
             lambda d: (onnx_model(d / "two.onnx", {"a": (T.FLOAT, [1, 4]), "b": (T.FLOAT, [1, 4])}),
                        np.savez(d / "ab.npz", a=np.zeros((16, 4), np.float32), b=np.zeros((8, 4), np.float32))),
             needs="onnx", fragment="different numbers of samples")
        case("synthetic-string-input", "messages",
             ["build", "{D}/s.onnx", "-t", "android-ort-fp32", "--out", "{D}/out", "--synthetic-calibration"],
             lambda d: onnx_model(d / "s.onnx", {"s": (T.STRING, [1, 2])}, op="Identity"), needs="onnx",
             fragment="--synthetic-calibration")
        case("synthetic-huge-input", "messages",
             ["build", "{D}/h.onnx", "-t", "android-ort-fp32", "--out", "{D}/out", "--synthetic-calibration",
              "--input", "x=1x16777216"],
             lambda d: onnx_model(d / "h.onnx", {"x": (T.FLOAT, [1, "n"])}, op="Relu"), needs="onnx",
             fragment="--synthetic-calibration")
    return cases


__all__ = ["CLASSES", "MIN_CASES", "build", "coreml_package", "mil_spec", "plugin"]

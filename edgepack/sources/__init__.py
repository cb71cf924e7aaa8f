"""Sources: a trained model plus its framework. ``load_source`` inspects the command-line model argument.

Every source module offers ``load(...) -> Source``, ``reference(source, feeds) -> outputs`` (run in a worker
process) and, where it can, ``to_onnx(source, path)`` so backends that take ONNX can be bridged.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgepack.errors import InputError, UnsupportedConversion
from edgepack.signature import TensorSpec

KINDS = ("onnx", "torch", "tf")


@dataclass(frozen=True)
class Source:
    """A trained model, described without loading its framework into this process."""

    kind: str  # onnx | torch | tf
    format: str  # onnx | factory | torchscript | exported | keras | h5 | savedmodel
    path: str  # file/folder, or "module:factory" / "file.py:factory"
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    weights: str | None = None
    weights_key: str | None = None  # the state dict nested under this key of a checkpoint (--weights FILE:KEY)
    weights_strict: bool = True  # False: keys in the file the model does not have are ignored (--weights-non-strict)
    trust_code: bool = False
    signature: str | None = None  # SavedModel signature
    sha256: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    trusted: tuple[str, ...] = ()  # why --trust-model-code was needed (recorded in the manifest)
    # an in-memory object handed to ``edgepack.build`` (trusted: the caller's own): what it was and how it was
    # serialized into the build's staging folder (recorded in the manifest as ``source.in_memory``)
    in_memory: tuple[tuple[str, str], ...] = ()  # (key, value) pairs: object, serialized_as, trusted

    def with_inputs(self, inputs: tuple[TensorSpec, ...]) -> "Source":
        return replace(self, inputs=inputs)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "format": self.format,
            "path": self.path,
            "name": self.name,
            "weights": self.weights,
            **({"weights_key": self.weights_key} if self.weights_key else {}),
            **({"weights_strict": False} if not self.weights_strict else {}),
            "sha256": self.sha256,
            "trusted_code": list(self.trusted),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            **({"in_memory": dict(self.in_memory)} if self.in_memory else {}),
        }


MODULES = {"onnx": "edgepack.sources.onnx", "torch": "edgepack.sources.torch", "tf": "edgepack.sources.keras"}
EXTRA_SUFFIXES: dict[str, str] = {}  # file suffix → kind, for source kinds registered at run time


def register(kind: str, module: str, suffixes: tuple[str, ...] = ()) -> None:
    """Register another source kind: ``module`` offers ``load``, ``reference`` (and ``to_onnx`` where it can).

    Used by embedders and by the unit tests' framework-free fake source."""
    MODULES[kind] = module
    for suffix in suffixes:
        EXTRA_SUFFIXES[suffix] = kind


def module_for(kind: str):
    return importlib.import_module(MODULES[kind])


def detect_kind(model: str) -> str:
    """Which framework a model argument belongs to, from its form alone."""
    p = Path(model)
    if p.suffix in EXTRA_SUFFIXES:
        return EXTRA_SUFFIXES[p.suffix]
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix in (".pt", ".pth", ".pt2", ".ts", ".torchscript"):
        return "torch"
    if p.suffix in (".keras", ".h5", ".hdf5"):
        return "tf"
    if p.is_dir() and (p / "saved_model.pb").exists():
        return "tf"
    if ":" in model and not p.exists():
        return "torch"
    if not p.exists():
        raise InputError(f"model not found: {model}", hint="give an .onnx/.keras/.pt2 file, a SavedModel folder, "
                         "or a PyTorch factory as package.module:function or path/to/file.py:function")
    raise UnsupportedConversion(
        f"cannot tell which framework '{model}' belongs to",
        hint="supported: .onnx, .keras/.h5, SavedModel folders, .pt2/.pt TorchScript, module:factory",
    )


NAME_HINT = ("the model's file name becomes its bundle folder: rename the file, or pass --name NAME (letters, "
             "digits, '.', '_' and '-'; at most 64, not starting with '.')")


def _model_name(name: str) -> None:
    from edgepack import safety
    from edgepack.errors import InputError

    try:
        safety.check_name(name, "model name")
    except InputError as e:
        raise InputError(e.message, hint=NAME_HINT) from None


def screen(model: str, kind: str, trust_code: bool, named: bool = False) -> list[str]:
    """Checks before any framework sees the model: a regular file (or a clean SavedModel folder) under the size
    limit with a valid name, and code-carrying content refused without ``--trust-model-code`` (see
    ``edgepack.trust``). Returns what the opt-in allowed, for the manifest."""
    from edgepack import safety, trust

    p = Path(model)
    if ":" in model and not p.exists() and not p.is_symlink():
        return []  # a PyTorch factory: the user's own code, named on the command line
    is_dir = p.is_dir() and not p.is_symlink()
    if is_dir:
        safety.regular_tree(p, "model folder")
    else:
        safety.regular_file(p, "model")
    if not named:  # with --name the file's own name is never used as a folder name
        _model_name(p.name if is_dir else p.stem)
    if kind == "torch":
        what = "a torch.export program" if p.suffix == ".pt2" else "a TorchScript/pickle file"
        return trust.require_trust(model, trust.CodeFinding([what]), trust_code,
                                   "the PyTorch file")
    if kind == "tf":
        if is_dir:
            return trust.require_trust(model, trust.scan_savedmodel(p), trust_code, "the SavedModel")
        if p.suffix.lower() in (".h5", ".hdf5"):
            return trust.require_trust(model, trust.CodeFinding(["legacy HDF5 is loaded without Keras' safe mode"]),
                                       trust_code, "the .h5 model")
        if p.suffix.lower() == ".keras":
            return trust.require_trust(model, trust.scan_keras(p), trust_code, "the Keras model")
    return []


def split_weights(weights: str) -> tuple[str, str | None]:
    """``--weights FILE`` or ``FILE:KEY`` (the state dict nested under KEY of a checkpoint): (file, key or None)."""
    if Path(weights).exists() or ":" not in weights:
        return weights, None
    file, _, key = weights.rpartition(":")
    return file, key or None


def load_source(
    model: str,
    *,
    weights: str | None = None,
    inputs: tuple[TensorSpec, ...] = (),
    trust_code: bool = False,
    signature: str | None = None,
    name: str | None = None,
    in_memory: dict[str, str] | None = None,
    weights_strict: bool = True,
) -> Source:
    """The model as a Source. ``name`` (``--name``) replaces the name taken from the file, which is then never
    checked as a folder name (a model file called ``my model.onnx`` builds with ``--name my-model``).
    ``in_memory``: the file is the caller's own in-memory object serialized by ``edgepack.build`` (keys ``object``,
    ``serialized_as``): it is trusted (it already runs in the caller's process), which is recorded instead of a
    --trust-model-code opt-in.
    ``weights``: a state dict file, or ``FILE:KEY`` for the state dict nested under KEY of a checkpoint;
    ``weights_strict=False`` ignores keys in it the model does not have (PyTorch factories)."""
    from edgepack import safety
    from edgepack.errors import ConfigError

    from edgepack import trust

    if name is not None:
        safety.check_name(name, "--name", ConfigError)

    if Path(model).suffix.lower() in trust.PICKLE_SUFFIXES:
        raise UnsupportedConversion(f"{safety.shown(model)}: pickled models carry code and are never loaded",
                                    hint="export the model to ONNX/.keras/.pt2, or give module:factory + --weights")
    kind = detect_kind(model)
    if in_memory is not None:
        trust_code = True  # the caller's own object: nothing in the file is new code to them
        in_memory = {**in_memory, "trusted": "the caller's own object, already running in its process"}
    trusted = screen(model, kind, trust_code, named=name is not None)
    if in_memory is not None:
        trusted = []
    extra: dict = {}
    if weights is not None:
        weights, key = split_weights(weights)
        safety.regular_file(weights, "weights file")
        if kind == "torch":
            extra = {"weights_key": key, "weights_strict": weights_strict}
        elif key is not None:
            raise ConfigError(f"--weights {safety.shown(weights)}:{safety.shown(key, 80)}: a key in a checkpoint "
                              "goes with a PyTorch factory", hint="drop --weights for this model")
    mod = module_for(kind)
    src = mod.load(model, weights=weights, inputs=inputs, trust_code=trust_code, signature=signature, **extra)
    if name is not None:
        return replace(src, name=name, trusted=tuple(trusted), in_memory=tuple((in_memory or {}).items()))
    _model_name(src.name)
    return replace(src, trusted=tuple(trusted), in_memory=tuple((in_memory or {}).items()))

"""The Python API: ``edgepack.build``, ``plan``, ``check``, ``verify`` and :class:`BuildResult` (see docs/api.md).

Layered beside the CLI, above the pipeline: it turns what a training script has in hand into what the pipeline
reads from disk, so there is one way in. An in-memory model (``torch.nn.Module`` + ``example_inputs``,
``torch.export.ExportedProgram``, ``keras.Model``, ``onnx.ModelProto``) is serialized in the caller's process
(``torch.export`` → ``.pt2``, ``.keras``, ONNX bytes) into a staging folder of the build, then goes through the same
contained pipeline as a file; it is the caller's own object, so it is trusted, and the manifest says so
(``source.in_memory``). Data given as arrays, batches, a ``DataLoader`` or a ``tf.data.Dataset`` is written to the
same ``.npz`` (arrays keyed by input name, ``labels``) the CLI's ``--calibration file.npz`` reads.

Nothing here imports a framework at module import; a framework is touched only through the object the caller
passed (which means the caller has already imported it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, EdgepackError, InputError
from edgepack.report import TargetReport

MAX_SAMPLES = 2000  # samples taken from an iterable (DataLoader, tf.data.Dataset, generator) unless told otherwise
ORDER = ("skipped", "passed", "inconclusive", "failed", "error")  # worst last


class BuildFailed(EdgepackError):
    """Raised by :meth:`BuildResult.raise_for_failures` when a target failed, was inconclusive or errored."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BuildResult:
    """Every target's :class:`~edgepack.report.TargetReport` of one build, in the order the targets were given."""

    reports: tuple[TargetReport, ...]
    report_path: Path | None = None  # OUT/<model>/build-report.json (None when no target got as far as a source)

    @property
    def targets(self) -> dict[str, TargetReport]:
        """Target name → its report."""
        return {r.target: r for r in self.reports}

    @property
    def bundles(self) -> dict[str, Path]:
        """Target name → its bundle folder, for the targets that produced one."""
        return {r.target: Path(r.bundle) for r in self.reports if r.bundle}

    @property
    def verdict(self) -> str:
        """The worst status: ``error`` > ``failed`` > ``inconclusive`` > ``passed`` > ``skipped``."""
        return max((r.status for r in self.reports), key=ORDER.index, default="passed")

    @property
    def passed(self) -> bool:
        """Every target passed (or was skipped)."""
        return all(r.passed for r in self.reports)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this build: 0 passed, 1 failed/inconclusive, 2 an error."""
        return max((r.exit_code for r in self.reports), default=0)

    def __bool__(self) -> bool:
        return self.passed

    def __iter__(self):
        return iter(self.reports)

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, target: str) -> TargetReport:
        return self.targets[target]

    def raise_for_failures(self) -> "BuildResult":
        """Raise :class:`BuildFailed` naming every target that did not pass; return ``self`` otherwise."""
        bad = [r for r in self.reports if not r.passed]
        if not bad:
            return self
        rows = "; ".join(f"{r.target}: {r.status.upper()}" + (f" ({_why(r)})" if _why(r) else "") for r in bad)
        raise BuildFailed(f"{len(bad)} of {len(self.reports)} target(s) did not pass: {rows}",
                          hint="see each TargetReport's checks (result[target].checks) or the build report")

    def render(self, console: Any) -> None:
        """Print the terminal's tables (per-target checks, then the summary) on a Rich console."""
        from edgepack import report as reports

        reports.render(console, list(self.reports))
        reports.render_summary(console, list(self.reports))

    def _repr_html_(self) -> str:
        """The terminal's tables as HTML (for notebooks); every user-controlled text is escaped."""
        import io

        from rich.console import Console

        console = Console(record=True, file=io.StringIO(), width=120, force_terminal=False, highlight=False)
        self.render(console)
        return console.export_html(inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")

    def __repr__(self) -> str:
        rows = ", ".join(f"{r.target}={r.status}" for r in self.reports)
        return f"BuildResult({self.verdict}: {rows})"


def _why(r: TargetReport) -> str:
    return r.reason or ", ".join(c.name for c in r.checks if not c.passed)


# ---------------------------------------------------------------------------------------------- in-memory models


def _classes(obj: Any) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]


def model_kind(model: Any) -> str | None:
    """``torch``, ``exported``, ``keras`` or ``onnx`` for an in-memory model; None for a path (str/PathLike)."""
    if isinstance(model, (str, os.PathLike)):
        return None
    names = _classes(model)
    if "torch.export.exported_program.ExportedProgram" in names:
        return "exported"
    if "torch.nn.modules.module.Module" in names:
        return "torch"
    if any(n.split(".")[0] in ("keras", "tf_keras") and n.endswith(".Model") for n in names):
        return "keras"
    if any(n.split(".")[0] == "onnx" and n.endswith("ModelProto") for n in names):
        return "onnx"
    raise ConfigError(f"edgepack.build cannot take a {type(model).__module__}.{type(model).__qualname__} as the model",
                      hint="pass a path (.onnx, .keras, .pt2, SavedModel folder, pkg.module:factory), a "
                           "torch.nn.Module with example_inputs, a torch.export.ExportedProgram, a keras.Model or an "
                           "onnx.ModelProto")


def _default_name(model: Any, kind: str) -> str:
    from edgepack.safety import NAME_RE

    if kind == "keras":
        guess = getattr(model, "name", "") or ""
    elif kind == "onnx":
        guess = getattr(getattr(model, "graph", None), "name", "") or ""
    else:
        guess = type(model).__name__ if kind == "torch" else "exported"
    guess = str(guess)[:64]
    return guess if NAME_RE.fullmatch(guess) and not guess.startswith(".") else "model"


def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)) for x in items)


def _export_batched(module: Any, args: tuple) -> Any:
    """``torch.export`` with the first axis of every input dynamic where the module allows it (traced on two samples:
    a size-1 axis would be fixed), so edgepack runs the model a batch at a time; exactly as given otherwise."""
    import torch

    try:
        twice = tuple(torch.cat([a, a]) if a.ndim and a.shape[0] == 1 else a for a in args)
        return torch.export.export(module, twice, dynamic_shapes=tuple({0: torch.export.Dim.AUTO} if a.ndim else None
                                                                        for a in twice))
    except Exception:  # noqa: BLE001 - not batchable on axis 0 (or not exportable that way): export as given
        return torch.export.export(module, args)


def serialize(model: Any, kind: str, folder: Path, name: str, example_inputs: Any = None) -> tuple[Path, dict[str, str]]:
    """Write the caller's model into ``folder`` (in the caller's process: the object lives there) and say what it
    was and how it was written (the manifest's ``source.in_memory``)."""
    what = f"{type(model).__module__}.{type(model).__qualname__}"
    if kind == "torch":
        import torch

        if example_inputs is None:
            raise ConfigError("an in-memory torch.nn.Module needs example_inputs (a tensor or a tuple of tensors, "
                              "batch first) to be exported",
                              hint="edgepack.build(module, targets, example_inputs=torch.zeros(1, 3, 32, 32), ...)")
        path = folder / f"{name}.pt2"
        was_training = model.training
        model.eval()  # exported for inference; the caller's module is put back as it was
        args = _as_tuple(example_inputs)
        try:
            program = _export_batched(model, args)
        except Exception as e:  # noqa: BLE001 - the exporter's message, on one line
            raise ConfigError(f"torch.export could not export the {type(model).__qualname__}: "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}",
                              hint="check example_inputs (shapes, dtypes) and that forward() is exportable") from None
        finally:
            model.train(was_training)
        torch.export.save(program, str(path))
        return path, {"object": f"{what} ({type(model).__qualname__})", "serialized_as": "pt2 (torch.export)"}
    if kind == "exported":
        import torch

        path = folder / f"{name}.pt2"
        torch.export.save(model, str(path))
        return path, {"object": what, "serialized_as": "pt2 (torch.export.save)"}
    if kind == "keras":
        path = folder / f"{name}.keras"
        model.save(str(path))
        return path, {"object": what, "serialized_as": "keras (model.save)"}
    path = folder / f"{name}.onnx"
    try:
        data = model.SerializeToString()
    except ValueError as e:  # > 2 GB: protobuf cannot hold it in one message
        raise ConfigError(f"the onnx.ModelProto cannot be serialized in one piece ({e})",
                          hint="save it with external data (onnx.save(model, path, save_as_external_data=True)) "
                               "and pass the path") from None
    path.write_bytes(data)
    return path, {"object": what, "serialized_as": "onnx (ModelProto.SerializeToString)"}


# ---------------------------------------------------------------------------------------------- data


def _array(x: Any) -> np.ndarray:
    """A numpy array from numpy, a torch tensor (CPU, detached) or a TensorFlow tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def _fed(inputs: tuple) -> list:
    """The inputs data must be given for (declared constants and recurrent states are not)."""
    return [t for t in inputs if t.value is None and t.state_from is None]


def _batch(item: Any, fed: list) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One element of an iterable: a dict keyed by input name (``labels``/``label`` optional), a tuple/list of
    arrays (one per input, then optionally the labels; or ``(inputs, labels)``), or one array (one input)."""
    names = [t.name for t in fed]
    if isinstance(item, Mapping):
        d = dict(item)
        labels = d.pop("labels", d.pop("label", None))
        return {k: _array(v) for k, v in d.items()}, None if labels is None else _array(labels)
    if isinstance(item, (tuple, list)):
        parts = list(item)
        if len(parts) == 2 and len(names) > 1 and isinstance(parts[0], (tuple, list)):
            xs, labels = list(parts[0]), parts[1]
        elif len(parts) == 2 and isinstance(parts[0], Mapping):
            return _batch(parts[0], fed)[0], _array(parts[1])
        elif len(parts) == len(names):
            xs, labels = parts, None
        elif len(parts) == len(names) + 1:
            xs, labels = parts[:-1], parts[-1]
        else:
            raise InputError(f"a data batch has {len(parts)} parts; the model takes {len(names)} input(s) "
                             f"({', '.join(names)})", hint="yield (input, ..., labels) tuples or dicts keyed by "
                                                           "input name (with 'labels')")
        if len(xs) != len(names):
            raise InputError(f"a data batch has {len(xs)} input arrays; the model takes {len(names)} "
                             f"({', '.join(names)})", hint="yield one array per input, in the model's order")
        return {n: _array(x) for n, x in zip(names, xs)}, None if labels is None else _array(labels)
    if len(names) != 1:
        raise InputError(f"a data batch is one array; the model takes {len(names)} inputs ({', '.join(names)})",
                         hint="yield tuples (one array per input) or dicts keyed by input name")
    return {names[0]: _array(item)}, None


def collect(data: Any, inputs: tuple, max_samples: int = MAX_SAMPLES, what: str = "calibration"
            ) -> dict[str, np.ndarray]:
    """Arrays keyed by input name (samples first, ``labels`` when the data carries them) from a dict of arrays, one
    array, or an iterable of batches or single samples (``DataLoader``, ``tf.data.Dataset``, list, generator):
    at most ``max_samples`` samples are taken from an iterable. A batch is told from a single sample by its rank
    (the input's rank with the batch axis: a batch; one less: one sample)."""
    from edgepack.safety import max_unpacked_bytes

    fed = _fed(inputs)
    ranks = {t.name: len(t.shape) for t in fed}
    if isinstance(data, Mapping):
        out = {("labels" if k == "label" else str(k)): _array(v) for k, v in data.items()}
        return out
    if hasattr(data, "shape") and hasattr(data, "dtype"):  # one array / tensor: the only input's samples
        return _batch(data, fed)[0]
    if not isinstance(data, Iterable):
        raise ConfigError(f"{what}= cannot be a {type(data).__name__}",
                          hint="pass a dict of arrays keyed by input name, an iterable of batches (a DataLoader, a "
                               "tf.data.Dataset, a list), or a recipe name / .npz path")
    chunks: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    count = size = 0
    for item in data:
        feeds, y = _batch(item, fed)
        n = None
        for name, arr in feeds.items():
            if name in ranks and arr.ndim == ranks[name] - 1:  # one sample
                arr = arr[None]
                feeds[name] = arr
            n = len(arr) if n is None else n
        if n is None or n == 0:
            continue
        if y is not None:
            y = y.reshape(1, *y.shape) if y.ndim == 0 or len(y) != n else y
        take = min(n, max_samples - count)
        for name, arr in feeds.items():
            chunks.setdefault(name, []).append(arr[:take])
            size += arr[:take].nbytes
        if y is not None:
            labels.append(y[:take])
        count += take
        if size > max_unpacked_bytes():
            raise InputError(f"{what}: {count} samples already take {size >> 20} MB, over the "
                             f"{max_unpacked_bytes() >> 20} MB limit", hint="pass max_samples= a smaller number, or "
                                                                             "raise EDGEPACK_MAX_UNPACKED_MB")
        if count >= max_samples:
            break
    if not count:
        raise InputError(f"{what}: the data gave no samples", hint="check the iterable is not empty or exhausted")
    out = {name: np.concatenate(parts) for name, parts in chunks.items()}
    if labels:
        if len(labels) != len(chunks[next(iter(chunks))]):
            raise InputError(f"{what}: some batches carry labels and others do not",
                             hint="give labels with every batch or with none")
        out["labels"] = np.concatenate(labels)
    return out


def stage_data(data: Any, inputs: tuple, folder: Path, what: str, max_samples: int) -> str | None:
    """The pipeline's data argument: a recipe name / file path as given, else the data written to
    ``folder/<what>.npz`` (the format ``--calibration file.npz`` reads)."""
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    from edgepack.core.npz import save_npz

    arrays = collect(data, inputs, max_samples, what)
    path = folder / f"{what}.npz"
    save_npz(path, arrays)
    return str(path)


# ---------------------------------------------------------------------------------------------- declarations


def _inputs(inputs: Any, model_config: str | os.PathLike | None) -> tuple:
    """Input declarations: ``TensorSpec`` objects or CLI strings (``NAME=1x3x32x32``); a model config's first."""
    from edgepack.signature import TensorSpec, load_model_config, parse_input_spec

    base: tuple = ()
    if model_config is not None:
        base = load_model_config(str(model_config))[0]
    items = [inputs] if isinstance(inputs, (str, TensorSpec)) else list(inputs or ())
    given = tuple(parse_input_spec(i) if isinstance(i, str) else i for i in items)
    names = {t.name for t in given}
    return tuple(t for t in base if t.name not in names) + given


def _outputs(outputs: Any, model_config: str | os.PathLike | None) -> dict:
    """Output declarations: ``{name: "KIND[,...]" or OutputSpec}`` or CLI strings ``NAME=KIND[,...]``."""
    from edgepack.core import outspec
    from edgepack.signature import load_model_config

    base = load_model_config(str(model_config))[1] if model_config is not None else {}
    if isinstance(outputs, str):
        outputs = [outputs]
    if outputs is None or isinstance(outputs, Mapping):
        return {**base, **dict(outputs or {})}
    out = dict(base)
    for spec in outputs:
        try:
            name, parsed = outspec.parse_declaration(spec)
        except ValueError as e:
            raise ConfigError(f"cannot parse output declaration '{spec}': {e}",
                              hint="use NAME=KIND[,batch_axis=N|none], e.g. 'logits=scores'") from None
        out[name] = parsed
    return out


def _targets(targets: str | Iterable[str]) -> list[str]:
    return [targets] if isinstance(targets, str) else [str(t) for t in targets]


# ---------------------------------------------------------------------------------------------- entry points


class _Staged:
    """The model (serialized when in memory) and a staging folder for it and the data, removed on exit."""

    def __init__(self, model: Any, out: Path, name: str | None, example_inputs: Any):
        self.kind = model_kind(model)
        self.model, self.name, self.out, self.example_inputs = model, name, out, example_inputs
        self.folder: Path | None = None
        self.in_memory: dict[str, str] | None = None

    def __enter__(self) -> "_Staged":
        from edgepack import bundle as bundles
        from edgepack import safety

        if self.kind is None:
            self.path = str(self.model)
            if self.example_inputs is not None:
                raise ConfigError("example_inputs= goes with an in-memory torch.nn.Module",
                                  hint="a model file carries its own input shapes; declare others with inputs=")
            return self
        if self.name is not None:
            safety.check_name(self.name, "name=", ConfigError)
        self.name = self.name or _default_name(self.model, self.kind)
        root = bundles.prepare_parent(self.out)
        self.folder = bundles.staging_dir(root / self.name, "source")
        path, self.in_memory = serialize(self.model, self.kind, self.folder, self.name, self.example_inputs)
        self.path = str(path)
        return self

    def __exit__(self, *exc) -> None:
        from edgepack import bundle as bundles

        bundles.discard(self.folder)

    def data_folder(self) -> Path:
        from edgepack import bundle as bundles

        if self.folder is None:
            self.folder = bundles.staging_dir(bundles.prepare_parent(self.out), "data")
        return self.folder


def build(
    model: Any,
    targets: str | Iterable[str],
    *,
    example_inputs: Any = None,
    calibration: Any = None,
    holdout: Any = None,
    inputs: Any = None,
    outputs: Any = None,
    budgets: Mapping[str, Any] | None = None,
    out: str | os.PathLike = "dist",
    name: str | None = None,
    max_samples: int = MAX_SAMPLES,
    model_config: str | os.PathLike | None = None,
    weights: str | None = None,
    trust_model_code: bool = False,
    signature: str | None = None,
    synthetic_calibration: bool = False,
    archive: bool = False,
    skip_unavailable: bool = False,
    targets_dir: str | os.PathLike | None = None,
    judge: str | None = None,
    report: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Convert ``model`` into one bundle per target, check parity and budgets, write the reports, and return them.

    ``model``: a path or factory as for ``edgepack build``, or an in-memory ``torch.nn.Module`` (with
    ``example_inputs``), ``torch.export.ExportedProgram``, ``keras.Model`` or ``onnx.ModelProto`` (serialized into
    the build's staging folder; trusted as the caller's own object and recorded as ``source.in_memory``).
    ``calibration`` / ``holdout``: a recipe name or ``.npz`` path, a dict of arrays keyed by input name (``labels``
    optional), or an iterable of batches (dicts, tuples ``(x, ..., labels)``, arrays; a ``DataLoader``, a
    ``tf.data.Dataset``), of which at most ``max_samples`` samples are taken. ``budgets``: the build's own size,
    latency and parity limits, passed to the pipeline as they are. Raises :class:`~edgepack.errors.EdgepackError`
    (``.message``, ``.hint``) for errors concerning the whole build; one target's failure is its report's status."""
    from edgepack import pipeline
    from edgepack import report as reports
    from contextlib import nullcontext

    from edgepack.isolation import Workers, check_settings, current
    from edgepack.sources import load_source

    check_settings()
    if report is not None:
        from edgepack.safety import writable_file_option

        writable_file_option(Path(report), "report=")  # refused before any work, as the CLI's --report
    out = Path(out)
    declared_inputs = _inputs(inputs, model_config)
    from edgepack.config import layered_budgets
    from edgepack.signature import model_config_budgets

    budget_values, budget_sources = layered_budgets(
        ({} if model_config is None else model_config_budgets(str(model_config)), f"model config {model_config}"),
        (dict(budgets or {}), "budgets= argument"))
    with (nullcontext() if current() is not None else Workers()), _Staged(model, out, name, example_inputs) as staged:
        calib_path = hold_path = None
        if any(d is not None and not isinstance(d, (str, os.PathLike)) for d in (calibration, holdout)):
            source = load_source(staged.path, weights=weights, inputs=declared_inputs,
                                 trust_code=trust_model_code, signature=signature, name=staged.name,
                                 in_memory=staged.in_memory)  # its input names key the data
            ins = pipeline.declared(source, declared_inputs).inputs
            folder = staged.data_folder()
            calib_path = stage_data(calibration, ins, folder, "calibration", max_samples)
            hold_path = stage_data(holdout, ins, folder, "holdout", max_samples)
        else:
            calib_path = None if calibration is None else str(calibration)
            hold_path = None if holdout is None else str(holdout)
        results = pipeline.build(
            staged.path, _targets(targets), calibration=calib_path, holdout=hold_path, out=out,
            inputs=declared_inputs, weights=weights, trust_code=trust_model_code, signature=signature,
            synthetic=synthetic_calibration, archive=archive, skip_unavailable=skip_unavailable,
            targets_dir=None if targets_dir is None else Path(targets_dir), outputs=_outputs(outputs, model_config),
            name=staged.name, judge=judge, in_memory=staged.in_memory, progress=progress or (lambda _m: None),
            budgets=budget_values or None, budget_sources=budget_sources or None)
    model_name = next((r.source["name"] for r in results if r.source), None)
    path = Path(report) if report is not None else (out / model_name / "build-report.json" if model_name else None)
    if path is not None:
        reports.write_json(results, path)
    return BuildResult(tuple(results), path)


def plan(model: Any, targets: str | Iterable[str], *, example_inputs: Any = None, inputs: Any = None,
         model_config: str | os.PathLike | None = None, weights: str | None = None, trust_model_code: bool = False,
         signature: str | None = None, skip_unavailable: bool = False, targets_dir: str | os.PathLike | None = None,
         name: str | None = None, out: str | os.PathLike = "dist"):
    """What :func:`build` would do with each target (build, skip or refuse, and why), without converting anything.
    Returns an ``edgepack.plan.Plan`` (``.rows``, ``.to_json()``); refusals are rows, not exceptions. An in-memory
    model is serialized into a staging folder under ``out`` that is removed before this returns."""
    from edgepack import pipeline
    from edgepack.isolation import check_settings

    check_settings()
    with _Staged(model, Path(out), name, example_inputs) as staged:
        return pipeline.plan(staged.path, _targets(targets), inputs=_inputs(inputs, model_config), weights=weights,
                             trust_code=trust_model_code, signature=signature, skip_unavailable=skip_unavailable,
                             targets_dir=None if targets_dir is None else Path(targets_dir), name=staged.name,
                             in_memory=staged.in_memory)


def check(bundle: str | os.PathLike, progress: Callable[[str], None] | None = None) -> TargetReport:
    """Re-run integrity, host parity and budgets of an existing bundle from its golden files (rewrites its
    report.json); the report's ``status`` is the verdict."""
    from edgepack import pipeline
    from edgepack.isolation import check_settings

    check_settings()
    return pipeline.check(Path(bundle), progress=progress or (lambda _m: None))


def verify(bundle: str | os.PathLike, *, allow_failed: bool = False):
    """Check every file of a bundle against its manifest (sha256, size, extra files) and its recorded verdict.
    Returns an ``edgepack.bundle.Verification`` (truthy when it passed; ``.problems`` lists what did not);
    symlinks, special files and paths out of the bundle raise :class:`~edgepack.errors.EdgepackError`."""
    from edgepack import bundle as bundles

    result = bundles.verify(Path(bundle), allow_failed=allow_failed)
    bundles.refuse_unsafe(result)
    return result


__all__ = ["BuildFailed", "BuildResult", "build", "check", "collect", "model_kind", "plan", "serialize", "verify"]

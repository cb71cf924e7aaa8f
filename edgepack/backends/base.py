"""The backend contract: every hook the pipeline calls is declared here (no duck typing).

A backend lives in ``edgepack/backends/<name>/``:

* ``__init__.py`` — the Backend subclass, its Options and RuntimeSpec models (no framework import);
* ``convert.py``  — the worker side: framework imports, conversion, returns an Artifact;
* ``runner.py``   — the host runner (parity + latency on this host);
* ``device.py``   — numpy-only ``load(bundle, artifact, runtime, threads) -> (infer, facts)``, copied into every
                    bundle as ``runner/device.py`` and run by the bundle's ``run_bundle.py`` on devices.
"""

from __future__ import annotations

import abc
import importlib.util
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.core.checks import Check
from edgepack.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source


# what the pipeline's ONNX bridge needs per source kind (import names, checked with find_spec)
BRIDGE_NEEDS: dict[str, tuple[str, ...]] = {"torch": ("torch", "onnxscript"), "tf": ("tensorflow", "tf2onnx")}
# the other direction: ONNX sources reach backends that take torch (but not onnx) through onnx2torch
# (edgepack.sources.onnx_torch; its import names are repeated here so this module imports no source code)
TORCH_BRIDGE_NEEDS: tuple[str, ...] = ("torch", "onnx2torch")
TORCH_BRIDGE_ROUTE = "onnx → torch bridge"


def _installed(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


class NoOptions(BaseModel):
    """Backends without options accept none (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Runner(abc.ABC):
    """Runs an artifact: ``activate`` → ``infer`` (any number of times) → ``deactivate``.

    ``infer`` takes and returns float/int numpy arrays in the *reference* model's layout and dtype
    (a runner (de)quantizes and transposes at its edges), keyed by tensor name. ``infer_for_latency`` is what the
    latency budget times (a runner may time a deployment-style compile there); by default it is ``infer``.
    """

    def __init__(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> None:
        self.artifact = artifact
        self.bundle_dir = Path(bundle_dir)
        self.threads = threads
        self.active = False
        self.facts: dict[str, Any] = {}  # what the runtime actually used (precision, device, …), for the report

    def activate(self) -> None:
        self.activate_impl()
        self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
        self.active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_impl(feed)

    def infer_for_latency(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer(feed)

    @property
    def max_batch(self) -> int | None:
        return self.artifact.max_batch

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        return None


class DeviceLoaderRunner(Runner):
    """A host runner that runs the bundle's own device loader (``device.load``): host and device share one path."""

    device_module: ClassVar[str]  # e.g. "edgepack.backends.ort_mobile.device"

    def activate_impl(self) -> None:
        import importlib

        load = importlib.import_module(self.device_module).load
        self._infer, self.facts = load(self.bundle_dir, self.artifact.to_dict(), dict(self.artifact.runtime),
                                       self.threads)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(feed)

    def deactivate_impl(self) -> None:
        self._infer = None


class Backend(abc.ABC):
    """Converts a source into an artifact and provides a host runner and a device loader for it."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]  # import names, checked with find_spec, never imported here
    extra: ClassVar[str]  # pip extra suggested when something is missing
    accepts: ClassVar[frozenset[str]]  # source kinds taken directly; the pipeline bridges others to onnx
    precisions: ClassVar[frozenset[str]]
    Options: ClassVar[type[BaseModel]] = NoOptions
    Runtime: ClassVar[type[RuntimeSpec]] = RuntimeSpec
    description: ClassVar[str] = ""
    refusals: ClassVar[dict[str, str]] = {}  # source kind → hint when this backend cannot take it
    host_parity: ClassVar[str] = "host"  # "host-proxy": the host runs a stand-in for the device runtime

    # ---------------------------------------------------------------------------------------- availability

    @classmethod
    def missing(cls) -> list[str]:
        """Required import names that are not installed."""
        out = []
        for mod in cls.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    out.append(mod)
            except (ImportError, ValueError):
                out.append(mod)
        return out

    @classmethod
    def ensure_available(cls) -> None:
        missing = cls.missing()
        if missing:
            raise MissingDependency(
                f"backend '{cls.name}' needs {', '.join(missing)}, which is not installed",
                hint=f"pip install -c constraints.txt -e '.[{cls.extra}]'",
            )

    @classmethod
    def package_dir(cls) -> Path:
        """The backend's folder (``backends/<name>/``)."""
        return Path(inspect.getfile(cls)).parent

    @classmethod
    def device_file(cls) -> Path:
        """The numpy-only device loader shipped into every bundle of this backend."""
        return cls.package_dir() / "device.py"

    # ---------------------------------------------------------------------------------------- validation

    def validate(self, profile: "TargetProfile") -> BaseModel:
        """Refuse precisions and options this backend does not support; returns the validated Options."""
        where = profile.path or profile.name
        if profile.precision not in self.precisions:
            raise ConfigError(f"{where}: backend '{self.name}' does not support precision '{profile.precision}'",
                              hint=f"allowed precisions: {', '.join(sorted(self.precisions))}")
        try:
            return self.Options.model_validate(profile.options)
        except ValidationError as e:
            from edgepack.config import validation_message

            raise validation_message(e, self.Options, where, prefix="options.") from None

    def route(self, kind: str) -> tuple[bool, str]:
        """Whether this backend can take a source kind (directly, through the torch/tf → ONNX bridge, or for a
        backend that takes torch but not onnx, through the onnx → torch bridge), and how / why not."""
        if kind in self.accepts:
            return True, f"direct ({kind})"
        if "onnx" in self.accepts and kind in BRIDGE_NEEDS:
            need = [m for m in BRIDGE_NEEDS[kind] if not _installed(m)]
            if need:
                return False, f"the {kind} → onnx bridge needs {', '.join(need)} (not installed)"
            return True, f"{kind} → onnx bridge"
        if kind == "onnx" and "torch" in self.accepts:
            need = [m for m in TORCH_BRIDGE_NEEDS if not _installed(m)]
            if need:
                return False, f"the {TORCH_BRIDGE_ROUTE} needs {', '.join(need)} (not installed)"
            return True, TORCH_BRIDGE_ROUTE
        return False, f"{self.name} takes {', '.join(sorted(self.accepts))} sources, not {kind}"

    def needs_calibration(self, profile: "TargetProfile", options: BaseModel) -> bool:
        """Whether convert reads ``data.calibration`` (quantizers)."""
        return profile.precision.startswith("int8") and profile.precision != "int8-dynamic"

    def tunes_on_data(self, profile: "TargetProfile", options: BaseModel) -> bool:
        """Whether convert chooses among recipes on the tuning split (it then receives ``data.tuning``): by default,
        calibrated INT8 with ``options.accuracy_search`` enabled."""
        search = getattr(options, "accuracy_search", None)
        return self.needs_calibration(profile, options) and search is not None and bool(search.enabled)

    def preflight(self, source: "Source", profile: "TargetProfile", options: Any) -> None:
        """Refuse (raise EdgepackError), before any target converts, what ``convert`` would refuse from the source
        alone (e.g. an op the device's runtime lacks). It only reads the model: the plan calls it for sources the
        backend takes directly, the build calls it in the backend's worker on a bridged source right after the
        bridge. The default refuses nothing."""
        return None

    @classmethod
    def has_preflight(cls) -> bool:
        return cls.preflight is not Backend.preflight

    def host_checks(self, artifact: Artifact) -> list[Check]:
        """Backend-specific report rows proven on the host (static lints the converter ran); none by default."""
        return []

    def runtime_spec(self, artifact: Artifact) -> RuntimeSpec:
        return self.Runtime.model_validate(artifact.runtime)

    # ---------------------------------------------------------------------------------------- work

    @abc.abstractmethod
    def convert(self, source: "Source", profile: "TargetProfile", options: Any, data: ConvertData,
                out_dir: Path) -> Artifact:
        """Write the artifact's files into ``out_dir`` and describe them. Runs in a worker process; prints
        nothing, installs nothing. ``options`` is the validated Options object."""

    @abc.abstractmethod
    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        """A runner for the artifact on this host; raises RuntimeUnavailable where it cannot run here."""

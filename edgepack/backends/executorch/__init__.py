"""ExecuTorch: one ``model.pte`` (XNNPACK delegate) for Android and iOS apps — PyTorch's own on-device runtime.

Route (inside the conversion worker; see ``convert.py``): the PyTorch source (a ``module:factory`` + weights, or a
``.pt2``) → ``torch.export`` → ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])`` → ``.pte``.

* fp32: the float program, XNNPACK takes every op it has a kernel for; the rest runs on the portable kernels.
* int8: PT2E static quantization with ``XNNPACKQuantizer`` (per-channel symmetric int8 weights, int8 activations
  calibrated on the calibration split), through edgepack's accuracy search (``search.py`` over
  :mod:`edgepack.quantsearch`) on the tuning split: the plain recipe, then per-tensor weights and min/max observers,
  then the most sensitive layers kept in float through the quantizer's module-name filter.
* int8-dynamic: int8 weights of the linear layers, activations quantized per call (no calibration data): the recipe
  for transformers and recurrent nets.

The report says how much XNNPACK took (delegated vs portable ops by count and by MACs); a program that mostly falls
back to portable kernels gets a warning row. ONNX and Keras sources are refused by the plan (``refusals``): there is
no route from them into torch here. Host and device run the same loader (``device.py``: ``executorch.runtime``).
Modules: ``spec.py`` (Options, Runtime spec, app coordinates), ``convert.py`` and ``search.py`` (worker side),
``runner.py`` (host runner), ``device.py`` (the loader shipped in every bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgepack.artifact import Artifact, ConvertData, RuntimeSpec
from edgepack.backends.base import Backend, Runner
from edgepack.backends.executorch.spec import ExecuTorchOptions, ExecuTorchRuntime
from edgepack.core.checks import Check

if TYPE_CHECKING:
    from edgepack.config import TargetProfile
    from edgepack.sources import Source

__all__ = ["ExecuTorchBackend", "ExecuTorchOptions", "ExecuTorchRuntime"]

REFUSALS = {
    "onnx": "ExecuTorch programs are exported from PyTorch (torch.export); an ONNX model reaches them through the "
            "onnx → torch bridge, which is not available here: give the PyTorch model (module:factory + --weights, "
            "or a .pt2) instead, or install onnx2torch (scripts/setup-env.sh); ONNX files go to the "
            "ort_mobile/openvino/tensorrt targets directly",
    "tf": "ExecuTorch programs are exported from PyTorch (torch.export); Keras/TensorFlow models go to the tflite "
          "target (or to ort_mobile/openvino through the ONNX bridge)",
}


class ExecuTorchBackend(Backend):
    name = "executorch"
    requires = ("executorch", "torch")
    extra = "executorch"
    accepts = frozenset({"torch"})
    precisions = frozenset({"fp32", "int8", "int8-dynamic"})
    Options = ExecuTorchOptions
    Runtime: ClassVar[type[RuntimeSpec]] = ExecuTorchRuntime
    description = ("ExecuTorch (.pte, XNNPACK delegate) for Android/iOS apps; checked on the host with "
                   "executorch.runtime")
    refusals: ClassVar[dict[str, str]] = REFUSALS

    def host_checks(self, artifact: Artifact) -> list[Check]:
        """The XNNPACK share row(s) the converter measured (information, or a warning when most falls back)."""
        return [Check.from_dict(r) for r in artifact.details.get("host_checks", [])]

    def convert(self, source: Source, profile: TargetProfile, options: ExecuTorchOptions, data: ConvertData,
                out_dir: Path) -> Artifact:
        from edgepack.backends.executorch.convert import convert

        return convert(source, profile, options, data, Path(out_dir))

    def runner(self, artifact: Artifact, bundle_dir: Path, threads: int = 1) -> Runner:
        from edgepack.backends.executorch.runner import ExecuTorchRunner

        return ExecuTorchRunner(artifact, bundle_dir, threads)

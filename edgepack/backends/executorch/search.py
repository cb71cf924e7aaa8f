"""The executorch backend's INT8 search space for :func:`edgepack.quantsearch.search` (worker side).

PT2E with ``XNNPACKQuantizer``: the model is captured with ``torch.export``, annotated, calibrated on the calibration
split, converted, exported again and lowered to XNNPACK; every candidate is a real ``.pte`` run through the bundle's
own loader (``device.py``), so what the search judges is what the bundle runs.

Recipes: the profile's plain one (per-channel symmetric weights, histogram-observed activations), then the other
weight granularity, then min/max-observed activations. Layers go back to float through the quantizer's module-name
filter (``get_module_name_filter``): the convolutions and linear layers whose module is listed are left unannotated,
so XNNPACK runs them in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.executorch.device import load
from edgepack.quantsearch import Recipe, Space

Feeds = dict[str, np.ndarray]


@dataclass
class Candidate:
    path: Path
    buf: bytes
    float_layers: tuple[str, ...] = ()
    delegation: dict[str, Any] = field(default_factory=dict)
    _infer: Callable | None = None


class ETSpace(Space):
    def __init__(self, module, args: tuple, calibration: list[tuple], in_names: list[str], out_names: list[str],
                 work: Path, per_channel: bool, lower: Callable[[Any], tuple[bytes, dict[str, Any]]], feed1: Feeds,
                 fp32: bytes | None = None):
        self.module, self.args, self.calibration = module, args, calibration
        self.in_names, self.out_names = in_names, out_names
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.per_channel = per_channel
        self.lower = lower  # exported program → (.pte bytes, delegation facts)
        self.feed1 = feed1
        self.fp32 = fp32
        self._n = 0

    def recipes(self) -> list[Recipe]:
        plain, other = ("per-channel", "per-tensor") if self.per_channel else ("per-tensor", "per-channel")
        return [Recipe(f"a8w8-{plain}", {"weights": plain, "activations": "histogram"}, "the profile's recipe"),
                Recipe(f"a8w8-{other}", {"weights": other, "activations": "histogram"}, "other weight granularity"),
                Recipe(f"a8w8-{plain}-minmax", {"weights": plain, "activations": "minmax"},
                       "activation ranges from min/max instead of the histogram (keeps outliers unclipped)")]

    # ------------------------------------------------------------------------------------- building

    def quantized_program(self, recipe: Recipe, float_layers: tuple[str, ...]):
        """The PT2E-converted model exported again (Q/DQ around int8 ops), ready for lowering."""
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e import MinMaxObserver
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

        config = get_symmetric_quantization_config(is_per_channel=recipe.settings["weights"] == "per-channel")
        if recipe.settings["activations"] == "minmax":
            from dataclasses import replace as dc_replace

            act = dc_replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
            config = dc_replace(config, input_activation=act, output_activation=act)
        quantizer = XNNPACKQuantizer().set_global(config)
        if float_layers:
            keep = [get_module_name_filter(m) for m in float_layers]
            quantizer.set_filter_function(lambda n: not any(f(n) for f in keep))
        gm = torch.export.export(self.module, self.args).module()
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for sample in self.calibration:
                prepared(*sample)
        converted = convert_pt2e(prepared)
        return torch.export.export(converted, self.args)

    def build(self, recipe: Recipe, float_layers: tuple[str, ...]) -> Candidate:
        buf, facts = self.lower(self.quantized_program(recipe, tuple(float_layers)))
        self._n += 1
        path = self.work / f"candidate-{self._n}.pte"
        path.write_bytes(buf)
        return Candidate(path, buf, tuple(float_layers), facts)

    # ------------------------------------------------------------------------------------- judging

    def _loader(self, path: Path) -> Callable:
        artifact = {"inputs": [{"name": n} for n in self.in_names], "outputs": [{"name": n} for n in self.out_names]}
        infer, _ = load(path.parent, artifact, {"program": path.name, "method": "forward"}, 1)
        return infer

    def run(self, candidate: Candidate, feeds: Feeds) -> Feeds:
        if candidate._infer is None:
            candidate._infer = self._loader(candidate.path)
        n = len(next(iter(feeds.values())))
        outs: dict[str, list[np.ndarray]] = {k: [] for k in self.out_names}
        for i in range(n):
            got = candidate._infer({k: np.asarray(v[i:i + 1]) for k, v in feeds.items()})
            for k in self.out_names:
                outs[k].append(got[k])
        return {k: np.concatenate(v) for k, v in outs.items()}

    def layers(self, candidate: Candidate) -> list[str]:
        return [m for m in candidate.delegation.get("quantized_layers", []) if m not in candidate.float_layers]

    def size(self, candidate: Candidate) -> int:
        return len(candidate.buf)

    def timer(self, candidate: Candidate) -> Callable[[], Any]:
        if candidate._infer is None:
            candidate._infer = self._loader(candidate.path)
        infer, feed = candidate._infer, self.feed1
        return lambda: infer(feed)

    def float_timer(self) -> Callable[[], Any] | None:
        if self.fp32 is None:
            return None
        path = self.work / "fp32.pte"
        path.write_bytes(self.fp32)
        infer, feed = self._loader(path), self.feed1
        return lambda: infer(feed)

    def int8_share(self, candidate: Candidate) -> float | None:
        return candidate.delegation.get("int8_mac_share")

    def release(self, candidate: Candidate) -> None:
        candidate._infer = None
        candidate.path.unlink(missing_ok=True)

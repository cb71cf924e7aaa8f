"""OpenVINO device loader, shipped in every openvino bundle as ``runner/device.py``: numpy + openvino only.

The IR runs on the CPU plugin (``OPENVINO_DEVICE=GPU``/``NPU`` to try another) with the runtime spec's parity
inference precision forced (f32: no silent bf16/f16 on CPUs that have it). The build host's runner computes parity
through :func:`load_on` with exactly this compile, so host and device agree bit for bit on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEFAULT_XML = "ir/model.xml"


def model_path(bundle: Path, artifact: dict, runtime: dict) -> Path:
    """The IR's .xml in the bundle."""
    return Path(bundle) / runtime.get("model", f"{artifact.get('primary', 'ir')}/model.xml")


def parity_config(runtime: dict, device: str, threads: int) -> dict[str, Any]:
    """Compile properties of the parity compile: on the CPU plugin the spec's inference precision (f32), ``threads``
    threads and the LATENCY hint (one stream); other plugins keep their own defaults."""
    if device != "CPU":
        return {}
    return {"INFERENCE_PRECISION_HINT": runtime.get("parity_precision", "f32"), "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"}


def type_name(value: Any) -> str:
    """'f32' for an ov.Type property value, str() otherwise."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def compiled_facts(compiled) -> dict[str, Any]:
    """The inference precision and execution devices a compiled model actually uses (where the plugin says)."""
    facts: dict[str, Any] = {}
    for key, prop in (("inference_precision", "INFERENCE_PRECISION_HINT"), ("execution_devices", "EXECUTION_DEVICES")):
        try:
            value = compiled.get_property(prop)
        except RuntimeError:  # not every plugin reports every property
            continue
        facts[key] = list(value) if isinstance(value, (list, tuple)) else type_name(value)
    return facts


def make_infer(compiled, artifact: dict) -> Callable[[dict], dict]:
    """``infer(feed) -> {output name: array}`` over one infer request; I/O in the reference names and layout."""
    request = compiled.create_infer_request()
    in_names = [t["name"] for t in artifact["inputs"]]
    outputs = [(t["name"], compiled.output(t["name"])) for t in artifact["outputs"]]

    def infer(feed: dict) -> dict:
        res = request.infer({n: np.asarray(feed[n], order="C") for n in in_names})
        return {n: np.array(res[port]) for n, port in outputs}

    return infer


def load_on(bundle: Path, artifact: dict, runtime: dict, threads: int, device: str):
    """(infer, facts) for the bundle's IR compiled for parity on ``device``."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_path(bundle, artifact, runtime))), device,
                                  parity_config(runtime, device, threads))
    facts = {"runtime": f"openvino {ov.__version__}", "device": device, **compiled_facts(compiled)}
    return make_infer(compiled, artifact), facts


def deployment_config(device: str, threads: int) -> dict[str, Any]:
    """Compile properties of the deployment compile: the plugin's own inference precision (f16 on ARM CPUs, bf16 on
    CPUs with AMX/AVX-512 BF16, f32 elsewhere), ``threads`` threads and the LATENCY hint."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"} if device == "CPU" else {}


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    """The bundle runner's entry point; raises ImportError when openvino is not installed.

    ``EDGEPACK_RUNTIME_CONFIG=deployment`` (set by ``run_bundle.py --config deployment``) compiles with the
    plugin's defaults instead of the parity precision; the facts say which precision actually ran."""
    device = os.environ.get("OPENVINO_DEVICE", "CPU")
    if os.environ.get("EDGEPACK_RUNTIME_CONFIG") != "deployment":
        return load_on(bundle, artifact, runtime, threads, device)
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_path(bundle, artifact, runtime))), device,
                                  deployment_config(device, threads))
    facts = {"runtime": f"openvino {ov.__version__}", "device": device, "config": "deployment",
             **compiled_facts(compiled)}
    return make_infer(compiled, artifact), facts

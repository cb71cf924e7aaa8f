"""ExecuTorch device loader (numpy + executorch only; shipped in every executorch bundle as runner/device.py).

Loads the bundle's ``.pte`` with ``executorch.runtime`` and runs its method one call per batch (the program's shapes
are static: the runner feeds what the manifest says). The executorch Python runtime takes and returns torch tensors
(torch is a dependency of the executorch wheel itself), so the loader converts at its edges and hands numpy back.
The edgepack host runner runs this same function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load(bundle: Path, artifact: dict, runtime: dict, threads: int):
    """``(infer, facts)`` for the bundle's .pte; ImportError when the executorch runtime is not installed."""
    from executorch.runtime import Runtime
    from executorch.version import __version__
    import torch  # executorch's own dependency: its bindings take torch tensors

    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(int(threads))
    except (ImportError, RuntimeError):  # older wheels: XNNPACK keeps its default thread pool
        pass
    rt = Runtime.get()
    program = rt.load_program(Path(bundle) / runtime["program"])
    method = program.load_method(runtime["method"])
    if method is None:
        raise RuntimeError(f"{runtime['program']} has no method '{runtime['method']}'")
    in_names = [t["name"] for t in artifact["inputs"]]
    out_names = [t["name"] for t in artifact["outputs"]]

    def infer(feed: dict) -> dict:
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in in_names]
        outs = method.execute(args)
        return {n: np.array(o.detach().numpy() if hasattr(o, "detach") else o) for n, o in zip(out_names, outs)}

    facts = {"runtime": f"executorch {__version__.split('+')[0]}",
             "delegate": runtime.get("delegate", "XnnpackBackend"),
             "delegate_available": rt.backend_registry.is_available(runtime.get("delegate", "XnnpackBackend")),
             "threads": threads}
    return infer, facts

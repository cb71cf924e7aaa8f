"""coremltools' generated protobuf modules, loaded without running ``coremltools/__init__``.

Importing ``coremltools`` pulls in torch and TensorFlow (~10 s here); the evaluator needs only the two message
definitions, which are plain ``*_pb2`` files inside the installed package. When coremltools is already imported
its own modules are reused, so one process never registers the descriptors twice.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import lru_cache

from edgepack.errors import MissingDependency

_ALIAS = "_edgepack_coremltools_proto"


@lru_cache(maxsize=1)
def modules() -> tuple[types.ModuleType, types.ModuleType]:
    """``(Model_pb2, MIL_pb2)``."""
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto.Model_pb2"], sys.modules["coremltools.proto.MIL_pb2"]
    try:
        spec = importlib.util.find_spec("coremltools")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("reading Core ML packages needs coremltools (for its protobuf definitions)",
                                hint="pip install -c constraints.txt -e '.[coreml]'")
    proto_dir = [f"{loc}/proto" for loc in spec.submodule_search_locations]
    if _ALIAS not in sys.modules:
        pkg = types.ModuleType(_ALIAS)
        pkg.__path__ = proto_dir  # relative imports inside the *_pb2 files resolve here
        sys.modules[_ALIAS] = pkg
    model_pb2 = importlib.import_module(f"{_ALIAS}.Model_pb2")
    mil_pb2 = importlib.import_module(f"{_ALIAS}.MIL_pb2")
    return model_pb2, mil_pb2

"""edgepack's own Core ML program evaluator: runs a saved ``.mlpackage`` with numpy on any OS.

coremltools converts on Linux but cannot predict there, so edgepack reads the MIL program and its weight blobs
itself and executes them op by op (fp32, or fp16 emulated per op). Imports numpy and protobuf only.
"""

from edgepack.backends.coreml.mil.evaluator import Evaluator, TraceEntry
from edgepack.backends.coreml.mil.program import Program, load_program
from edgepack.backends.coreml.mil.registry import OPS, EvaluationError

__all__ = ["Evaluator", "TraceEntry", "Program", "load_program", "OPS", "EvaluationError"]

"""Framework-free fakes for the unit tests: a linear-classifier source (``*.fakemodel``: an .npz with weight, bias
and input shape) and two backends in edgepack's backend folder shape — ``fake_identity`` (exact) and
``fake_noisy`` (answers with noise, zeros, a constant, NaN/Inf or the wrong shape, on host and device alike)."""

from __future__ import annotations

from edgepack import sources
from edgepack.backends import registry
from edgepack.parity import tolerances

sources.register("fake", "fakes.source", suffixes=(".fakemodel",))
registry.register("fake_identity", "fakes.identity:IdentityBackend")
registry.register("fake_noisy", "fakes.noisy:NoisyBackend")
registry.register("fake_int8", "fakes.int8:Int8Backend")
tolerances.TOLERANCES[("fake_identity", "fp32")] = tolerances.Tolerance(
    1e-6, 0.99999, 0.99, None, "identity arithmetic: the bundle computes exactly what the reference computes")
tolerances.TOLERANCES[("fake_noisy", "fp32")] = tolerances.Tolerance(
    None, 0.999, 0.98, 0.01, "a stand-in for a lossy backend: scale-free limits like the fp16 rows")
tolerances.TOLERANCES[("fake_int8", "int8")] = tolerances.Tolerance(
    None, 0.98, 0.98, 0.01, "a stand-in for an INT8 backend: the int8 rows")

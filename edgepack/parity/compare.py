"""The parity verdict, host side: a thin name for the shared numpy core (``edgepack.core.metrics``), so the host
and the bundle runner compute exactly the same metrics and checks. Knows nothing of frameworks or profiles."""

from __future__ import annotations

import numpy as np

from edgepack.core.checks import Check
from edgepack.core.limits import Limits
from edgepack.core.metrics import ParityOutcome, is_class_scores, output_metrics, parity
from edgepack.core.outspec import OutputSpec

__all__ = ["Check", "Limits", "ParityOutcome", "compare", "is_class_scores", "output_metrics"]


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], limits: Limits,
            labels: np.ndarray | None = None, kinds: dict[str, str] | None = None,
            specs: dict[str, OutputSpec] | None = None) -> ParityOutcome:
    """Metrics for every reference output (samples first), judged by the limits of its kind; channel groups in
    ``specs`` are judged as virtual outputs."""
    return parity(reference, candidate, limits, labels, kinds, specs)

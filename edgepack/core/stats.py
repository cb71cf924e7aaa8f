"""Statistics for honest verdicts: Wilson intervals for rates, a paired interval for accuracy drops, and how many
samples a rate budget needs before a perfect result can prove it."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / n`` (95 % by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def paired_drop_interval(ref_right_bundle_wrong: int, ref_wrong_bundle_right: int, n: int,
                         z: float = Z95) -> tuple[float, float]:
    """Interval of an accuracy drop measured on the same samples (normal approximation on the discordant pairs)."""
    if n <= 0:
        return -1.0, 1.0
    b, c = ref_right_bundle_wrong, ref_wrong_bundle_right
    drop = (b - c) / n
    var = max((b + c) - (b - c) ** 2 / n, 0.0) / (n * n)
    half = z * math.sqrt(var) + 1.0 / n  # continuity correction keeps 0/0 discordant pairs honest
    return drop - half, drop + half


def samples_needed(min_rate: float, z: float = Z95) -> int:
    """Samples a flawless result needs for its Wilson lower bound to reach ``min_rate`` (a ≥-rate budget)."""
    if min_rate <= 0:
        return 1
    if min_rate >= 1:
        return 10 ** 9
    # lower bound of n/n is n / (n + z²) ≥ r  ⇔  n ≥ r z² / (1 - r)
    return int(math.ceil(min_rate * z * z / (1 - min_rate)))


def drop_samples_needed(max_drop: float) -> int:
    """Samples a flawless result (no discordant pair) needs for the upper bound of its accuracy drop
    (:func:`paired_drop_interval`: 1/n) to reach ``max_drop`` (a ≤-drop budget)."""
    if max_drop <= 0:
        return 10 ** 9
    return int(math.ceil(1.0 / max_drop - 1e-9))

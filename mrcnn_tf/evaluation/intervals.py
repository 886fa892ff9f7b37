"""95 % intervals for the scores `evaluate` reports: how much a figure on a few dozen images can say.

`bootstrap_interval` resamples the images (mAP50 is a mean over images); `wilson_interval` is the score interval
of a proportion (typing accuracy: cells typed right among the cells). Both are seeded, so a report reads the same
on every run.
"""
import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def bootstrap_interval(values, resamples=2000, level=0.95, seed=0):
    """Percentile bootstrap interval of the mean of `values` ([lo, hi]), or None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def wilson_interval(successes, total, z=Z95):
    """Wilson score interval of a proportion ([lo, hi]), or None when `total` is 0."""
    if total <= 0:
        return None
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [max(0.0, centre - half), min(1.0, centre + half)]

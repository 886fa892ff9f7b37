"""The 95 % intervals evaluate reports, against plain references."""
import math

import numpy as np
import pytest

from mrcnn_tf.evaluation.intervals import bootstrap_interval, wilson_interval


def test_wilson_matches_the_textbook_formula_and_its_edges():
    lo, hi = wilson_interval(54, 60)
    # Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96
    z, n, p = 1.959963984540054, 60, 0.9
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (lo, hi) == pytest.approx(((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)))
    assert 0.79 < lo < 0.80 and 0.95 < hi < 0.96
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) is None


def test_bootstrap_brackets_the_mean_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    few, many = rng.random(20), rng.random(2000)
    for values in (few, many):
        lo, hi = bootstrap_interval(values)
        assert lo < values.mean() < hi
    assert np.diff(bootstrap_interval(many))[0] < np.diff(bootstrap_interval(few))[0] / 5
    assert bootstrap_interval([1.0] * 30) == [1.0, 1.0] and bootstrap_interval([0.5]) is None
    assert bootstrap_interval(few) == bootstrap_interval(few)  # seeded: the same report every run

"""Repeat-factor sampling: factors against a slow reference, the stream's seeded passes, the generator hook."""
import collections
import math

import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.sampling import RepeatFactorOrder, image_class_ids, repeat_factors


def reference_factors(class_sets, t):
    """LVIS's definition written out plainly."""
    n = len(class_sets)
    out = []
    for classes in class_sets:
        best = 1.0
        for c in classes:
            f = sum(1 for other in class_sets if c in other) / n
            best = max(best, max(1.0, math.sqrt(t / f)))
        out.append(best)
    return np.array(out)


def test_factors_match_the_reference_on_random_class_sets(rng):
    for _ in range(20):
        sets = [sorted(set(rng.integers(1, 6, size=rng.integers(0, 3)).tolist())) for _ in range(rng.integers(1, 40))]
        t = float(rng.choice([0.0, 0.05, 0.3, 1.0]))
        np.testing.assert_allclose(repeat_factors(sets, t), reference_factors(sets, t))


def test_bccd_like_counts_repeat_only_the_rare_types():
    # 1 Basophil field, 13 Monocyte, 22 Lymphocyte, 58 Eosinophil, 133 Neutrophil (BCCD-WBC's train split)
    sets = [[1]] + [[4]] * 13 + [[3]] * 22 + [[2]] * 58 + [[5]] * 133
    factors = repeat_factors(sets, 0.3)
    assert factors[0] == pytest.approx(math.sqrt(0.3 * 227))
    assert factors[1] == pytest.approx(math.sqrt(0.3 / (13 / 227)))
    assert factors[40] == pytest.approx(math.sqrt(0.3 / (58 / 227)))  # Eosinophils, in 25.6% of the fields: 1.08
    assert factors[-1] == 1.0  # Neutrophils, in 59% of the fields: never repeated
    assert repeat_factors([], 0.3).shape == (0,) and list(repeat_factors([[], [2]], 0.5)) == [1.0, 1.0]


def test_stream_is_seeded_and_repeats_in_expectation():
    ids, factors = np.arange(10), np.array([1.0] * 9 + [3.5])
    a, b = RepeatFactorOrder(ids, factors, seed=3), RepeatFactorOrder(ids, factors, seed=3)
    stream = [a.image_at(p) for p in range(4000)]
    assert stream == [b.image_at(p) for p in reversed(range(4000))][::-1]  # any access order, same stream
    assert stream != [RepeatFactorOrder(ids, factors, seed=4).image_at(p) for p in range(4000)]
    counts = collections.Counter(stream)
    # 12.5 slots per pass on average, 3.5 of them image 9: share 0.28 (+-0.03 over ~320 passes)
    assert counts[9] / len(stream) == pytest.approx(3.5 / 12.5, abs=0.03)
    first_pass = a._passes[0]
    assert sorted(set(first_pass)) == list(range(10)) and collections.Counter(first_pass)[9] in (3, 4)


class Shapes(Dataset):
    """Four images; image 0 is the only one with class 2."""

    def __init__(self):
        super().__init__()
        self.add_class("s", 1, "common")
        self.add_class("s", 2, "rare")
        for i in range(4):
            self.add_image("s", i, None, class_ids=[2 if i == 0 else 1])
        self.prepare()

    def load_image(self, image_id):
        return np.full((64, 64, 3), 200, np.uint8)

    def load_mask(self, image_id):
        mask = np.zeros((64, 64, 1), bool)
        mask[20:40, 20:40] = True
        return mask, np.array(self.image_info[image_id]["class_ids"], np.int32)


def test_generator_samples_rare_images_more_often():
    dataset = Shapes()
    assert image_class_ids(dataset, 0) == [2] and image_class_ids(dataset, 3) == [1]
    plain = DataGenerator(dataset, tiny_config(), shuffle=True, steps=200)
    balanced = DataGenerator(dataset, tiny_config(REPEAT_FACTOR_THRESHOLD=1.0), shuffle=True, steps=200)
    # f(rare) = 1/4: sqrt(1 / 0.25) = 2; f(common) = 3/4: sqrt(1 / 0.75) = 1.155
    np.testing.assert_allclose(balanced.repeat_factors, [2.0] + [math.sqrt(4 / 3)] * 3)
    share = lambda gen: sum(gen._image_at(p) == 0 for p in range(200)) / 200
    assert share(plain) == pytest.approx(0.25, abs=0.01)
    assert share(balanced) == pytest.approx(2 / (2 + 3 * math.sqrt(4 / 3)), abs=0.06)
    # Validation order (no shuffle) is never re-weighted.
    assert DataGenerator(dataset, tiny_config(REPEAT_FACTOR_THRESHOLD=1.0), shuffle=False)._repeat_order is None

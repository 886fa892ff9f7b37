"""Repeat-factor sampling (Gupta et al., LVIS 2019; detectron2's RepeatFactorTrainingSampler).

Real smears are dominated by one type: BCCD-WBC's training fields hold 136 Neutrophils and one
Basophil. Seen once per pass, a rare type barely moves the class head. Repeat-factor sampling shows
each image `r(I)` times per pass on average, with

    f(c) = share of training images that contain class c
    r(c) = max(1, sqrt(t / f(c)))            t = Config.REPEAT_FACTOR_THRESHOLD
    r(I) = max over the classes c in I of r(c)

so classes seen in more than a share t of the images are not repeated at all. A pass repeats image
I floor(r(I)) times plus once more with probability frac(r(I)) (stochastic rounding, seeded per
pass), then shuffles. Passes run back to back, as `DataGenerator` expects.
"""
import math
import threading

import numpy as np


def image_class_ids(dataset, image_id):
    """Positive class ids present in an image: from what the loader recorded (LiscDataset's
    ``class_ids``, CocoDataset's annotations), else from `load_mask` (slow: reads the masks)."""
    info = dataset.image_info[image_id]
    ids = info.get("class_ids")
    if ids is None and "annotations" in info and "category_map" in info:  # CocoDataset: no mask decoding
        ids = [info["category_map"][a["category_id"]] for a in info["annotations"]
               if not a.get("iscrowd") and a.get("category_id") in info["category_map"]]
    if ids is None:
        ids = dataset.load_mask(image_id)[1]
    return sorted({int(c) for c in np.asarray(ids).ravel() if int(c) > 0})


def repeat_factors(class_sets, threshold):
    """r(I) for each image from the classes it contains.

    Args:
        class_sets: list (one entry per image) of iterables of positive class ids.
        threshold: t; 0 gives 1.0 everywhere (no repetition).

    Returns:
        float64 [num_images] repeat factors >= 1.
    """
    count = len(class_sets)
    factors = np.ones(count, np.float64)
    if threshold <= 0 or count == 0:
        return factors
    images_with = {}
    for classes in class_sets:
        for c in set(classes):
            images_with[c] = images_with.get(c, 0) + 1
    per_class = {c: max(1.0, math.sqrt(threshold / (n / count))) for c, n in images_with.items()}
    for i, classes in enumerate(class_sets):
        if classes:
            factors[i] = max(per_class[c] for c in set(classes))
    return factors


class RepeatFactorOrder:
    """The image at each position of an endless, seeded stream of repeat-factor passes.

    Args:
        image_ids: int array of the images to sample (internal dataset ids).
        factors: their repeat factors (`repeat_factors`).
        seed: stream seed; pass p draws its rounding and order from ``[seed, p, 7]``.
    """

    def __init__(self, image_ids, factors, seed):
        self.image_ids = np.asarray(image_ids, np.int64)
        self.factors = np.asarray(factors, np.float64)
        self.seed = int(seed)
        self._passes = []  # list of int arrays, pass p at index p
        self._starts = [0]  # stream position where each pass starts (one more entry than passes)
        self._lock = threading.Lock()  # PyDataset workers may be threads

    def _pass(self, index):
        rng = np.random.default_rng([self.seed, index, 7])
        whole = np.floor(self.factors).astype(np.int64)
        extra = rng.random(self.factors.size) < (self.factors - whole)
        order = np.repeat(self.image_ids, whole + extra)
        return order[rng.permutation(order.size)]

    def image_at(self, position):
        """Internal image id at stream `position` (>= 0)."""
        with self._lock:
            while self._starts[-1] <= position:
                images = self._pass(len(self._passes))
                self._passes.append(images)
                self._starts.append(self._starts[-1] + images.size)
            index = int(np.searchsorted(self._starts, position, side="right")) - 1
            return int(self._passes[index][position - self._starts[index]])

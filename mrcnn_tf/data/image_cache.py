"""Resized training images kept in memory between epochs (Config.IMAGE_CACHE_MB).

Every epoch the pipeline loads each training image again, decodes it, decodes its masks and resizes both to
the model's size, then augments the result. Only the augmentation is random: in every resize mode but
"crop" the first three steps give the same arrays each time. On a BCCD mosaic step (16 fields of 640x480
to 320 px) they are most of the pipeline's time, and the pipeline shares the CPU with the training step
(measured: bench/RESULTS.md). `ResizedImageCache` keeps their result per image
id, up to a byte budget: the images that fit first stay, later ones are loaded every time as before, so the
cache never evicts (no churn when the set is larger than the budget) and its memory is bounded.

The arrays are returned read-only: the augmentation and the mosaic must copy before they write, and a
step that wrote into a cached image would fail loudly rather than change the next epoch's input.

It assumes `Dataset.load_image` and `load_mask` return the same arrays for an id every time (Matterport's
datasets and mrcnn_tf's do); a dataset that draws new content per call needs IMAGE_CACHE_MB = 0.
"""
import threading

import numpy as np


class ResizedImageCache:
    """Per-image-id tuples of numpy arrays (and plain values) up to `max_bytes` of array data.

    Args:
        max_bytes: budget for the arrays' bytes (0: keep nothing).

    Thread-safe: `DataGenerator` with thread workers shares one cache; process workers each have their own.
    """

    def __init__(self, max_bytes):
        self.max_bytes = int(max(0, max_bytes))
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        # A process worker (spawned, so the generator is pickled) starts with an empty cache of its own.
        state = dict(self.__dict__, _entries={}, bytes=0, hits=0, misses=0)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        """The stored tuple for `key`, or None."""
        entry = self._entries.get(key)
        with self._lock:
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
        return entry

    def put(self, key, values):
        """Store `values` (a tuple) under `key` if its arrays fit the budget; return the stored tuple
        (arrays made read-only) or `values` unchanged when they do not fit."""
        size = sum(v.nbytes for v in values if isinstance(v, np.ndarray))
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            if self.bytes + size > self.max_bytes:
                return values
            frozen = tuple(_read_only(v) for v in values)
            self._entries[key] = frozen
            self.bytes += size
            return frozen


def _read_only(value):
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value).view()  # a view: the caller's own array stays writable
        value.setflags(write=False)
    return value


def cache_for(config):
    """A `ResizedImageCache` of the config's IMAGE_CACHE_MB, or None when the resize is random ("crop"
    mode draws a new crop every time) or the budget is 0."""
    megabytes = float(getattr(config, "IMAGE_CACHE_MB", 0) or 0)
    if megabytes <= 0 or config.IMAGE_RESIZE_MODE == "crop":
        return None
    return ResizedImageCache(int(megabytes * 2 ** 20))

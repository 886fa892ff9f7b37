"""Repeated detect: one trace per model (any pad64 size) and no memory growth (Matterport #1981, #2372).

The 200-call, 512 px version of the growth check is bench/memory.py; this is its fast cousin.
"""
import gc

import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf import model as modellib


def rss_mb():
    """Resident set size of this process in MiB (Linux /proc)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.fixture(scope="module")
def pad64_model(tmp_path_factory):
    config = tiny_config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=128, DETECTION_MIN_CONFIDENCE=0.0)
    return modellib.MaskRCNN("inference", config, tmp_path_factory.mktemp("logs"))


def test_one_trace_for_all_pad64_buckets(pad64_model):
    rng = np.random.default_rng(0)
    # 64x64, 64x128, 128x128 buckets, odd sizes inside them, batches of one and of two.
    shapes = [(64, 64), (50, 61), (64, 100), (120, 127), (128, 128)]
    for shape in shapes:
        pad64_model.detect([rng.integers(0, 255, size=(*shape, 3)).astype(np.uint8)])
    pad64_model.detect([rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8) for _ in range(2)])
    assert pad64_model._predict_fn.experimental_get_tracing_count() == 1


def test_repeated_detect_does_not_grow_memory(pad64_model):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8) for _ in range(3)]
    for i in range(5):  # warm-up: trace, allocator pools, anchor cache
        pad64_model.detect([images[i % 3]])
    gc.collect()
    start = rss_mb()
    for i in range(30):
        results = pad64_model.detect([images[i % 3]])
        assert results[0]["masks"].shape[:2] == (64, 64)
    gc.collect()
    growth = rss_mb() - start
    # A leak of the kind reported for Matterport (a new graph per call) costs MiBs per call; allocator
    # noise stays far below this bound.
    assert growth < 30, f"RSS grew {growth:.1f} MiB over 30 detect calls"
    assert pad64_model._predict_fn.experimental_get_tracing_count() == 1

"""The cache of resized training images (data/image_cache.py, Config.IMAGE_CACHE_MB)."""
import pickle

import numpy as np
import pytest
from helpers_data import MosaicConfig

from mrcnn_tf.wbc import synth
from mrcnn_tf.data.augment import bccd_augmentation
from mrcnn_tf.data.image_cache import ResizedImageCache, cache_for
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.targets import load_image_gt
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.lisc import LiscDataset


class CountingDataset(LiscDataset):
    """Counts how often the pipeline reads each image from disk."""

    def __init__(self):
        super().__init__()
        self.reads = {}

    def load_image(self, image_id):
        self.reads[image_id] = self.reads.get(image_id, 0) + 1
        return super().load_image(image_id)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    synth.write_lisc(out, per_class=1, mixt=1, seed=7)
    return out


def counting_dataset(folder):
    ds = CountingDataset()
    ds.load_lisc(folder, "all")  # verifies every image (one read each), before the pipeline's reads
    ds.prepare()
    ds.reads.clear()
    return ds


def config_with(**values):
    config = MosaicConfig()  # the generators below pass their own mosaic_tiles
    for key, value in values.items():
        setattr(config, key, value)
    return config.refresh()


def batches(folder, config, count, mosaic_tiles=1):
    dataset = counting_dataset(folder)
    gen = DataGenerator(dataset, config, shuffle=True, augmentation=bccd_augmentation(), steps=count, seed=3,
                        mosaic_tiles=mosaic_tiles)
    out = []
    for _ in range(2):  # two epochs: the second reads from the cache
        out += [gen.inputs(i) for i in range(count)]
        gen.on_epoch_end()
    return out, dataset.reads, gen.image_cache


@pytest.mark.parametrize("mosaic_tiles", [1, 2])
def test_cached_batches_equal_uncached_ones_and_each_image_is_read_once(folder, mosaic_tiles):
    cached, reads, cache = batches(folder, config_with(IMAGE_CACHE_MB=64), 4, mosaic_tiles)
    plain, plain_reads, no_cache = batches(folder, config_with(IMAGE_CACHE_MB=0), 4, mosaic_tiles)
    assert no_cache is None
    for a, b in zip(cached, plain):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert set(reads.values()) == {1} and len(reads) == len(cache)
    assert max(plain_reads.values()) >= 2  # without the cache an image is read again in the second epoch
    assert cache.hits > 0 and cache.misses == len(cache)


def test_the_budget_keeps_the_first_images_that_fit_and_nothing_more():
    cache = ResizedImageCache(max_bytes=250)
    a, b, c = np.zeros(100, np.uint8), np.zeros(100, np.uint8), np.zeros(100, np.uint8)
    stored = cache.put(1, (a, "meta", 2.0))
    assert stored[1:] == ("meta", 2.0) and not stored[0].flags.writeable and a.flags.writeable
    cache.put(2, (b,))
    kept = cache.put(3, (c,))  # 300 bytes > 250: not stored, handed back as it was
    assert kept[0] is c and c.flags.writeable
    assert len(cache) == 2 and cache.bytes == 200 and cache.get(3) is None
    assert cache.put(1, (c,))[0] is stored[0]  # a second put of a kept id keeps the first arrays
    with pytest.raises(ValueError):
        cache.get(1)[0][0] = 1  # read-only: a step that wrote into it would change the next epoch
    assert len(ResizedImageCache(0).put(5, (a,))) == 1 and len(ResizedImageCache(0)) == 0


def test_a_pickled_cache_arrives_empty_and_works():
    cache = ResizedImageCache(2 ** 20)
    cache.put(1, (np.ones(10),))
    copy = pickle.loads(pickle.dumps(cache))
    assert len(copy) == 0 and copy.bytes == 0 and copy.max_bytes == cache.max_bytes
    assert copy.put(1, (np.ones(10),))[0].sum() == 10


def test_load_image_gt_hands_out_writable_arrays_when_not_augmented(folder):
    dataset, config = counting_dataset(folder), config_with()
    cache = cache_for(config)
    for _ in range(2):
        image, _, _, _, masks = load_image_gt(dataset, config, 0, rng=np.random.default_rng(0), cache=cache)
        assert image.flags.writeable and masks.flags.writeable
        image[:] = 0  # the caller's copy: the cached image is unchanged
    assert cache.get(0)[0].any() and dataset.reads[0] == 1


def test_no_cache_in_crop_mode_or_at_zero_and_the_value_is_validated():
    assert cache_for(config_with(IMAGE_CACHE_MB=0)) is None
    assert cache_for(config_with(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=64)) is None  # a new crop every time
    assert cache_for(config_with(IMAGE_CACHE_MB=1.5)).max_bytes == int(1.5 * 2 ** 20)
    for bad in (-1, "big", None, float("nan")):
        with pytest.raises(ConfigError, match=r"Config.IMAGE_CACHE_MB = .* is invalid: use megabytes >= 0"):
            config_with(IMAGE_CACHE_MB=bad)


def test_precise_bn_reads_its_batches_through_the_training_cache(folder):
    from mrcnn_tf.engine.training import _precise_bn_callback

    dataset, config = counting_dataset(folder), config_with(BN_STATS_BATCHES=2)
    train_gen = DataGenerator(dataset, config, shuffle=True, augmentation=bccd_augmentation(), steps=2, seed=3)
    [train_gen.inputs(i) for i in range(2)]
    callback = _precise_bn_callback(dataset, config, train_gen, bccd_augmentation(), None)
    assert callback.generator.image_cache is train_gen.image_cache
    [callback.generator.inputs(i) for i in range(2)]
    assert set(dataset.reads.values()) == {1}  # an image training loaded is not loaded again for the statistics

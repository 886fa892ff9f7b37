"""DataGenerator: the graph-contract inputs, Keras compatibility, seeding, skipping and sub-sampling."""
import keras
import numpy as np
import pytest
from helpers_data import SmallDataConfig

from mrcnn_tf.wbc import synth
from mrcnn_tf.data.augment import lisc_augmentation
from mrcnn_tf.data.lisc_format import write_bmp
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.lisc import LiscDataset
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors


class TinyConfig(SmallDataConfig):
    MAX_GT_INSTANCES = 4
    IMAGES_PER_GPU = 2


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe")
    synth.write_lisc(out, per_class=1, mixt=1, seed=5)
    return out


@pytest.fixture(scope="module")
def dataset(root):
    ds = LiscDataset()
    ds.load_lisc(root, "all")
    ds.prepare()
    return ds


def batches(gen, count=None):
    return [gen[i][0] for i in range(count or len(gen))]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_inputs_follow_the_graph_contract(dataset):
    config = TinyConfig()
    gen = DataGenerator(dataset, config, shuffle=True, augmentation=lisc_augmentation(), seed=1)
    item = gen[0]
    assert isinstance(item, tuple) and len(item) == 1
    x, y, sw = keras.utils.unpack_x_y_sample_weight(item)
    assert y is None and sw is None and isinstance(x, tuple) and len(x) == 7
    images, meta, rpn_match, rpn_bbox, class_ids, boxes, masks = x
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                       compute_backbone_shapes(config, (128, 128)), config.BACKBONE_STRIDES,
                                       config.RPN_ANCHOR_STRIDE)
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    assert meta.shape == (2, config.IMAGE_META_SIZE) and meta.dtype == np.float32
    assert rpn_match.shape == (2, len(anchors), 1) and rpn_match.dtype == np.int32
    assert rpn_bbox.shape == (2, 32, 4) and rpn_bbox.dtype == np.float32
    assert class_ids.shape == (2, 4) and class_ids.dtype == np.int32
    assert boxes.shape == (2, 4, 4) and boxes.dtype == np.float32
    assert masks.shape == (2, 16, 16, 4) and masks.dtype == bool
    # Molded = raw - MEAN_PIXEL: padding rows (zeros) read -MEAN_PIXEL.
    np.testing.assert_allclose(images[0, 0, 0], -config.MEAN_PIXEL, rtol=1e-6)
    for b in range(2):
        k = int(np.sum(class_ids[b] > 0))
        assert k >= 1 and not class_ids[b, k:].any() and not boxes[b, k:].any() and not masks[b, :, :, k:].any()
        assert (boxes[b, :k, 2] > boxes[b, :k, 0]).all() and (boxes[b, :k] <= 128).all()
        assert masks[b, :, :, :k].any(axis=(0, 1)).all()
        assert 1 <= np.sum(rpn_match[b] == 1) <= 16 and np.sum(rpn_match[b] != 0) <= 32
        assert np.isin(rpn_match[b], (-1, 0, 1)).all()


def test_seeded_batches_repeat_and_workers_agree(dataset):
    config = TinyConfig()
    def make(seed, **kwargs):
        return DataGenerator(dataset, config, augmentation=lisc_augmentation(), seed=seed, **kwargs)

    first = batches(make(3))
    assert_same(first, batches(make(3)))
    other = batches(make(4))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    # Through Keras' own adapter with two worker threads (prefetching, out-of-order work): same batches.
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    threaded = make(3, workers=2, max_queue_size=4)
    adapter = PyDatasetAdapter(threaded, shuffle=False)
    adapter.on_epoch_begin()
    got = [item[0] for item in adapter.get_numpy_iterator()]
    adapter.on_epoch_end()
    assert_same(first, got)
    assert threaded.epoch == 1


def test_epochs_reshuffle_and_validation_repeats(dataset):
    config = TinyConfig()
    train = DataGenerator(dataset, config, shuffle=True, seed=0)
    ids = lambda gen: [int(i) for b in batches(gen) for i in b[1][:, 0]]  # noqa: E731
    epoch0 = ids(train)
    assert sorted(epoch0) == list(range(dataset.num_images))  # one pass: every image once
    train.on_epoch_end()
    epoch1 = ids(train)
    assert sorted(epoch1) == sorted(epoch0) and epoch1 != epoch0
    val = DataGenerator(dataset, config, shuffle=False, augmentation=None, seed=0)
    before = batches(val)
    assert [int(i) for b in before for i in b[1][:, 0]] == list(range(dataset.num_images))
    val.on_epoch_end()
    assert_same(before, batches(val))
    train.set_epoch(0)
    assert ids(train) == epoch0


def test_steps_span_passes(dataset):
    gen = DataGenerator(dataset, TinyConfig(), steps=7, seed=2)
    assert len(gen) == 7
    seen = [int(i) for b in batches(gen) for i in b[1][:, 0]]
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:12]) == list(range(6))
    with pytest.raises(IndexError):
        gen[7]


def test_images_without_instances_are_skipped(root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    empty = copy / "LISC Database" / "Ground Truth Segmentation" / "Baso" / "areaforexpert1" / "1_expert.bmp"
    write_bmp(empty, np.zeros((568, 712), dtype=np.uint8))
    for verify in (True, False):  # known empty up front, or found empty while loading
        ds = LiscDataset()
        ds.load_lisc(copy, "all", verify=verify)
        ds.prepare()
        baso = [i["id"] for i in ds.image_info].index("Baso/1")
        gen = DataGenerator(ds, TinyConfig(), shuffle=False, seed=0)
        seen = [int(i) for b in batches(gen) for i in b[1][:, 0]]
        assert baso not in seen and len(seen) == 2 * len(gen)


def test_more_instances_than_max_are_subsampled(dataset):
    class OneInstance(TinyConfig):
        MAX_GT_INSTANCES = 1

    mixt = [i["id"] for i in dataset.image_info].index("mixt/1")
    assert len(dataset.image_info[mixt]["class_ids"]) >= 2
    gen = DataGenerator(dataset, OneInstance(), shuffle=False, batch_size=1, seed=0)
    _, meta, _, _, class_ids, boxes, masks = gen[mixt][0]
    assert int(meta[0, 0]) == mixt and class_ids.shape == (1, 1)
    assert class_ids[0, 0] in dataset.image_info[mixt]["class_ids"]
    assert masks.shape == (1, 16, 16, 1) and masks.any()


def test_random_rois_and_errors(dataset):
    gen = DataGenerator(dataset, TinyConfig(), random_rois=10, seed=0)
    x = gen[0][0]
    assert len(x) == 8 and x[7].shape == (2, 10, 4) and x[7].dtype == np.float32
    np.testing.assert_array_equal(x[7], np.round(x[7]))  # whole pixels, as Matterport's int32 ROIs

    class Empty(LiscDataset):
        pass

    empty = Empty()
    empty.prepare()
    with pytest.raises(DatasetError, match="no image with an instance"):
        DataGenerator(empty, TinyConfig())

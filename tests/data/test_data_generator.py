"""modellib.data_generator: Matterport's generator over DataGenerator, with random ROIs and head targets."""
import itertools

import numpy as np
import pytest
from helpers_data import SmallDataConfig

from mrcnn_tf import model as modellib
from mrcnn_tf.wbc import synth
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.roi_targets import build_detection_targets
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.lisc import LiscDataset
from mrcnn_tf.ops.boxes import apply_box_deltas, compute_overlaps


class TinyConfig(SmallDataConfig):
    MAX_GT_INSTANCES = 4
    TRAIN_ROIS_PER_IMAGE = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    synth.write_lisc(root, per_class=1, mixt=1, seed=5)
    ds = LiscDataset()
    ds.load_lisc(root, "all")
    ds.prepare()
    return ds


def test_matterport_inspect_data_batch(dataset):
    """The inspect_data cell: nine inputs ending with the ROIs, three head targets."""
    config = TinyConfig()
    g = modellib.data_generator(dataset, config, shuffle=True, random_rois=200, batch_size=2,
                                detection_targets=True, seed=4)
    [normalized_images, image_meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks, rpn_rois, rois], \
        [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask] = next(g)
    t, nc = config.TRAIN_ROIS_PER_IMAGE, config.NUM_CLASSES
    assert normalized_images.shape == (2, 128, 128, 3) and rpn_rois.shape == (2, 200, 4)
    assert rois.shape == (2, t, 4) and mrcnn_class_ids.shape == (2, t, 1) and mrcnn_class_ids.dtype == np.int32
    assert mrcnn_bbox.shape == (2, t, nc, 4) and mrcnn_mask.shape == (2, t, 28, 28, nc)
    # The first eight are DataGenerator's batch for the same seed.
    for got, want in zip([normalized_images, image_meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks,
                          rpn_rois], DataGenerator(dataset, config, random_rois=200, batch_size=2, seed=4).inputs(0)):
        np.testing.assert_array_equal(got, want)
    for b in range(2):
        ids = mrcnn_class_ids[b, :, 0]
        real = gt_class_ids[b] > 0
        positive = np.flatnonzero(ids)
        assert 1 <= len(positive) <= int(t * config.ROI_POSITIVE_RATIO) and np.abs(rois[b]).sum(1).all()
        assert all((rpn_rois[b] == r).all(1).any() for r in rois[b])  # chosen among the random ROIs
        for row in positive:
            c = ids[row]
            refined = apply_box_deltas(rois[b, row][None], mrcnn_bbox[b, row, c][None] * config.BBOX_STD_DEV)
            best = int(compute_overlaps(rois[b, row][None], gt_boxes[b][real]).argmax())
            np.testing.assert_allclose(refined[0], gt_boxes[b][real][best], atol=1.0)  # the graph frame: < 1 px
            assert gt_class_ids[b][real][best] == c and mrcnn_mask[b, row, :, :, c].any()
            assert not np.delete(mrcnn_bbox[b, row], c, axis=0).any()
        assert not mrcnn_bbox[b, ids == 0].any() and not mrcnn_mask[b, ids == 0].any()
        # Same targets as build_detection_targets gives for this image's ROIs and ground truth.
        again = build_detection_targets(rpn_rois[b], gt_class_ids[b][real], gt_boxes[b][real],
                                        gt_masks[b][:, :, real], config, rng=np.random.default_rng(0))
        np.testing.assert_array_equal(np.sort(again[1]), np.sort(ids))


class NucleusConfig(TinyConfig):
    NUCLEUS_MASKS = True


def test_nucleus_targets_follow_matterports(dataset):
    """With NUCLEUS_MASKS: DataGenerator's gt_nucleus_masks after rpn_rois, then rois; a fourth output holds each
    positive ROI's nucleus target (build_detection_targets'); everything else is the flag-off batch."""
    g = modellib.data_generator(dataset, NucleusConfig(), shuffle=True, random_rois=200, batch_size=2,
                                detection_targets=True, seed=4)
    inputs, outputs = next(g)
    plain_inputs, plain_outputs = next(modellib.data_generator(dataset, TinyConfig(), shuffle=True, random_rois=200,
                                                               batch_size=2, detection_targets=True, seed=4))
    assert len(inputs) == 10 and len(outputs) == 4 and len(plain_inputs) == 9 and len(plain_outputs) == 3
    for got, want in zip(inputs[:8] + inputs[9:] + outputs[:3], plain_inputs + plain_outputs):
        np.testing.assert_array_equal(got, want)
    gt_class_ids, gt_boxes, gt_masks, rpn_rois, gt_nuclei = (inputs[i] for i in (4, 5, 6, 7, 8))
    class_ids, nuclei = outputs[0][..., 0], outputs[3]
    assert gt_nuclei.shape == gt_masks.shape and nuclei.shape == (2, 24, 28, 28, 1) and nuclei.dtype == np.float32
    rng = np.random.default_rng([4, 0, 0, 2])  # the generator's stream of head-target draws for batch 0
    for b in range(2):
        real = gt_class_ids[b] != 0
        want = build_detection_targets(rpn_rois[b], gt_class_ids[b][real], gt_boxes[b][real],
                                       gt_masks[b][:, :, real], NucleusConfig(), rng=rng,
                                       gt_nucleus_masks=gt_nuclei[b][:, :, real])
        np.testing.assert_array_equal(nuclei[b], want[4])
        positive = np.flatnonzero(class_ids[b])
        assert nuclei[b, positive].any() and not np.delete(nuclei[b], positive, axis=0).any()
        assert np.all(nuclei[b, positive, :, :, 0] <= outputs[2][b, positive, :, :, class_ids[b, positive]])


def test_endless_repeatable_and_plain_modes(dataset):
    config = TinyConfig()
    first = list(itertools.islice(modellib.data_generator(dataset, config, random_rois=50, batch_size=2,
                                                          detection_targets=True, seed=9), 5))
    again = list(itertools.islice(modellib.data_generator(dataset, config, random_rois=50, batch_size=2,
                                                          detection_targets=True, seed=9), 5))
    assert len(first) == 5  # 6 images, 3 batches a pass: it carries on into the next pass
    for (x1, y1), (x2, y2) in zip(first, again):
        for u, v in zip(x1 + y1, x2 + y2):
            np.testing.assert_array_equal(u, v)
    inputs, outputs = next(modellib.data_generator(dataset, config, shuffle=False, random_rois=50))
    assert len(inputs) == 8 and outputs == [] and inputs[7].shape == (1, 50, 4)  # Matterport's batch_size=1
    with pytest.warns(UserWarning, match="random_rois"):
        g = modellib.data_generator(dataset, config, detection_targets=True)
    inputs, outputs = next(g)
    assert len(inputs) == 7 and outputs == []


def test_bad_dataset_fails_at_the_call(tmp_path):
    empty = LiscDataset()
    empty.prepare()
    with pytest.raises(DatasetError, match="no image"):
        modellib.data_generator(empty, TinyConfig())

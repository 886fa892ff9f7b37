"""Training targets: RPN targets against a slow numpy reference of Matterport's rules, load_image_gt, random ROIs."""
import types

import numpy as np
import pytest

from mrcnn_tf.config import Config
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.data.roi_targets import generate_random_rois
from mrcnn_tf.data.targets import build_rpn_targets, load_image_gt
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.ops.boxes import extract_bboxes
from mrcnn_tf.ops.image import parse_image_meta
from mrcnn_tf.ops.masks import expand_mask

STD = np.array([0.1, 0.1, 0.2, 0.2])


# ---------------------------------------------------------------------------------------- reference
def _iou(a, b):
    """IoU of two pixel boxes, written out by hand."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(h, 0) * max(w, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_rpn(anchors, class_ids, boxes):
    """Matterport's labels before sub-sampling, anchor by anchor: (labels, best GT index per anchor)."""
    crowd = [b for b, c in zip(boxes, class_ids) if c < 0]
    gts = [b for b, c in zip(boxes, class_ids) if c >= 0]
    labels = np.zeros(len(anchors), dtype=int)
    best_gt = np.zeros(len(anchors), dtype=int)
    ious = [[_iou(a, g) for g in gts] for a in anchors]
    for i, a in enumerate(anchors):
        touches_crowd = any(_iou(a, c) >= 0.001 for c in crowd)
        if gts:
            best_gt[i] = int(np.argmax(ious[i]))
            best = ious[i][best_gt[i]]
            if best < 0.3 and not touches_crowd:
                labels[i] = -1
        elif not touches_crowd:
            labels[i] = -1
    for j in range(len(gts)):
        column = [ious[i][j] for i in range(len(anchors))]
        top = max(column)
        for i in range(len(anchors)):
            if top > 0 and column[i] == top:
                labels[i] = 1
    for i in range(len(anchors)):
        if gts and ious[i][best_gt[i]] >= 0.7:
            labels[i] = 1
    return labels, best_gt, gts


def reference_delta(anchor, gt):
    ah, aw = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gh, gw = gt[2] - gt[0], gt[3] - gt[1]
    return np.array([(gt[0] + gh / 2 - anchor[0] - ah / 2) / ah, (gt[1] + gw / 2 - anchor[1] - aw / 2) / aw,
                     np.log(gh / ah), np.log(gw / aw)]) / STD


def random_case(rng, n_anchors=150, n_gt=4, crowd=False):
    centres = rng.uniform(0, 64, size=(n_anchors, 2))
    sizes = rng.choice([8.0, 16.0, 24.0], size=(n_anchors, 1)) * rng.choice([0.7, 1.0, 1.4], size=(n_anchors, 2))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    anchors = np.concatenate([anchors, anchors[:10]])  # exact duplicates make best-anchor ties
    y1x1 = rng.integers(0, 50, size=(n_gt, 2))
    hw = rng.integers(4, 20, size=(n_gt, 2))
    boxes = np.concatenate([y1x1, y1x1 + hw], axis=1).astype(float)
    class_ids = rng.integers(1, 4, size=n_gt)
    if crowd and n_gt:
        class_ids[0] = -1
    return anchors, class_ids, boxes


@pytest.mark.parametrize("case", range(12))
def test_rpn_targets_match_reference_without_sampling(case):
    rng = np.random.default_rng(case)
    anchors, class_ids, boxes = random_case(rng, n_gt=case % 5, crowd=case % 3 == 0)
    config = types.SimpleNamespace(RPN_TRAIN_ANCHORS_PER_IMAGE=2 * len(anchors), RPN_BBOX_STD_DEV=STD)
    match, bbox = build_rpn_targets((64, 64, 3), anchors, class_ids, boxes, config, rng=rng)
    labels, best_gt, gts = reference_rpn(anchors, class_ids, boxes)
    assert match.dtype == np.int32 and match.shape == (len(anchors),)
    assert bbox.dtype == np.float32 and bbox.shape == (2 * len(anchors), 4)
    np.testing.assert_array_equal(match, labels)
    positives = np.flatnonzero(labels == 1)
    expected = [reference_delta(anchors[i], gts[best_gt[i]]) for i in positives]
    np.testing.assert_allclose(bbox[:len(positives)], np.reshape(expected, (-1, 4)), rtol=1e-5, atol=1e-5)
    assert not bbox[len(positives):].any()


@pytest.mark.parametrize("case", range(6))
def test_rpn_sampling_caps(case):
    rng = np.random.default_rng(100 + case)
    anchors, class_ids, boxes = random_case(rng, n_anchors=300, n_gt=6)
    boxes[:3] = anchors[:3]  # guarantees several IoU-1 positives
    total = 8
    config = types.SimpleNamespace(RPN_TRAIN_ANCHORS_PER_IMAGE=total, RPN_BBOX_STD_DEV=STD)
    match, bbox = build_rpn_targets((64, 64, 3), anchors, class_ids, boxes, config, rng=rng)
    labels, best_gt, gts = reference_rpn(anchors, class_ids, boxes)
    pos, neg = np.flatnonzero(match == 1), np.flatnonzero(match == -1)
    assert set(pos) <= set(np.flatnonzero(labels == 1)) and set(neg) <= set(np.flatnonzero(labels == -1))
    assert len(pos) == min(np.sum(labels == 1), total // 2)
    assert len(neg) == min(np.sum(labels == -1), total - len(pos))
    expected = [reference_delta(anchors[i], gts[best_gt[i]]) for i in pos]
    np.testing.assert_allclose(bbox[:len(pos)], np.reshape(expected, (-1, 4)), rtol=1e-5, atol=1e-5)
    # Same generator state, same sample.
    again, _ = build_rpn_targets((64, 64, 3), anchors, class_ids, boxes, config, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(again, build_rpn_targets((64, 64, 3), anchors, class_ids, boxes, config,
                                                           rng=np.random.default_rng(7))[0])


def test_rpn_degenerate_cases():
    anchors = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [40, 40, 60, 60]], dtype=float)
    config = types.SimpleNamespace(RPN_TRAIN_ANCHORS_PER_IMAGE=16, RPN_BBOX_STD_DEV=STD)
    # No GT: every anchor negative, no deltas.
    match, bbox = build_rpn_targets((64, 64, 3), anchors, np.zeros([0]), np.zeros([0, 4]), config)
    assert match.tolist() == [-1, -1, -1] and not bbox.any()
    # A GT box that overlaps no anchor adds no positive (Matterport would mark every zero-IoU anchor).
    match, _ = build_rpn_targets((64, 64, 3), anchors, np.array([1]), np.array([[20, 20, 30, 30]]), config)
    assert match.tolist() == [-1, -1, -1]
    # Only a crowd box: anchors touching it are neutral, the others negative.
    match, _ = build_rpn_targets((64, 64, 3), anchors, np.array([-1]), np.array([[0, 0, 12, 12]]), config)
    assert match.tolist() == [0, 0, -1]
    # A GT box on the border equal to an anchor: that anchor is positive with zero deltas.
    match, bbox = build_rpn_targets((64, 64, 3), anchors, np.array([2]), np.array([[40, 40, 60, 60]]), config)
    assert match.tolist() == [-1, -1, 1] and np.allclose(bbox[0], 0)


# ---------------------------------------------------------------------------------------- load_image_gt
class ToyConfig(Config):
    NAME = "toy"
    NUM_CLASSES = 3
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128
    MINI_MASK_SHAPE = (24, 24)
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)


class ToyDataset(Dataset):
    """96x128 images whose red channel encodes instance 0's mask and green instance 1's."""

    def __init__(self, masks=None):
        super().__init__()
        self.add_class("toy", 1, "a")
        self.add_class("toy", 2, "b")
        self.add_class("other", 1, "c")
        mask = np.zeros((96, 128, 2), dtype=bool)
        mask[10:40, 20:60, 0] = True
        mask[50:90, 100:128, 1] = True  # touches the right border
        self.masks = mask if masks is None else masks
        self.add_image("toy", 0, "toy0")
        self.add_image("other", 1, "other1")
        self.prepare()

    def load_image(self, image_id):
        image = np.zeros((96, 128, 3), dtype=np.uint8)
        if self.masks.shape[:2] == image.shape[:2]:
            for c in range(min(2, self.masks.shape[-1])):
                image[..., c] = self.masks[..., c] * 255
        return image

    def load_mask(self, image_id):
        return self.masks, np.arange(1, self.masks.shape[-1] + 1, dtype=np.int32)


def test_load_image_gt_resizes_and_boxes_from_masks():
    config, dataset = ToyConfig(), ToyDataset()
    image, meta, class_ids, bbox, mask = load_image_gt(dataset, config, 0, rng=np.random.default_rng(0))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert mask.shape == (128, 128, 2) and mask.dtype == bool
    assert class_ids.tolist() == [1, 2] and class_ids.dtype == np.int32 and bbox.dtype == np.int32
    np.testing.assert_array_equal(bbox, extract_bboxes(mask))
    # Scale 1 (min side 96 >= 64), padded 16 px top and bottom.
    np.testing.assert_array_equal(bbox, [[26, 20, 56, 60], [66, 100, 106, 128]])
    for c in range(2):
        np.testing.assert_array_equal(image[..., c] > 127, mask[..., c])
    parsed = parse_image_meta(meta[None])
    assert parsed["original_image_shape"][0].tolist() == [96, 128, 3]
    assert parsed["window"][0].tolist() == [16, 0, 112, 128] and parsed["scale"][0] == 1
    assert parsed["active_class_ids"][0].tolist() == [1, 1, 1, 0]  # BG + toy's two classes
    assert parse_image_meta(load_image_gt(dataset, config, 1)[1][None])["active_class_ids"][0].tolist() == [1, 0, 0, 1]


def test_load_image_gt_drops_instances_that_vanish():
    import imgaug.augmenters as iaa

    config, dataset = ToyConfig(), ToyDataset()
    shift = iaa.Affine(translate_px={"x": 40}, order=0)  # pushes instance 1 off the right edge
    image, meta, class_ids, bbox, mask = load_image_gt(dataset, config, 0, augmentation=shift,
                                                       rng=np.random.default_rng(1))
    assert class_ids.tolist() == [1] and mask.shape == (128, 128, 1)
    np.testing.assert_array_equal(bbox, [[26, 60, 56, 100]])
    np.testing.assert_array_equal(image[..., 0] > 127, mask[..., 0])


def test_load_image_gt_mini_masks_and_flip():
    config, dataset = ToyConfig(), ToyDataset()
    _, _, _, bbox, full = load_image_gt(dataset, config, 0)
    _, _, _, bbox_mini, mini = load_image_gt(dataset, config, 0, use_mini_mask=True)
    assert mini.shape == (24, 24, 2) and mini.dtype == bool
    np.testing.assert_array_equal(bbox_mini, bbox)
    assert (expand_mask(bbox, mini, (128, 128)) == full).mean() > 0.99
    flips = [load_image_gt(dataset, config, 0, augment=True, rng=np.random.default_rng(s))[3][0].tolist()
             for s in range(8)]
    assert [26, 68, 56, 108] in flips and [26, 20, 56, 60] in flips  # flipped and not flipped


def test_load_image_gt_bad_masks():
    config = ToyConfig()
    with pytest.raises(DatasetError, match=r"masks are \(50, 50\) but the image is \(96, 128\)"):
        load_image_gt(ToyDataset(np.ones((50, 50, 2), dtype=bool)), config, 0)
    # Matterport's default load_mask shape [0, 0, 0]: an image without instances.
    _, _, class_ids, bbox, mask = load_image_gt(ToyDataset(np.zeros((0, 0, 0), dtype=bool)), config, 0)
    assert class_ids.shape == (0,) and bbox.shape == (0, 4) and mask.shape == (128, 128, 0)


# ---------------------------------------------------------------------------------------- random ROIs
def test_generate_random_rois():
    rng = np.random.default_rng(3)
    boxes = np.array([[10, 10, 30, 40], [60, 70, 100, 90]])
    rois = generate_random_rois((128, 128, 3), 50, np.array([1, 2]), boxes, rng=rng)
    assert rois.shape == (50, 4) and rois.dtype == np.int32
    assert (rois[:, 2] > rois[:, 0]).all() and (rois[:, 3] > rois[:, 1]).all()
    assert (rois >= 0).all() and (rois[:, 2] <= 128).all() and (rois[:, 3] <= 128).all()
    per_box = int(0.9 * 50 / 2)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        near = rois[i * per_box:(i + 1) * per_box]
        h, w = y2 - y1, x2 - x1
        assert (near[:, 0] >= max(y1 - h, 0)).all() and (near[:, 2] <= min(y2 + h, 128)).all()
        assert (near[:, 1] >= max(x1 - w, 0)).all() and (near[:, 3] <= min(x2 + w, 128)).all()
    again = generate_random_rois((128, 128, 3), 50, np.array([1, 2]), boxes, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(rois, again)
    assert generate_random_rois((64, 64), 5, np.zeros([0]), np.zeros([0, 4])).shape == (5, 4)

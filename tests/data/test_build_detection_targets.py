"""build_detection_targets (numpy twin of DetectionTargetLayer) against a slow reference and the layer."""
import math

import numpy as np
import pytest

from mrcnn_tf.config import Config
from mrcnn_tf.data.roi_targets import build_detection_targets
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.layers import DetectionTargetLayer
from mrcnn_tf.ops.boxes import norm_boxes
from mrcnn_tf.ops.masks import minimize_mask

SIZE = 64  # image side; the reference normalizes by it as NormBoxes does
STD = np.array([0.1, 0.1, 0.2, 0.2])


def make_config(rois=8, ratio=0.33, mini=True, classes=4, mask_shape=(8, 8)):
    attributes = dict(NAME="bdt", NUM_CLASSES=classes, TRAIN_ROIS_PER_IMAGE=rois, ROI_POSITIVE_RATIO=ratio,
                      USE_MINI_MASK=mini, MINI_MASK_SHAPE=(12, 10), MASK_SHAPE=list(mask_shape),
                      MASK_POOL_SIZE=mask_shape[0] // 2, IMAGE_MIN_DIM=SIZE, IMAGE_MAX_DIM=SIZE, BBOX_STD_DEV=STD)
    return type("BdtConfig", (Config,), attributes)()


# ---------------------------------------------------------------- slow reference (graph semantics)
def ref_norm(box):
    """NormBoxes, written out: y2/x2 exclusive -> inclusive, divided by (H - 1, W - 1)."""
    y1, x1, y2, x2 = (float(v) for v in box)
    return [y1 / (SIZE - 1), x1 / (SIZE - 1), (y2 - 1) / (SIZE - 1), (x2 - 1) / (SIZE - 1)]


def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_crop(image, box, out_h, out_w):
    """tf.image.crop_and_resize of one [H, W] image at a normalized box, point by point."""
    height, width = image.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        y = box[0] * (height - 1) + i * (box[2] - box[0]) * (height - 1) / (out_h - 1)
        for j in range(out_w):
            x = box[1] * (width - 1) + j * (box[3] - box[1]) * (width - 1) / (out_w - 1)
            if min(abs(y), abs(y - height + 1), abs(x), abs(x - width + 1)) < 1e-9:
                out[i, j] = 0.5  # on the edge: float rounding decides inside or out, so the tests skip it
                continue
            if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
                continue
            y0, x0, y1, x1 = math.floor(y), math.floor(x), math.ceil(y), math.ceil(x)
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * (x - x0)
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * (x - x0)
            out[i, j] = top + (bottom - top) * (y - y0)
    return out


def ref_roi_targets(roi, class_ids, boxes, masks, mini, mask_shape):
    """(kind, class id, deltas / std, unrounded mask) of one pixel ROI by the graph's rules."""
    n = ref_norm(roi)
    ious = [ref_iou(n, ref_norm(g)) for g, c in zip(boxes, class_ids) if c > 0]
    real = [i for i, c in enumerate(class_ids) if c > 0]
    crowd = max([ref_iou(n, ref_norm(g)) for g, c in zip(boxes, class_ids) if c < 0], default=0.0)
    if not ious or max(ious) < 0.5:
        return ("negative" if crowd < 0.001 else "neither"), 0, None, None
    j = real[int(np.argmax(ious))]
    g = ref_norm(boxes[j])
    h, w, gh, gw = n[2] - n[0], n[3] - n[1], g[2] - g[0], g[3] - g[1]
    deltas = np.array([(g[0] + gh / 2 - n[0] - h / 2) / h, (g[1] + gw / 2 - n[1] - w / 2) / w,
                       math.log(gh / h), math.log(gw / w)]) / STD
    crop = [(n[0] - g[0]) / gh, (n[1] - g[1]) / gw, (n[2] - g[0]) / gh, (n[3] - g[1]) / gw] if mini else n
    return "positive", int(class_ids[j]), deltas, ref_crop(masks[:, :, j].astype(float), crop, *mask_shape)


def assert_mask_matches(got, unrounded):
    """Rounded bilinear mask; values within 1e-6 of the 0.5 tie (or sampled on the edge) may go either way."""
    assert set(np.unique(got)) <= {0.0, 1.0}
    clear = np.abs(unrounded - 0.5) > 1e-6
    np.testing.assert_array_equal(got[clear], np.round(unrounded[clear]))


# ---------------------------------------------------------------- inputs
GT_BOXES = np.array([[6, 8, 30, 34], [34, 30, 58, 60], [40, 2, 62, 20]], np.int32)
GT_CLASS_IDS = np.array([2, 3, -1], np.int32)  # the third is a crowd
ROIS = np.array([[7, 9, 31, 33],     # positive, GT 0
                 [0, 40, 12, 62],    # negative
                 [33, 31, 57, 59],   # positive, GT 1
                 [44, 4, 60, 16],    # inside the crowd: neither
                 [20, 20, 40, 40],   # negative (low IoU with both)
                 [2, 2, 10, 10],     # negative
                 [50, 50, 63, 63],   # negative
                 [10, 40, 30, 60],   # negative
                 [25, 45, 35, 55]], np.int32)  # negative


def full_masks(rng, boxes):
    masks = np.zeros((SIZE, SIZE, len(boxes)), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = rng.random((y2 - y1, x2 - x1)) > 0.3
        masks[y1, x1:x2, i] = masks[y1:y2, x1, i] = True  # keep the box tight
        masks[y2 - 1, x1:x2, i] = masks[y1:y2, x2 - 1, i] = True
    return masks


def gt_for(rng, mini, boxes=GT_BOXES):
    masks = full_masks(rng, boxes)
    return minimize_mask(boxes, masks, (12, 10)) if mini else masks


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("mini", [True, False])
def test_deterministic_case_equals_reference(rng, mini):
    """2 positives (the cap for T=8, ratio 0.33) + 6 negatives = T: no random choice at all."""
    config = make_config(rois=8, mini=mini)
    masks = gt_for(rng, mini)
    rois, class_ids, bboxes, out_masks = build_detection_targets(ROIS, GT_CLASS_IDS, GT_BOXES, masks, config)
    assert rois.shape == (8, 4) and rois.dtype == np.int32
    assert class_ids.shape == (8,) and class_ids.dtype == np.int32
    assert bboxes.shape == (8, 4, 4) and bboxes.dtype == np.float32
    assert out_masks.shape == (8, 8, 8, 4) and out_masks.dtype == np.float32
    # Positives first, then negatives, each in ROI order; the crowd-touching ROI is left out.
    np.testing.assert_array_equal(rois, ROIS[[0, 2, 1, 4, 5, 6, 7, 8]])
    for row, roi in enumerate(rois):
        kind, class_id, deltas, mask = ref_roi_targets(roi, GT_CLASS_IDS, GT_BOXES, masks, mini, (8, 8))
        assert kind == ("positive" if row < 2 else "negative")
        assert class_ids[row] == class_id
        if kind == "positive":
            np.testing.assert_allclose(bboxes[row, class_id], deltas, atol=1e-4)
            assert_mask_matches(out_masks[row, :, :, class_id], mask)
            others = [c for c in range(4) if c != class_id]
            assert not bboxes[row, others].any() and not out_masks[row][..., others].any()
        else:
            assert not bboxes[row].any() and not out_masks[row].any()
    assert class_ids[:2].tolist() == [2, 3]


def test_sampling_caps_positives_and_repeats_negatives(rng):
    """More positives than the cap are sub-sampled; too few ROIs: the chosen negatives repeat."""
    config = make_config(rois=12, ratio=0.25)  # cap 3
    jitter = GT_BOXES[[0, 0, 0, 1, 1, 1]] + rng.integers(-1, 2, size=(6, 4))
    rois_in = np.concatenate([jitter, ROIS[[1, 4]]]).astype(np.int32)  # 6 positives, 2 negatives
    masks = gt_for(rng, True)
    rois, class_ids, bboxes, _ = build_detection_targets(rois_in, GT_CLASS_IDS, GT_BOXES, masks, config,
                                                         rng=np.random.default_rng(3))
    kinds = [ref_roi_targets(r, GT_CLASS_IDS, GT_BOXES, masks, True, (8, 8))[0] for r in rois]
    assert kinds == ["positive"] * 3 + ["negative"] * 9
    assert np.count_nonzero(class_ids) == 3 and np.abs(rois).sum(1).all()  # every row is a ROI
    chosen = [int(np.flatnonzero((rois_in == r).all(1))[0]) for r in rois[:3]]
    assert chosen == sorted(set(chosen))  # distinct positives in ROI order
    assert {tuple(r) for r in rois[3:]} == {tuple(r) for r in ROIS[[1, 4]]}
    again = build_detection_targets(rois_in, GT_CLASS_IDS, GT_BOXES, masks, config, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again[0], rois)  # a seeded Generator repeats the choice


@pytest.mark.parametrize("case", ["no_gt", "only_crowd", "all_positive"])
def test_degenerate_inputs(rng, case):
    config = make_config(rois=8)
    masks = gt_for(rng, True)
    class_ids_in, rois_in = GT_CLASS_IDS.copy(), ROIS
    if case == "no_gt":
        class_ids_in[:] = 0  # padding only: every ROI is a negative
    elif case == "only_crowd":
        class_ids_in[:2] = 0
    else:
        rois_in = ROIS[[0, 2]]  # positives only, nothing to repeat: zero rows pad
    rois, class_ids, bboxes, out_masks = build_detection_targets(rois_in, class_ids_in, GT_BOXES, masks, config)
    if case == "all_positive":
        assert class_ids.tolist() == [2, 3, 0, 0, 0, 0, 0, 0] and not rois[2:].any()
        return
    assert not class_ids.any() and not bboxes.any() and not out_masks.any()
    assert np.abs(rois).sum(1).all()
    expected = set(map(tuple, ROIS)) - ({(44, 4, 60, 16)} if case == "only_crowd" else set())
    assert {tuple(r) for r in rois} <= expected


def test_bad_input_is_a_clear_error(rng):
    config = make_config()
    with pytest.raises(MrcnnError, match="rpn_rois of shape"):
        build_detection_targets(np.zeros((0, 4)), GT_CLASS_IDS, GT_BOXES, gt_for(rng, True), config)
    with pytest.raises(MrcnnError, match="class ids"):
        build_detection_targets(ROIS, GT_CLASS_IDS[:2], GT_BOXES, gt_for(rng, True), config)


def random_case(rng, count_gt=3, jittered=12, random=28):
    """Integer pixel GT boxes and ROIs, redrawn until no IoU sits on a threshold (float32 vs float64)."""
    while True:
        y1x1 = rng.integers(2, 36, size=(count_gt, 2))
        hw = rng.integers(12, 26, size=(count_gt, 2))
        boxes = np.concatenate([y1x1, np.minimum(y1x1 + hw, SIZE)], 1).astype(np.int32)
        near = boxes[rng.integers(0, count_gt, jittered)] + rng.integers(-3, 4, size=(jittered, 4))
        corners = np.sort(rng.integers(0, SIZE, size=(random, 2, 2)), axis=1)
        anywhere = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]] + [0, 0, 2, 2]
        rois = np.clip(np.concatenate([near, anywhere]), 0, SIZE).astype(np.int32)
        rois = rois[(rois[:, 2] - rois[:, 0] > 1) & (rois[:, 3] - rois[:, 1] > 1)]
        ious = np.array([[ref_iou(ref_norm(r), ref_norm(g)) for g in boxes] for r in rois])
        if np.all(np.abs(ious - 0.5) > 1e-4) and np.all(np.abs(ious - 0.001) > 1e-5):
            return rois, boxes


@pytest.mark.parametrize("mini", [True, False])
def test_twin_of_detection_target_layer(rng, mini):
    """Where both take every candidate, the first rows equal DetectionTargetLayer's on normalized inputs."""
    rois_total, ratio = 200, 0.1  # cap 20 positives; the layer then takes up to 9x as many negatives
    config = make_config(rois=rois_total, ratio=ratio, mini=mini, mask_shape=(14, 14))
    layer = DetectionTargetLayer(rois_total, ratio, STD, (14, 14), mini)
    for _ in range(3):
        rois_in, boxes = random_case(rng)
        class_ids_in = np.array([1, 3, -1], np.int32)
        masks = gt_for(rng, mini, boxes)
        rois, class_ids, bboxes, out_masks = build_detection_targets(rois_in, class_ids_in, boxes, masks, config)
        want = [np.asarray(t)[0] for t in layer([norm_boxes(rois_in, (SIZE, SIZE))[None].astype(np.float32),
                                                 class_ids_in[None], norm_boxes(boxes, (SIZE, SIZE))[None]
                                                 .astype(np.float32), masks[None]])]
        positives = int(np.count_nonzero(want[1]))
        taken = int(np.count_nonzero(np.abs(want[0]).sum(1)))
        kinds = [ref_roi_targets(r, class_ids_in, boxes, masks, mini, (14, 14))[0] for r in rois_in]
        assert 1 <= positives == kinds.count("positive") <= 20 and taken == positives + kinds.count("negative")
        np.testing.assert_allclose(norm_boxes(rois[:taken], (SIZE, SIZE)), want[0][:taken], atol=1e-6)
        np.testing.assert_array_equal(class_ids, np.pad(want[1][:positives], (0, rois_total - positives)))
        for row in range(positives):
            c = class_ids[row]
            np.testing.assert_allclose(bboxes[row, c], want[2][row], atol=1e-3)
            unrounded = ref_roi_targets(rois[row], class_ids_in, boxes, masks, mini, (14, 14))[3]
            assert_mask_matches(out_masks[row, :, :, c], unrounded)
            clear = np.abs(unrounded - 0.5) > 1e-4
            np.testing.assert_array_equal(out_masks[row, :, :, c][clear], want[3][row][clear])
        # Short of ROIs, the numpy twin fills its remaining rows with repeated negatives.
        assert np.abs(rois[taken:]).sum(1).all()


# ---------------------------------------------------------------- nucleus targets (Config.NUCLEUS_MASKS)
def nucleus_config(**kwargs):
    config = make_config(**kwargs)
    config.NUCLEUS_MASKS = True
    return config


def cells_and_nuclei(rng, mini, boxes=GT_BOXES):
    """Cell masks and random nuclei inside them, both mini masks in the cell box's frame with `mini`."""
    cells = full_masks(rng, boxes)
    nuclei = cells & (rng.random(cells.shape) > 0.4)
    if mini:
        return minimize_mask(boxes, cells, (12, 10)), minimize_mask(boxes, nuclei, (12, 10))
    return cells, nuclei


@pytest.mark.parametrize("mini", [True, False])
def test_nucleus_targets_twin_of_the_layer(rng, mini):
    """Each positive's nucleus target is its GT cell's nucleus cropped with the cell's box: as the slow
    reference and DetectionTargetLayer's target_nucleus_mask; the other four targets are the flag-off ones."""
    rois_total = 200
    config, plain = nucleus_config(rois=rois_total, ratio=0.1, mini=mini, mask_shape=(14, 14)), \
        make_config(rois=rois_total, ratio=0.1, mini=mini, mask_shape=(14, 14))
    layer = DetectionTargetLayer(rois_total, 0.1, STD, (14, 14), mini, nucleus_masks=True)
    for _ in range(3):
        rois_in, boxes = random_case(rng)
        class_ids_in = np.array([1, 3, -1], np.int32)
        masks, nuclei = cells_and_nuclei(rng, mini, boxes)
        *got, got_nuclei = build_detection_targets(rois_in, class_ids_in, boxes, masks, config,
                                                   rng=np.random.default_rng(5), gt_nucleus_masks=nuclei)
        for a, b in zip(got, build_detection_targets(rois_in, class_ids_in, boxes, masks, plain,
                                                     rng=np.random.default_rng(5))):
            np.testing.assert_array_equal(a, b)
        rois, class_ids, _, out_masks = got
        assert got_nuclei.shape == (rois_total, 14, 14, 1) and got_nuclei.dtype == np.float32
        want = [np.asarray(t)[0] for t in layer([norm_boxes(rois_in, (SIZE, SIZE))[None].astype(np.float32),
                                                 class_ids_in[None], norm_boxes(boxes, (SIZE, SIZE))[None]
                                                 .astype(np.float32), masks[None], nuclei[None]])]
        positives = int(np.count_nonzero(class_ids))
        assert positives == int(np.count_nonzero(want[1])) >= 1
        for row in range(positives):
            unrounded = ref_roi_targets(rois[row], class_ids_in, boxes, nuclei, mini, (14, 14))[3]
            assert_mask_matches(got_nuclei[row, :, :, 0], unrounded)
            clear = np.abs(unrounded - 0.5) > 1e-4
            np.testing.assert_array_equal(got_nuclei[row, :, :, 0][clear], want[4][row][clear])
            assert np.all(got_nuclei[row, :, :, 0] <= out_masks[row, :, :, class_ids[row]])  # inside its cell
        assert got_nuclei[:positives].any() and not got_nuclei[positives:].any()  # negatives: zero


@pytest.mark.parametrize("mini", [True, False])
def test_nucleus_on_the_roi_border(mini):
    """A nucleus filling the left of its cell up to the box's edges: where it lies, its target equals the cell's
    target, border rows and columns included, for a ROI on the box and one whose edge cuts the nucleus."""
    box = np.array([[10, 10, 30, 34]], np.int32)
    cells = np.zeros((SIZE, SIZE, 1), bool)
    cells[10:30, 10:34] = True
    nuclei = np.zeros_like(cells)
    nuclei[10:30, 10:22] = True  # touches the box's top, bottom and left edges
    if mini:
        cells, nuclei = minimize_mask(box, cells, (12, 10)), minimize_mask(box, nuclei, (12, 10))
    rois_in = np.array([[10, 10, 30, 34], [10, 14, 30, 38]], np.int32)  # on the box; cutting the nucleus
    rois, class_ids, _, out_masks, out_nuclei = build_detection_targets(
        rois_in, np.array([2]), box, cells, nucleus_config(rois=4, ratio=0.5, mini=mini), gt_nucleus_masks=nuclei)
    assert class_ids.tolist() == [2, 2, 0, 0] and not out_nuclei[2:].any()
    layer = DetectionTargetLayer(4, 0.5, STD, (8, 8), mini, nucleus_masks=True)
    want = layer([norm_boxes(rois_in, (SIZE, SIZE))[None].astype(np.float32), np.array([[2]], np.int32),
                  norm_boxes(box, (SIZE, SIZE))[None].astype(np.float32), cells[None], nuclei[None]])[4][0]
    for row, left in ((0, 4), (1, 3)):  # left: columns of the 8-wide target sampled inside the nucleus
        nucleus, cell = out_nuclei[row, :, :, 0], out_masks[row, :, :, 2]
        np.testing.assert_array_equal(nucleus[:, :left], cell[:, :left])
        assert nucleus[:, :left].all() and not nucleus[:, left:].any()
        unrounded = ref_roi_targets(rois[row], [2], box, nuclei, mini, (8, 8))[3]
        assert_mask_matches(nucleus, unrounded)
        clear = np.abs(unrounded - 0.5) > 1e-4  # the mini mask's own edges are float rounding's to decide
        np.testing.assert_array_equal(nucleus[clear], np.asarray(want[row])[clear])


@pytest.mark.parametrize("case", ["no_positive", "no_gt"])
def test_nucleus_targets_without_positives(rng, case):
    """No positive ROI (ROIs away from the cells, or no GT at all): the nucleus targets are all zero."""
    config = nucleus_config(rois=8)
    masks, nuclei = cells_and_nuclei(rng, True)
    class_ids_in, boxes = GT_CLASS_IDS, GT_BOXES
    if case == "no_gt":
        class_ids_in, boxes, masks, nuclei = class_ids_in[:0], boxes[:0], masks[:, :, :0], nuclei[:, :, :0]
    rois, class_ids, bboxes, out_masks, out_nuclei = build_detection_targets(
        ROIS[[1, 5, 6]], class_ids_in, boxes, masks, config, gt_nucleus_masks=nuclei)
    assert out_nuclei.shape == (8, 8, 8, 1) and not out_nuclei.any()
    assert not class_ids.any() and not out_masks.any() and np.abs(rois).sum(1).all()


def test_nucleus_flag_and_input_must_agree(rng):
    masks, nuclei = cells_and_nuclei(rng, True)
    assert len(build_detection_targets(ROIS, GT_CLASS_IDS, GT_BOXES, masks, make_config())) == 4  # Matterport's
    with pytest.raises(MrcnnError, match="NUCLEUS_MASKS is on: pass gt_nucleus_masks"):
        build_detection_targets(ROIS, GT_CLASS_IDS, GT_BOXES, masks, nucleus_config())
    with pytest.raises(MrcnnError, match="NUCLEUS_MASKS is off"):
        build_detection_targets(ROIS, GT_CLASS_IDS, GT_BOXES, masks, make_config(), gt_nucleus_masks=nuclei)
    with pytest.raises(MrcnnError, match=r"gt_nucleus_masks of shape \(12, 10, 2\)"):
        build_detection_targets(ROIS, GT_CLASS_IDS, GT_BOXES, masks, nucleus_config(),
                                gt_nucleus_masks=nuclei[:, :, :2])

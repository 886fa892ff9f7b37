"""DetectionTargetLayer against a slow numpy reference of Matterport's detection_targets_graph."""
import math

import keras
import numpy as np
import pytest

from mrcnn_tf.layers import DetectionTargetLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])
MASK_SHAPE = (14, 14)


# ---------------------------------------------------------------- slow numpy reference
def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_crop_and_resize(image, box, crop_h, crop_w):
    """tf.image.crop_and_resize (bilinear, extrapolation 0) of one [H, W] image, float32 maths."""
    f32 = np.float32
    height, width = image.shape
    y1, x1, y2, x2 = (f32(v) for v in box)
    out = np.zeros((crop_h, crop_w), np.float32)
    for i in range(crop_h):
        in_y = y1 * f32(height - 1) + f32(i) * ((y2 - y1) * f32(height - 1) / f32(crop_h - 1))
        if in_y < 0 or in_y > height - 1:
            continue
        top, bottom = int(math.floor(in_y)), int(math.ceil(in_y))
        for j in range(crop_w):
            in_x = x1 * f32(width - 1) + f32(j) * ((x2 - x1) * f32(width - 1) / f32(crop_w - 1))
            if in_x < 0 or in_x > width - 1:
                continue
            left, right = int(math.floor(in_x)), int(math.ceil(in_x))
            t = image[top, left] + (image[top, right] - image[top, left]) * (in_x - f32(left))
            b = image[bottom, left] + (image[bottom, right] - image[bottom, left]) * (in_x - f32(left))
            out[i, j] = t + (b - t) * (in_y - f32(top))
    return out


def ref_split(proposals, gt_class_ids, gt_boxes, gt_masks):
    """Trimmed proposals, positive / negative candidate indices, and the non-crowd GT."""
    proposals = np.array([p for p in proposals if np.abs(p).sum() > 0]).reshape(-1, 4)
    real = [i for i in range(len(gt_boxes)) if np.abs(gt_boxes[i]).sum() > 0]
    crowd = [gt_boxes[i] for i in real if gt_class_ids[i] < 0]
    kept = [i for i in real if gt_class_ids[i] > 0]
    gt = (gt_class_ids[kept], gt_boxes[kept], gt_masks[:, :, kept])
    positive, negative = [], []
    for i, p in enumerate(proposals):
        iou_max = max([ref_iou(p, g) for g in gt[1]], default=-np.inf)
        crowd_max = max([ref_iou(p, c) for c in crowd], default=-np.inf)
        if iou_max >= 0.5:
            positive.append(i)
        elif crowd_max < 0.001:
            negative.append(i)
    return proposals, positive, negative, gt


def ref_counts(positive_candidates, rois_total, ratio):
    """Matterport's positive cap and float32 negative count (capped at T)."""
    positives = min(positive_candidates, int(rois_total * ratio))
    negatives = int(np.float32(np.float32(1.0 / ratio) * np.float32(positives))) - positives
    return positives, min(negatives, rois_total - positives)


def ref_positive_targets(rois, gt, mini):
    """Class, box deltas / std and un-rounded mask of each positive ROI (GT of highest IoU)."""
    class_ids, boxes, masks = gt
    out_ids, out_deltas, out_masks = [], [], []
    for roi in rois:
        j = int(np.argmax([ref_iou(roi, g) for g in boxes]))
        g = boxes[j]
        h, w, gh, gw = roi[2] - roi[0], roi[3] - roi[1], g[2] - g[0], g[3] - g[1]
        delta = [(g[0] + gh / 2 - roi[0] - h / 2) / h, (g[1] + gw / 2 - roi[1] - w / 2) / w,
                 math.log(gh / h), math.log(gw / w)]
        out_ids.append(class_ids[j])
        out_deltas.append(np.array(delta) / STD)
        # Mini masks cover the GT box only: express the ROI in the GT box's frame.
        crop = [(roi[0] - g[0]) / gh, (roi[1] - g[1]) / gw, (roi[2] - g[0]) / gh, (roi[3] - g[1]) / gw] if mini \
            else roi
        out_masks.append(ref_crop_and_resize(masks[:, :, j].astype(np.float32), crop, *MASK_SHAPE))
    return np.array(out_ids), np.array(out_deltas).reshape(-1, 4), np.array(out_masks).reshape(-1, *MASK_SHAPE)


def ref_detection_targets(proposals, gt_class_ids, gt_boxes, gt_masks, rois_total, ratio, mini):
    """The layer's output when no sampling is needed (first candidates, proposal order)."""
    props, positive, negative, gt = ref_split(proposals, gt_class_ids, gt_boxes, gt_masks)
    n_pos, n_neg = ref_counts(len(positive), rois_total, ratio)
    assert len(positive) <= n_pos and len(negative) <= n_neg, "reference case needs sampling"
    rois = np.zeros((rois_total, 4))
    rois[:len(positive) + len(negative)] = props[positive + negative].reshape(-1, 4)
    ids, deltas, masks = ref_positive_targets(props[positive], gt, mini)
    out_ids, out_deltas = np.zeros(rois_total, np.int32), np.zeros((rois_total, 4))
    out_masks = np.zeros((rois_total, *MASK_SHAPE))
    out_ids[:len(ids)], out_deltas[:len(ids)], out_masks[:len(ids)] = ids, deltas, masks
    return rois, out_ids, out_deltas, out_masks


def assert_masks_match(got, unrounded):
    """Rounded bilinear masks; values within 1e-4 of the 0.5 tie may round either way."""
    assert set(np.unique(got)) <= {0.0, 1.0}
    clear = np.abs(unrounded - 0.5) > 1e-4
    np.testing.assert_array_equal(got[clear], np.round(unrounded[clear]))


# ---------------------------------------------------------------- inputs
GT_BOXES = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8], [0.6, 0.05, 0.95, 0.3],
                     [0, 0, 0, 0], [0, 0, -1 / 63, -1 / 63]], np.float32)  # last two: padding (class 0)
GT_CLASS_IDS = np.array([2, 1, -1, 0, 0], np.int32)  # third is a crowd
PROPOSALS = np.array([[0.12, 0.11, 0.41, 0.38],   # positive (GT 0)
                      [0, 0, 0, 0],               # padding
                      [0.0, 0.6, 0.2, 0.95],      # negative
                      [0.52, 0.48, 0.88, 0.83],   # positive (GT 1)
                      [0.65, 0.1, 0.9, 0.25],     # touches the crowd: neither
                      [0.3, 0.3, 0.6, 0.6],       # negative
                      [0.1, 0.1, 0.25, 0.25],     # negative (IoU 0.25)
                      [0, 0, 0, 0]], np.float32)


def gt_masks(rng, mini, count=5):
    shape = (12, 10) if mini else (64, 64)
    return rng.random((*shape, count)) > 0.5


def random_image(rng, mini, proposals=60, rois_total=16):
    centers = rng.uniform(0.2, 0.8, size=(3, 2))
    sizes = rng.uniform(0.15, 0.35, size=(3, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    gt_boxes = np.concatenate([boxes, np.zeros((2, 4))]).astype(np.float32)
    class_ids = np.array([1, 3, 2, 0, 0], np.int32)
    jitter = boxes[rng.integers(0, 3, proposals // 2)]
    jitter = jitter + rng.normal(scale=0.03, size=jitter.shape)
    corners = np.sort(rng.uniform(0, 1, size=(proposals - proposals // 2, 2, 2)), axis=1)
    random = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]
    props = np.concatenate([jitter, random, np.zeros((4, 4))]).astype(np.float32)
    return props[rng.permutation(len(props))], class_ids, gt_boxes, gt_masks(rng, mini)


def layer(rois_total=12, ratio=0.33, mini=True, **kwargs):
    return DetectionTargetLayer(rois_total, ratio, STD, MASK_SHAPE, mini, **kwargs)


def run(target_layer, *images):
    batch = [np.stack(x) for x in zip(*images)]
    return [np.asarray(t) for t in target_layer(batch)]


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("mini", [True, False])
def test_deterministic_case_equals_reference(rng, mini):
    masks = gt_masks(rng, mini)
    rois, ids, deltas, got_masks = run(layer(mini=mini), (PROPOSALS, GT_CLASS_IDS, GT_BOXES, masks))
    want = ref_detection_targets(PROPOSALS, GT_CLASS_IDS, GT_BOXES, masks, 12, 0.33, mini)
    np.testing.assert_allclose(rois[0], want[0], atol=1e-6)
    np.testing.assert_allclose(rois[0, :5], PROPOSALS[[0, 3, 2, 5, 6]], atol=0)
    np.testing.assert_array_equal(ids[0], want[1])
    assert ids.dtype == np.int32 and ids[0, :2].tolist() == [2, 1]
    np.testing.assert_allclose(deltas[0], want[2], atol=1e-4)
    assert_masks_match(got_masks[0], want[3])
    assert got_masks.shape == (1, 12, *MASK_SHAPE)


@pytest.mark.parametrize("mini", [True, False])
def test_sampling_invariants_and_targets(rng, mini):
    rois_total, ratio = 16, 0.25
    images = [random_image(rng, mini) for _ in range(3)]
    outputs = run(layer(rois_total, ratio, mini), *images)
    for b, (proposals, class_ids, gt_boxes, masks) in enumerate(images):
        rois, ids, deltas, got_masks = (o[b] for o in outputs)
        props, positive, negative, gt = ref_split(proposals, class_ids, gt_boxes, masks)
        n_pos, n_neg = ref_counts(len(positive), rois_total, ratio)
        n_neg = min(n_neg, len(negative))
        assert len(positive) > n_pos and n_pos == 4, "the case must exercise the positive cap"
        assert np.count_nonzero(ids) == n_pos
        assert np.count_nonzero(np.abs(rois).sum(1)) == n_pos + n_neg
        # Chosen rows are distinct candidates, kept in proposal order.
        index = [int(np.flatnonzero((props == r).all(1))[0]) for r in rois[:n_pos + n_neg]]
        assert set(index[:n_pos]) <= set(positive) and set(index[n_pos:]) <= set(negative)
        assert index[:n_pos] == sorted(set(index[:n_pos])) and index[n_pos:] == sorted(set(index[n_pos:]))
        # Every positive has IoU >= 0.5 with the GT box its targets point at.
        matched = np.zeros((n_pos, 4))
        for k, (roi, delta) in enumerate(zip(rois[:n_pos], deltas[:n_pos])):
            h, w = roi[2] - roi[0], roi[3] - roi[1]
            dy, dx, dh, dw = delta * STD
            cy, cx, gh, gw = roi[0] + h / 2 + dy * h, roi[1] + w / 2 + dx * w, h * np.exp(dh), w * np.exp(dw)
            matched[k] = (cy - gh / 2, cx - gw / 2, cy + gh / 2, cx + gw / 2)
            j = int(np.argmin(np.abs(gt[1] - matched[k]).sum(1)))
            np.testing.assert_allclose(matched[k], gt[1][j], atol=1e-4)
            assert ref_iou(roi, gt[1][j]) >= 0.5 and ids[k] == gt[0][j]
        want_ids, want_deltas, want_masks = ref_positive_targets(rois[:n_pos], gt, mini)
        np.testing.assert_array_equal(ids[:n_pos], want_ids)
        np.testing.assert_allclose(deltas[:n_pos], want_deltas, atol=1e-4)
        assert_masks_match(got_masks[:n_pos], want_masks)
        for tensor in (rois[n_pos + n_neg:], ids[n_pos:], deltas[n_pos:], got_masks[n_pos:]):
            assert not tensor.any()


def test_seed_makes_sampling_repeatable(rng):
    images = [random_image(rng, True) for _ in range(2)]
    results = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        results.append(run(layer(16, 0.25, seed=3), *images))
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("case", ["no_gt", "only_crowd", "all_padding"])
def test_degenerate_inputs_give_zeros(rng, case):
    class_ids, boxes, proposals = GT_CLASS_IDS.copy(), GT_BOXES.copy(), PROPOSALS.copy()
    if case == "no_gt":
        class_ids[:], boxes[:3] = 0, 0
    elif case == "only_crowd":
        class_ids[:2], boxes[:2] = 0, 0
    else:
        proposals[:] = 0
    outputs = run(layer(), (proposals, class_ids, boxes, gt_masks(rng, True)),
                  (PROPOSALS, GT_CLASS_IDS, GT_BOXES, gt_masks(rng, True)))
    for tensor in outputs:
        assert not tensor[0].any()
    assert np.count_nonzero(outputs[1][1]) == 2  # the normal image beside it is unaffected


def test_config_round_trip(rng):
    target_layer = DetectionTargetLayer(20, 0.4, [0.1, 0.1, 0.2, 0.2], [28, 28], False, seed=5,
                                        name="proposal_targets")
    config = target_layer.get_config()
    clone = target_layer.__class__.from_config(config)
    assert clone.get_config() == config and clone.name == "proposal_targets"
    assert (clone.mask_shape, clone.use_mini_mask, clone.seed) == ((28, 28), False, 5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(target_layer))
    assert isinstance(restored, DetectionTargetLayer) and restored.train_rois_per_image == 20
    with pytest.raises(ValueError, match="four numbers"):
        DetectionTargetLayer(20, 0.4, [0.1, 0.2], [28, 28], True)


def test_in_functional_model(rng):
    proposals = keras.Input((8, 4))
    class_ids = keras.Input((5,), dtype="int32")
    boxes = keras.Input((5, 4))
    masks = keras.Input((12, 10, 5), dtype="bool")
    outputs = layer()([proposals, class_ids, boxes, masks])
    assert [tuple(o.shape) for o in outputs] == [(None, 12, 4), (None, 12), (None, 12, 4), (None, 12, *MASK_SHAPE)]
    model = keras.Model([proposals, class_ids, boxes, masks], outputs)
    mask_values = np.stack([gt_masks(rng, True), gt_masks(rng, True)])
    got = model.predict([np.stack([PROPOSALS] * 2), np.stack([GT_CLASS_IDS] * 2), np.stack([GT_BOXES] * 2),
                         mask_values], verbose=0)
    for b in range(2):
        want = ref_detection_targets(PROPOSALS, GT_CLASS_IDS, GT_BOXES, mask_values[b], 12, 0.33, True)
        np.testing.assert_allclose(got[0][b], want[0], atol=1e-6)
        np.testing.assert_array_equal(got[1][b], want[1])
        np.testing.assert_allclose(got[2][b], want[2], atol=1e-4)
        assert_masks_match(got[3][b], want[3])


# ---------------------------------------------------------------- nucleus targets (Config.NUCLEUS_MASKS)
def solid_cells(mini):
    """Cells that fill their GT box and nuclei that fill the box's left half, so every positive ROI's
    nucleus touches the ROI's border (the proposals overlap their GT boxes' left edges)."""
    if mini:
        masks = np.ones((12, 10, 5), bool)
        nuclei = np.zeros_like(masks)
        nuclei[:, :5] = True
        return masks, nuclei
    masks = np.zeros((64, 64, 5), bool)
    nuclei = np.zeros_like(masks)
    for i, (y1, x1, y2, x2) in enumerate(np.round(GT_BOXES[:3] * 63).astype(int)):
        masks[y1:y2 + 1, x1:x2 + 1, i] = True
        nuclei[y1:y2 + 1, x1:(x1 + x2) // 2 + 1, i] = True
    return masks, nuclei


@pytest.mark.parametrize("mini", [True, False])
@pytest.mark.parametrize("case", ["cells", "one_cell", "random", "no_gt"])
def test_nucleus_targets_equal_reference(rng, mini, case):
    proposals, class_ids, boxes = PROPOSALS.copy(), GT_CLASS_IDS.copy(), GT_BOXES.copy()
    masks, nuclei = solid_cells(mini)
    if case == "random":
        masks = gt_masks(rng, mini)
        nuclei = masks & gt_masks(rng, mini)
    elif case == "one_cell":
        class_ids[1:], boxes[1:] = 0, 0
        proposals[[3, 4, 6]] = 0  # one positive (0) and two negatives (2, 5): no sampling
    elif case == "no_gt":
        class_ids[:], boxes[:3] = 0, 0
    image = (proposals, class_ids, boxes, masks, nuclei)
    outputs = run(layer(mini=mini, nucleus_masks=True), image)
    assert len(outputs) == 5 and outputs[4].shape == (1, 12, *MASK_SHAPE)
    # The cell targets are those of the layer without nuclei.
    for got, want in zip(outputs[:4], run(layer(mini=mini), image[:4])):
        np.testing.assert_array_equal(got, want)
    ids, got_cells, got_nuclei = outputs[1][0], outputs[3][0], outputs[4][0]
    if case == "no_gt":
        assert not ids.any() and not got_nuclei.any()
        return
    want = ref_detection_targets(proposals, class_ids, boxes, nuclei, 12, 0.33, mini)
    np.testing.assert_array_equal(ids, want[1])
    assert_masks_match(got_nuclei, want[3])
    positives = np.count_nonzero(ids)
    assert positives == {"cells": 2, "random": 2, "one_cell": 1}[case]
    assert not got_nuclei[positives:].any()  # negatives and padding: zero targets
    assert np.all(got_nuclei[:positives] <= got_cells[:positives])
    if case != "random":
        # ROI 0 starts inside its GT box's left edge: its nucleus touches the ROI's left border, and the
        # right part of the ROI is cytoplasm.
        assert got_nuclei[0, :, 0].any() and not got_nuclei[0, :, -1].any() and got_cells[0, :, -1].any()


def test_nucleus_targets_in_functional_model_and_config(rng):
    target_layer = layer(nucleus_masks=True)
    config = target_layer.get_config()
    assert config["nucleus_masks"] is True
    assert DetectionTargetLayer.from_config(config).nucleus_masks
    assert layer().get_config()["nucleus_masks"] is False
    inputs = [keras.Input((8, 4)), keras.Input((5,), dtype="int32"), keras.Input((5, 4)),
              keras.Input((12, 10, 5), dtype="bool"), keras.Input((12, 10, 5), dtype="bool")]
    outputs = target_layer(inputs)
    assert [tuple(o.shape) for o in outputs] == [(None, 12, 4), (None, 12), (None, 12, 4), (None, 12, *MASK_SHAPE),
                                                 (None, 12, *MASK_SHAPE)]
    masks = gt_masks(rng, True)
    nuclei = masks & gt_masks(rng, True)
    got = keras.Model(inputs, outputs).predict([PROPOSALS[None], GT_CLASS_IDS[None], GT_BOXES[None], masks[None],
                                                nuclei[None]], verbose=0)
    want = ref_detection_targets(PROPOSALS, GT_CLASS_IDS, GT_BOXES, nuclei, 12, 0.33, True)
    assert_masks_match(got[4][0], want[3])


@pytest.mark.parametrize("mini", [True, False])
def test_nucleus_targets_of_sampled_rois(rng, mini):
    """With sampling (more positives than slots), each chosen positive ROI's nucleus target is the crop of its
    GT cell's nucleus; negatives and padding are zero."""
    images = []
    for _ in range(3):
        proposals, class_ids, gt_boxes, masks = random_image(rng, mini)
        images.append((proposals, class_ids, gt_boxes, masks, masks & gt_masks(rng, mini)))
    outputs = run(layer(16, 0.25, mini, nucleus_masks=True), *images)
    for b, (proposals, class_ids, gt_boxes, masks, nuclei) in enumerate(images):
        rois, ids, _, got_masks, got_nuclei = (o[b] for o in outputs)
        n_pos = int(np.count_nonzero(ids))
        assert n_pos == 4  # the positive cap: sampled
        _, _, _, gt = ref_split(proposals, class_ids, gt_boxes, nuclei)
        want_ids, _, want_nuclei = ref_positive_targets(rois[:n_pos], gt, mini)
        np.testing.assert_array_equal(ids[:n_pos], want_ids)
        assert_masks_match(got_nuclei[:n_pos], want_nuclei)
        assert np.all(got_nuclei <= got_masks) and not got_nuclei[n_pos:].any()

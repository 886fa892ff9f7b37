"""mrcnn_tf.ops.boxes against hand-computed values and slow plain-numpy references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_tf.ops import boxes as B


def random_boxes(rng, n, size=100.0, min_side=1.0):
    y1 = rng.uniform(0, size, n)
    x1 = rng.uniform(0, size, n)
    h = rng.uniform(min_side, size / 2, n)
    w = rng.uniform(min_side, size / 2, n)
    return np.stack([y1, x1, y1 + h, x1 + w], axis=1)


def ref_iou(a, b):
    """One pair, written out longhand."""
    inter_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------- extract_bboxes
def test_extract_bboxes_hand_case_and_empty_mask():
    mask = np.zeros((10, 12, 3), dtype=bool)
    mask[2:5, 3:9, 0] = True
    mask[7, 11, 1] = True  # single pixel on the border
    boxes = B.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 9], [7, 11, 8, 12], [0, 0, 0, 0]])


def test_extract_bboxes_random_matches_reference(rng):
    mask = rng.random((20, 30, 6)) > 0.97
    mask[:, :, 5] = False
    expected = []
    for i in range(mask.shape[-1]):
        ys, xs = np.nonzero(mask[:, :, i])
        expected.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1] if ys.size else [0, 0, 0, 0])
    np.testing.assert_array_equal(B.extract_bboxes(mask), expected)


def test_extract_bboxes_no_instances():
    assert B.extract_bboxes(np.zeros((5, 5, 0), bool)).shape == (0, 4)


# ---------------------------------------------------------------- IoU
@pytest.mark.parametrize("other, expected", [
    ((0, 0, 10, 10), 1.0),            # identical
    ((5, 5, 15, 15), 25 / 175),       # quarter overlap
    ((2, 2, 4, 4), 4 / 100),          # contained
    ((10, 0, 20, 10), 0.0),           # touching edge: no area in common
    ((20, 20, 30, 30), 0.0),          # disjoint
    ((0, 5, 10, 20), 50 / 200),       # side overlap: 50 common, 100 + 150 - 50 union
])
def test_compute_iou_hand_cases(other, expected):
    box = np.array([0, 0, 10, 10], float)
    others = np.array([other], float)
    area = B._areas(others)
    np.testing.assert_allclose(B.compute_iou(box, others, 100.0, area), [expected])


def test_compute_iou_degenerate_boxes_give_zero_not_nan():
    zero = np.zeros(4)
    iou = B.compute_iou(zero, np.zeros((2, 4)), 0.0, np.zeros(2))
    np.testing.assert_array_equal(iou, [0.0, 0.0])


def test_compute_overlaps_matches_reference(rng):
    b1, b2 = random_boxes(rng, 7), random_boxes(rng, 5)
    expected = np.array([[ref_iou(a, b) for b in b2] for a in b1])
    got = B.compute_overlaps(b1, b2)
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.any(got > 0)  # the case is not trivially all-zero


@pytest.mark.parametrize("n1, n2", [(0, 3), (3, 0), (0, 0)])
def test_compute_overlaps_empty(n1, n2, rng):
    got = B.compute_overlaps(random_boxes(rng, n1), random_boxes(rng, n2))
    assert got.shape == (n1, n2)


def test_compute_overlaps_masks_hand_case():
    m1 = np.zeros((4, 4, 2), np.float32)
    m1[:2, :2, 0] = 1.0    # 4 px
    m1[:, :, 1] = 0.4      # below the 0.5 threshold: empty
    m2 = np.zeros((4, 4, 2), bool)
    m2[:2, :, 0] = True    # 8 px, 4 in common with m1[...,0]
    m2[2:, 2:, 1] = True
    got = B.compute_overlaps_masks(m1, m2)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[4 / 8, 0.0], [0.0, 0.0]])


def test_compute_overlaps_masks_random_matches_reference(rng):
    m1 = rng.random((16, 16, 4))
    m2 = rng.random((16, 16, 3)) > 0.5
    expected = np.zeros((4, 3))
    for i in range(4):
        for j in range(3):
            a, b = m1[:, :, i] > 0.5, m2[:, :, j]
            expected[i, j] = np.sum(a & b) / np.sum(a | b)
    np.testing.assert_allclose(B.compute_overlaps_masks(m1, m2), expected, rtol=1e-6)


@pytest.mark.parametrize("n1, n2", [(0, 2), (2, 0), (0, 0)])
def test_compute_overlaps_masks_empty(n1, n2):
    got = B.compute_overlaps_masks(np.zeros((8, 8, n1), bool), np.ones((8, 8, n2), bool))
    assert got.shape == (n1, n2)


def test_compute_overlaps_masks_both_empty_masks_is_zero():
    got = B.compute_overlaps_masks(np.zeros((4, 4, 1), bool), np.zeros((4, 4, 1), bool))
    np.testing.assert_array_equal(got, [[0.0]])


# ---------------------------------------------------------------- NMS
def ref_nms(boxes, scores, threshold):
    """Visit boxes best first; keep one unless it overlaps an already kept box above threshold."""
    kept = []
    for i in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        if all(ref_iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_nms_matches_reference(rng, threshold):
    boxes = random_boxes(rng, 60)
    scores = rng.random(60)
    got = B.non_max_suppression(boxes, scores, threshold)
    assert got.dtype == np.int32
    assert got.tolist() == ref_nms(boxes, scores, threshold)


def test_nms_hand_case_and_ties():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]])  # int boxes
    scores = np.array([0.9, 0.8, 0.7, 0.9])
    # 0 and 3 tie and are identical: the lower index wins; 1 overlaps 0 by 81/119 = 0.68.
    assert B.non_max_suppression(boxes, scores, 0.5).tolist() == [0, 2]
    assert B.non_max_suppression(boxes, scores, 0.7).tolist() == [0, 1, 2]


def test_nms_empty():
    got = B.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert got.shape == (0,) and got.dtype == np.int32


# ---------------------------------------------------------------- deltas
def test_box_refinement_hand_case():
    deltas = B.box_refinement(np.array([[0, 0, 10, 10]]), np.array([[5, 5, 25, 15]]))
    # centres (5, 5) -> (15, 10); sizes 10x10 -> 20x10.
    np.testing.assert_allclose(deltas, [[1.0, 0.5, np.log(2.0), 0.0]], rtol=1e-6)
    assert deltas.dtype == np.float32


def test_apply_box_deltas_hand_case():
    got = B.apply_box_deltas(np.array([[0, 0, 10, 10]], float), np.array([[1.0, 0.5, np.log(2.0), 0.0]]))
    np.testing.assert_allclose(got, [[5, 5, 25, 15]], atol=1e-5)


def test_apply_box_deltas_caps_growth_at_1000_over_16_and_stays_finite():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    got = B.apply_box_deltas(boxes, np.array([[0, 0, 100.0, np.log(3.0)], [0, 0, -100.0, 0], [0, 0, 4.0, 0]]))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[0], [5 - 312.5, 5 - 15, 5 + 312.5, 5 + 15], rtol=1e-5)  # height 10 * 62.5
    np.testing.assert_allclose(got[1, [0, 2]], [5, 5], atol=1e-5)  # shrinking is not capped
    np.testing.assert_allclose(got[2, 2] - got[2, 0], 10 * np.exp(4.0), rtol=1e-5)  # below the cap: unchanged


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2 ** 31 - 1), st.integers(min_value=0, max_value=8))
def test_refinement_round_trip(seed, n):
    rng = np.random.default_rng(seed)
    boxes, gt = random_boxes(rng, n), random_boxes(rng, n)
    deltas = B.box_refinement(boxes, gt)
    assert deltas.shape == (n, 4)
    np.testing.assert_allclose(B.apply_box_deltas(boxes, deltas), gt, atol=1e-3)


# ---------------------------------------------------------------- norm / denorm
def test_norm_boxes_hand_case():
    got = B.norm_boxes(np.array([[10, 20, 51, 101], [0, 0, 101, 201]]), (101, 201))
    np.testing.assert_allclose(got, [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]], rtol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(B.denorm_boxes(np.array([[0, 0, 1, 1]]), (101, 201, 3)), [[0, 0, 101, 201]])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 2000), st.integers(2, 2000), st.integers(0, 2 ** 31 - 1))
def test_norm_denorm_round_trip(h, w, seed):
    rng = np.random.default_rng(seed)
    y = np.sort(rng.integers(0, h + 1, (5, 2)), axis=1)
    x = np.sort(rng.integers(0, w + 1, (5, 2)), axis=1)
    boxes = np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)
    back = B.denorm_boxes(B.norm_boxes(boxes, (h, w)), (h, w))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, boxes)


def test_norm_boxes_keeps_batch_axes():
    assert B.norm_boxes(np.zeros((2, 3, 4)), (64, 64)).shape == (2, 3, 4)


# ---------------------------------------------------------------- trim_zeros
def test_trim_zeros():
    x = np.array([[0, 0, 0, 0], [1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 3, 0]])
    np.testing.assert_array_equal(B.trim_zeros(x), [[1, 0, 0, 2], [0, 0, 3, 0]])
    assert B.trim_zeros(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError):
        B.trim_zeros(np.zeros(4))

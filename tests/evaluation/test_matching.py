"""compute_matches / compute_ap / compute_ap_range / compute_recall against hand-computed cases
and a slow pixel-loop reference."""
import numpy as np
import pytest

from mrcnn_tf.evaluation.matching import compute_ap, compute_ap_range, compute_matches, compute_recall


def rect_masks(shape, boxes):
    masks = np.zeros(tuple(shape) + (len(boxes),), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def slow_iou(a, b):
    inter = union = 0
    for y in range(a.shape[0]):
        for x in range(a.shape[1]):
            inter += bool(a[y, x]) and bool(b[y, x])
            union += bool(a[y, x]) or bool(b[y, x])
    return inter / union if union else 0.0


def slow_ap(gt_ids, gt_masks, pred_ids, scores, pred_masks, threshold):
    """Plain VOC all-point AP: greedy matching by score, then area under the interpolated curve."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    taken = set()
    hits = []
    for i in order:
        candidates = sorted(range(len(gt_ids)), key=lambda j: (-slow_iou(pred_masks[..., i], gt_masks[..., j]), j))
        hit = False
        for j in candidates:
            iou = slow_iou(pred_masks[..., i], gt_masks[..., j])
            if iou < threshold:
                break
            if j in taken:
                continue
            if pred_ids[i] == gt_ids[j]:
                taken.add(j)
                hit = True
                break
        hits.append(hit)
    if not gt_ids:
        return 0.0
    precision = [sum(hits[:k + 1]) / (k + 1) for k in range(len(hits))]
    recall = [sum(hits[:k + 1]) / len(gt_ids) for k in range(len(hits))]
    ap, previous = 0.0, 0.0
    for k in range(len(hits)):
        if recall[k] > previous:
            ap += (recall[k] - previous) * max(precision[k:])
            previous = recall[k]
    return ap


def test_hand_computed_ap():
    # Two cells; detections: hit (0.9), false positive (0.8), hit (0.7).
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 0.5 * 1 + 0.5 * 2/3.
    gt_boxes = np.array([[2, 2, 10, 10], [12, 12, 20, 20]])
    pred_boxes = np.array([[2, 2, 10, 10], [0, 12, 4, 20], [12, 12, 20, 20]])
    gt = rect_masks((24, 24), gt_boxes)
    pred = rect_masks((24, 24), pred_boxes)
    ap, precisions, recalls, overlaps = compute_ap(gt_boxes, [1, 2], gt, pred_boxes, [1, 1, 2], [0.9, 0.8, 0.7],
                                                   pred)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precisions, [1, 1, 2 / 3, 2 / 3, 0])
    assert overlaps.shape == (3, 2)
    assert overlaps[0, 0] == pytest.approx(1.0) and overlaps[2, 1] == pytest.approx(1.0)


def test_matches_follow_score_order_and_class():
    gt_boxes = np.array([[0, 0, 10, 10]])
    gt = rect_masks((16, 16), gt_boxes)
    # Same mask twice; the lower-scoring one is listed first. The better score wins the match.
    pred_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    pred = rect_masks((16, 16), pred_boxes)
    gt_match, pred_match, _ = compute_matches(gt_boxes, [3], gt, pred_boxes, [3, 3], [0.2, 0.9], pred)
    np.testing.assert_array_equal(pred_match, [0, -1])  # sorted: 0.9 first
    np.testing.assert_array_equal(gt_match, [0])
    # A wrong class never matches, however good the overlap.
    gt_match, pred_match, _ = compute_matches(gt_boxes, [3], gt, pred_boxes[:1], [2], [0.9], pred[..., :1])
    np.testing.assert_array_equal(gt_match, [-1])
    np.testing.assert_array_equal(pred_match, [-1])


def test_wrong_class_does_not_block_lower_iou_right_class():
    # Prediction overlaps cell A (class 1) best but is class 2; cell B (class 2) overlaps it with IoU >= 0.5.
    gt_boxes = np.array([[0, 0, 10, 10], [0, 2, 10, 12]])
    gt = rect_masks((16, 16), gt_boxes)
    pred_boxes = np.array([[0, 1, 10, 11]])
    pred = rect_masks((16, 16), pred_boxes)
    gt_match, pred_match, overlaps = compute_matches(gt_boxes, [1, 2], gt, pred_boxes, [2], [0.9], pred)
    assert overlaps[0, 0] == pytest.approx(overlaps[0, 1])
    np.testing.assert_array_equal(pred_match, [1])
    np.testing.assert_array_equal(gt_match, [-1, 0])


def test_score_threshold_drops_low_scores():
    boxes = np.array([[0, 0, 8, 8]])
    masks = rect_masks((10, 10), boxes)
    gt_match, pred_match, _ = compute_matches(boxes, [1], masks, boxes, [1], [0.3], masks, score_threshold=0.5)
    assert gt_match[0] == -1 and pred_match[0] == -1


def test_padding_rows_are_trimmed():
    gt_boxes = np.array([[0, 0, 8, 8], [0, 0, 0, 0]])
    gt = rect_masks((10, 10), [[0, 0, 8, 8], [0, 0, 0, 0]])
    ap, _, _, overlaps = compute_ap(gt_boxes, [1, 0], gt, gt_boxes[:1], [1], [1.0], gt[..., :1])
    assert ap == 1.0 and overlaps.shape == (1, 1)


def test_perfect_and_empty_predictions():
    boxes = np.array([[1, 1, 6, 6], [7, 7, 12, 14]])
    masks = rect_masks((16, 16), boxes)
    ap, *_ = compute_ap(boxes, [1, 2], masks, boxes, [1, 2], [0.9, 0.8], masks)
    assert ap == 1.0
    assert compute_ap_range(boxes, [1, 2], masks, boxes, [1, 2], [0.9, 0.8], masks, verbose=0) == 1.0
    empty = np.zeros((16, 16, 0), dtype=bool)
    ap, precisions, recalls, overlaps = compute_ap(boxes, [1, 2], masks, np.zeros((0, 4)), [], [], empty)
    assert ap == 0.0 and overlaps.shape == (0, 2)
    # No ground truth at all: 0, not NaN.
    with np.errstate(all="raise"):
        ap, *_ = compute_ap(np.zeros((0, 4)), [], empty, boxes, [1, 2], [0.9, 0.8], masks)
        assert ap == 0.0
        ap, *_ = compute_ap(np.zeros((0, 4)), [], empty, np.zeros((0, 4)), [], [], empty)
        assert ap == 0.0


def test_ap_range_is_mean_over_thresholds(capsys):
    gt_boxes = np.array([[0, 0, 10, 10]])
    gt = rect_masks((12, 12), gt_boxes)
    pred_boxes = np.array([[0, 0, 10, 8]])  # IoU 0.8
    pred = rect_masks((12, 12), pred_boxes)
    value = compute_ap_range(gt_boxes, [1], gt, pred_boxes, [1], [0.9], pred, verbose=1)
    # Thresholds 0.50 .. 0.80 pass (7 of 10).
    assert value == pytest.approx(0.7)
    assert "AP @0.50-0.95" in capsys.readouterr().out
    assert compute_ap_range(gt_boxes, [1], gt, pred_boxes, [1], [0.9], pred, iou_thresholds=[0.5, 0.85],
                            verbose=0) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_ap_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (20, 20)

    def random_boxes(n):
        y1 = rng.integers(0, 14, n)
        x1 = rng.integers(0, 14, n)
        return np.stack([y1, x1, y1 + rng.integers(2, 7, n), x1 + rng.integers(2, 7, n)], axis=1)

    gt_boxes = random_boxes(int(rng.integers(0, 5)))
    pred_boxes = np.concatenate([gt_boxes + rng.integers(-1, 2, gt_boxes.shape), random_boxes(3)])
    pred_boxes = np.clip(pred_boxes, 0, 20)
    gt_ids = list(rng.integers(1, 3, len(gt_boxes)))
    pred_ids = list(rng.integers(1, 3, len(pred_boxes)))
    scores = list(np.round(rng.random(len(pred_boxes)), 1))  # rounding makes ties
    gt, pred = rect_masks(shape, gt_boxes), rect_masks(shape, pred_boxes)
    for threshold in (0.3, 0.5, 0.75):
        ap, *_ = compute_ap(gt_boxes, gt_ids, gt, pred_boxes, pred_ids, scores, pred, iou_threshold=threshold)
        assert ap == pytest.approx(slow_ap(gt_ids, gt, pred_ids, scores, pred, threshold))


def test_compute_recall_box_iou():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 24], [60, 60, 70, 70]])
    recall, positive = compute_recall(pred, gt, 0.5)
    # Predictions 0 and 1 find box 0 (IoU 1 and 0.9); prediction 2 has IoU 0.4 with box 1.
    assert recall == pytest.approx(1 / 3)
    np.testing.assert_array_equal(positive, [0, 1])
    recall, positive = compute_recall(pred, gt, 0.3)
    assert recall == pytest.approx(2 / 3)
    assert compute_recall(np.zeros((0, 4)), gt, 0.5)[0] == 0.0
    assert compute_recall(pred, np.zeros((0, 4)), 0.5)[0] == 0.0

"""Best-match pairing, confusion matrix, typing accuracy and Dice against hand-computed cases."""
import numpy as np
import pytest

from mrcnn_tf.evaluation.classification import MISSED, TypingScore, best_matches, dice, format_confusion


def rect_masks(shape, boxes):
    masks = np.zeros(tuple(shape) + (len(boxes),), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # 4 px
    b[0:2, 1:3] = True  # 4 px, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert dice(a, a) == 1.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert dice(a, np.zeros((4, 4))) == 0.0


def test_best_matches_ignore_class_and_threshold():
    gt = rect_masks((20, 20), [[0, 0, 10, 10], [12, 12, 20, 20]])
    pred = rect_masks((20, 20), [[0, 0, 10, 8], [0, 0, 10, 10], [12, 12, 14, 14]])
    match, iou = best_matches(gt, pred, 0.5)
    np.testing.assert_array_equal(match, [1, -1])  # second cell's best IoU is 4/64
    assert iou[0] == pytest.approx(1.0) and iou[1] == pytest.approx(4 / 64)
    match, iou = best_matches(gt, np.zeros((20, 20, 0), bool))
    np.testing.assert_array_equal(match, [-1, -1])


def test_confusion_accuracy_and_dice():
    score = TypingScore(num_classes=4)
    gt = rect_masks((20, 20), [[0, 0, 10, 10], [12, 12, 20, 20], [0, 12, 6, 20]])
    # Cell 0 (type 1) found as 1; cell 1 (type 2) found as 3 with a half-size mask; cell 2 (type 3) missed.
    pred = rect_masks((20, 20), [[0, 0, 10, 10], [12, 12, 20, 16]])
    score.add([1, 2, 3], gt, [1, 3], pred)
    expected = np.zeros((4, 4), int)
    expected[1, 1] = 1
    expected[2, 3] = 1
    expected[3, MISSED] = 1
    np.testing.assert_array_equal(score.confusion, expected)
    assert score.cells == 3
    assert score.accuracy == pytest.approx(1 / 3)
    assert score.mean_dice == pytest.approx((1.0 + 2 * 32 / 96) / 2)
    assert score.per_class_recall() == {1: 1.0, 2: 0.0, 3: 0.0}
    text = format_confusion(score.confusion, ["BG", "A", "B", "C"])
    assert text.splitlines()[0].split()[-1] == "missed" and len(text.splitlines()) == 4


def test_empty_inputs_do_not_crash():
    score = TypingScore(num_classes=3)
    assert score.accuracy == 0.0 and score.mean_dice is None
    gt = rect_masks((8, 8), [[0, 0, 4, 4]])
    score.add([2], gt, [], np.zeros((8, 8, 0), bool))
    score.add([], np.zeros((8, 8, 0), bool), [1], gt)
    assert score.cells == 1 and score.accuracy == 0.0 and score.confusion[2, MISSED] == 1

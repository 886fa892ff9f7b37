"""mrcnn_tf.ops.masks: resize_mask, mini-masks and unmold_mask on hand cases and round trips."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.ops.boxes import compute_overlaps_masks, extract_bboxes
from mrcnn_tf.ops.masks import (MaskError, expand_mask, minimize_mask, paste_mask, resize, resize_mask,
                               unmold_mask)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


# ---------------------------------------------------------------- resize
def test_resize_bilinear_and_bool_input():
    # Matterport's mode="constant": the last output pixel samples past the edge and blends with cval 0.
    out = resize(np.array([[0.0, 1.0], [0.0, 1.0]]), (2, 4))
    np.testing.assert_allclose(out, [[0, 0.25, 0.75, 0.75]] * 2)
    out = resize(np.array([[False, True]]), (1, 4), mode="edge")  # skimage alone refuses bool with order 1
    np.testing.assert_allclose(out, [[0, 0.25, 0.75, 1]])


def test_resize_preserve_range():
    out = resize(np.full((4, 4), 200, np.uint8), (8, 8), preserve_range=True)
    np.testing.assert_allclose(out, 200)


# ---------------------------------------------------------------- resize_mask
def test_resize_mask_doubles_each_pixel_and_pads():
    mask = np.zeros((2, 3, 1), bool)
    mask[0, 0, 0] = True
    mask[1, 2, 0] = True
    out = resize_mask(mask, 2, [(1, 2), (0, 1), (0, 0)])
    assert out.dtype == bool and out.shape == (4 + 3, 6 + 1, 1)
    expected = np.zeros((7, 7), bool)
    expected[1:3, 0:2] = True  # shifted down by the 1-row top padding
    expected[3:5, 4:6] = True
    np.testing.assert_array_equal(out[:, :, 0], expected)


def test_resize_mask_nearest_neighbour_matches_reference(rng):
    mask = rng.random((5, 7, 2)) > 0.5
    out = resize_mask(mask, 3, [(0, 0), (0, 0), (0, 0)])
    assert out.shape == (15, 21, 2)
    # scipy's order-0 zoom maps output pixel o to input o * (n_in - 1) / (n_out - 1), halves rounded up.
    rows = np.floor(np.arange(15) * 4 / 14 + 0.5).astype(int)
    cols = np.floor(np.arange(21) * 6 / 20 + 0.5).astype(int)
    np.testing.assert_array_equal(out, mask[rows][:, cols])


def test_resize_mask_keeps_edge_rows_and_columns():
    # With scipy's default constant mode this scale drops the last column (source coordinate 23 + epsilon).
    out = resize_mask(np.ones((17, 24, 1), bool), 64 / 17, [(0, 0)] * 3)
    assert out.shape == (64, 90, 1) and out.all()


def test_resize_mask_crop():
    mask = np.zeros((6, 6, 1), bool)
    mask[2:4, 3:5, 0] = True
    out = resize_mask(mask, 1, [(0, 0)] * 3, crop=(1, 2, 4, 3))
    assert out.shape == (4, 3, 1)
    np.testing.assert_array_equal(out[:, :, 0], mask[1:5, 2:5, 0])


def test_resize_mask_no_instances():
    out = resize_mask(np.zeros((10, 8, 0), bool), 1.5, [(1, 1), (2, 2), (0, 0)])
    assert out.shape == (17, 16, 0) and out.dtype == bool


# ---------------------------------------------------------------- mini-masks
def test_minimize_mask_hand_case():
    mask = np.zeros((8, 8, 1), bool)
    mask[2:6, 2:4, 0] = True  # left half of the 4x4 box (2, 2, 6, 6)
    mini = minimize_mask(np.array([[2, 2, 6, 6]]), mask, (2, 2))
    assert mini.dtype == bool
    np.testing.assert_array_equal(mini[:, :, 0], [[True, False], [True, False]])


def test_mini_mask_round_trip_rectangles_is_exact():
    mask = np.zeros((40, 50, 2), bool)
    mask[3:20, 5:45, 0] = True
    mask[25:39, 0:9, 1] = True
    boxes = extract_bboxes(mask)
    mini = minimize_mask(boxes, mask, (56, 56))
    assert mini.shape == (56, 56, 2)
    np.testing.assert_array_equal(expand_mask(boxes, mini, mask.shape), mask)


@settings(max_examples=20, deadline=None)
@given(st.integers(10, 50), st.integers(10, 50), st.integers(5, 20))
def test_mini_mask_round_trip_discs(cy, cx, r):
    mask = disc((64, 64), cy, cx, r)[:, :, None]
    boxes = extract_bboxes(mask)
    back = expand_mask(boxes, minimize_mask(boxes, mask, (28, 28)), mask.shape)
    assert back.shape == mask.shape and back.dtype == bool
    assert compute_overlaps_masks(mask, back)[0, 0] > 0.9
    assert not np.any(back & ~_box_region(mask.shape, boxes))  # nothing outside the box


def _box_region(shape, boxes):
    region = np.zeros(shape, bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        region[y1:y2, x1:x2, i] = True
    return region


def test_minimize_mask_zero_area_box_is_a_clear_error():
    mask = np.zeros((8, 8, 1), bool)
    with pytest.raises(MaskError, match="zero-area box") as info:
        minimize_mask(extract_bboxes(mask), mask, (4, 4))
    assert isinstance(info.value, MrcnnError)


def test_mini_masks_no_instances():
    assert minimize_mask(np.zeros((0, 4)), np.zeros((8, 8, 0), bool), (4, 4)).shape == (4, 4, 0)
    assert expand_mask(np.zeros((0, 4)), np.zeros((4, 4, 0), bool), (8, 9, 3)).shape == (8, 9, 0)


def test_expand_mask_zero_area_box_leaves_channel_empty():
    out = expand_mask(np.array([[3, 3, 3, 7]]), np.ones((4, 4, 1), bool), (8, 8))
    assert not out.any()


# ---------------------------------------------------------------- unmold_mask
def test_unmold_mask_fills_box_at_threshold():
    scores = np.zeros((28, 28), np.float32)
    scores[:, :14] = 0.9
    full = unmold_mask(scores, (10, 20, 30, 50), (64, 64, 3))
    assert full.dtype == bool and full.shape == (64, 64)
    expected = np.zeros((64, 64), bool)
    expected[10:30, 20:35] = True  # left half of the 30-px-wide box
    np.testing.assert_array_equal(full, expected)
    assert not unmold_mask(np.full((28, 28), 0.49), (10, 20, 30, 50), (64, 64)).any()
    assert unmold_mask(np.full((28, 28), 0.5), (10, 20, 30, 50), (64, 64)).sum() == 20 * 30


def test_unmold_mask_degenerate_and_outside_boxes():
    assert not unmold_mask(np.ones((28, 28)), (5, 5, 5, 9), (16, 16)).any()
    full = unmold_mask(np.ones((28, 28)), (-4, 10, 8, 20), (16, 16))
    expected = np.zeros((16, 16), bool)
    expected[0:8, 10:16] = True
    np.testing.assert_array_equal(full, expected)


def slow_unmold(mask, bbox, shape):
    """The plain reference: the box's resized scores at >= 0.5 on a zero canvas grown by the box, then cropped."""
    y1, x1, y2, x2 = (int(v) for v in bbox)
    if y2 <= y1 or x2 <= x1:
        return np.zeros(shape, bool)
    margin = max(0, -y1, -x1, y2 - shape[0], x2 - shape[1])
    canvas = np.zeros((shape[0] + 2 * margin, shape[1] + 2 * margin), bool)
    resized = resize(mask.astype(np.float32), (y2 - y1, x2 - x1)) >= 0.5
    canvas[y1 + margin:y2 + margin, x1 + margin:x2 + margin] = resized
    return canvas[margin:margin + shape[0], margin:margin + shape[1]]


def test_paste_mask_writes_unmold_mask_into_a_channel(rng):
    shape = (40, 56)
    boxes = [(3, 4, 30, 50), (-6, -3, 12, 9), (30, 40, 52, 70), (5, 5, 5, 9), (45, 10, 60, 20), (-9, 60, -1, 70)]
    masks = rng.random((len(boxes), 28, 28))
    out = np.zeros(shape + (len(boxes),), bool)
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        region = paste_mask(out[:, :, i], mask, box)
        np.testing.assert_array_equal(out[:, :, i], unmold_mask(mask, box, shape))
        np.testing.assert_array_equal(out[:, :, i], slow_unmold(mask, box, shape))
        outside = np.ones(shape, bool)
        if region is not None:
            outside[region] = False
        assert not out[:, :, i][outside].any()  # nothing written outside the returned region
    assert [paste_mask(np.zeros(shape, bool), masks[0], b) is None for b in boxes] == [False, False, False, True,
                                                                                         True, True]

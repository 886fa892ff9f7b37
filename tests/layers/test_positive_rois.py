"""PositiveROIs: the first P slots, P = the batch's largest positive count (numpy reference)."""
import numpy as np
import pytest

from mrcnn_tf.layers.positive_rois import PositiveROIs


def reference(rois, class_ids, masks, max_slots):
    most = max(max(int((row > 0).sum()) for row in class_ids), 1)
    power = 1
    while power < most:
        power *= 2
    count = min(power, max_slots)
    return rois[:, :count], masks[:, :count]


@pytest.mark.parametrize("positives", [[3, 1], [0, 0], [5, 7], [2, 0], [4, 4], [1, 0], [9, 2]])
def test_matches_reference(rng, positives):
    batch, slots, max_slots = len(positives), 12, 6
    rois = rng.random((batch, slots, 4)).astype(np.float32)
    masks = rng.random((batch, slots, 6, 6)).astype(np.float32)
    class_ids = np.zeros((batch, slots), np.int32)
    for b, n in enumerate(positives):  # positives first, as DetectionTargetLayer orders them
        class_ids[b, :n] = rng.integers(1, 4, size=n)
    out_rois, out_masks = PositiveROIs(max_slots=max_slots)([rois, class_ids, masks])
    want_rois, want_masks = reference(rois, class_ids, masks, max_slots)
    np.testing.assert_array_equal(np.asarray(out_rois), want_rois)
    np.testing.assert_array_equal(np.asarray(out_masks), want_masks)


def test_config_round_trip_and_symbolic_shapes():
    import keras

    layer = PositiveROIs(max_slots=7, name="positive_rois")
    assert PositiveROIs.from_config(layer.get_config()).max_slots == 7
    rois, masks = layer([keras.Input((12, 4)), keras.Input((12,), dtype="int32"), keras.Input((12, 28, 28))])
    assert tuple(rois.shape) == (None, None, 4) and tuple(masks.shape) == (None, None, 28, 28)


def test_further_targets_keep_the_same_slots(rng):
    """NUCLEUS_MASKS: target_nucleus_mask rides along, cut to the same first P slots."""
    import keras

    rois = rng.random((2, 12, 4)).astype(np.float32)
    masks = rng.random((2, 12, 6, 6)).astype(np.float32)
    nuclei = rng.random((2, 12, 6, 6)).astype(np.float32)
    class_ids = np.zeros((2, 12), np.int32)
    class_ids[0, :3] = 1
    out = PositiveROIs(max_slots=6)([rois, class_ids, masks, nuclei])
    assert len(out) == 3
    want_rois, want_masks = reference(rois, class_ids, masks, 6)
    np.testing.assert_array_equal(np.asarray(out[1]), want_masks)
    np.testing.assert_array_equal(np.asarray(out[2]), nuclei[:, :want_rois.shape[1]])
    symbolic = PositiveROIs(max_slots=7)([keras.Input((12, 4)), keras.Input((12,), dtype="int32"),
                                          keras.Input((12, 28, 28)), keras.Input((12, 28, 28))])
    assert [tuple(t.shape) for t in symbolic] == [(None, None, 4), (None, None, 28, 28), (None, None, 28, 28)]

"""Anchors layer against a slow numpy generate_pyramid_anchors + norm_boxes."""
import math

import keras
import numpy as np
import pytest

from mrcnn_tf.layers import Anchors

SCALES = (8, 16, 32, 64, 128)
RATIOS = (0.5, 1, 2)
STRIDES = (4, 8, 16, 32, 64)


def ref_anchors(scales, ratios, image_shape, strides, anchor_stride):
    """Matterport's anchors, one box at a time: level, row, column, ratio; then normalized."""
    height, width = image_shape
    rows = []
    for scale, stride in zip(scales, strides):
        for y in range(0, math.ceil(height / stride), anchor_stride):
            for x in range(0, math.ceil(width / stride), anchor_stride):
                for ratio in ratios:
                    h, w = scale / math.sqrt(ratio), scale * math.sqrt(ratio)
                    cy, cx = y * stride, x * stride  # cell top-left, no half-stride offset
                    rows.append((cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))
    pixels = np.array(rows)
    return (pixels - np.array([0, 0, 1, 1])) / np.array([height - 1, width - 1, height - 1, width - 1])


@pytest.mark.parametrize("shape, anchor_stride", [((64, 64), 1), ((64, 128), 2), ((96, 64), 1)])
def test_anchors_match_reference(shape, anchor_stride):
    layer = Anchors(SCALES, RATIOS, STRIDES, anchor_stride)
    image = np.zeros((3, *shape, 3), np.float32)
    got = np.asarray(layer(image))
    want = ref_anchors(SCALES, RATIOS, shape, STRIDES, anchor_stride)
    assert got.shape == (3, len(want), 4)
    assert got.dtype == np.float32
    for b in range(3):
        np.testing.assert_allclose(got[b], want, atol=1e-4)
    # A square box of side 8 px at (0, 0) normalizes by (H-1, W-1).
    np.testing.assert_allclose(got[0, 1], [-4 / (shape[0] - 1), -4 / (shape[1] - 1), 3 / (shape[0] - 1),
                                           3 / (shape[1] - 1)], atol=1e-6)


def test_anchors_uneven_image_uses_ceil():
    # 70 px is not a multiple of the strides: feature maps are ceil(70 / stride).
    got = np.asarray(Anchors((16, 32), (1,), (16, 32), 1)(np.zeros((1, 70, 40, 3), np.float32)))
    want = ref_anchors((16, 32), (1,), (70, 40), (16, 32), 1)
    assert got.shape[1] == 5 * 3 + 3 * 2
    np.testing.assert_allclose(got[0], want, atol=1e-4)


def test_anchors_config_round_trip_and_serialization():
    layer = Anchors(SCALES, RATIOS, STRIDES, 2, name="anchors")
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    image = np.zeros((1, 64, 64, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(clone(image)), np.asarray(layer(image)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Anchors) and restored.anchor_stride == 2
    assert layer.weights == []


def test_anchors_in_functional_model():
    static = keras.Input((64, 64, 3))
    dynamic = keras.Input((None, None, 3))
    out_static = Anchors(SCALES, RATIOS, STRIDES, 1)(static)
    out_dynamic = Anchors(SCALES, RATIOS, STRIDES, 1)(dynamic)
    count = len(ref_anchors(SCALES, RATIOS, (64, 64), STRIDES, 1))
    assert tuple(out_static.shape) == (None, count, 4)
    assert tuple(out_dynamic.shape) == (None, None, 4)
    model = keras.Model([static, dynamic], [out_static, out_dynamic])
    a, b = model.predict([np.zeros((2, 64, 64, 3)), np.zeros((2, 64, 128, 3))], verbose=0)
    assert a.shape == (2, count, 4)
    np.testing.assert_allclose(b[1], ref_anchors(SCALES, RATIOS, (64, 128), STRIDES, 1), atol=1e-4)


def test_anchors_reject_mismatched_levels():
    with pytest.raises(ValueError, match="one scale per pyramid level"):
        Anchors((8, 16), RATIOS, STRIDES, 1)

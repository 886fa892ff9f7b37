"""PyramidROIAlign against a slow numpy level rule + bilinear crop_and_resize."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.layers import PyramidROIAlign

IMAGE = 256
STRIDES = (4, 8, 16, 32)


def ref_crop_and_resize(image, box, crop_h, crop_w):
    """tf.image.crop_and_resize (bilinear, extrapolation 0) for one box, one pixel at a time, float32."""
    f32 = np.float32
    height, width = image.shape[:2]
    y1, x1, y2, x2 = (f32(v) for v in box)
    out = np.zeros((crop_h, crop_w, image.shape[2]), np.float32)
    for i in range(crop_h):
        in_y = (y1 * f32(height - 1) + f32(i) * ((y2 - y1) * f32(height - 1) / f32(crop_h - 1)) if crop_h > 1
                else f32(0.5) * (y1 + y2) * f32(height - 1))
        if in_y < 0 or in_y > height - 1:
            continue
        top, bottom = int(math.floor(in_y)), int(math.ceil(in_y))
        y_lerp = in_y - f32(top)
        for j in range(crop_w):
            in_x = (x1 * f32(width - 1) + f32(j) * ((x2 - x1) * f32(width - 1) / f32(crop_w - 1)) if crop_w > 1
                    else f32(0.5) * (x1 + x2) * f32(width - 1))
            if in_x < 0 or in_x > width - 1:
                continue
            left, right = int(math.floor(in_x)), int(math.ceil(in_x))
            x_lerp = in_x - f32(left)
            top_row = image[top, left] + (image[top, right] - image[top, left]) * x_lerp
            bottom_row = image[bottom, left] + (image[bottom, right] - image[bottom, left]) * x_lerp
            out[i, j] = top_row + (bottom_row - top_row) * y_lerp
    return out


def ref_level(box, image_shape):
    area = max((box[2] - box[0]) * (box[3] - box[1]), 0.0)
    if area == 0:
        return 2
    k = 4 + round(math.log2(math.sqrt(area) / (224.0 / math.sqrt(image_shape[0] * image_shape[1]))))
    return min(5, max(2, k))


def ref_roi_align(boxes, image_shape, feature_maps, pool_shape):
    batch, count = boxes.shape[:2]
    out = np.zeros((batch, count, *pool_shape, feature_maps[0].shape[-1]), np.float32)
    for b in range(batch):
        for n in range(count):
            level = ref_level(boxes[b, n], image_shape)
            out[b, n] = ref_crop_and_resize(feature_maps[level - 2][b], boxes[b, n], *pool_shape)
    return out


def image_meta(batch, shape=(IMAGE, IMAGE, 3), num_classes=3):
    row = [0, *shape, *shape, 0, 0, shape[0], shape[1], 1.0] + [1] * num_classes
    return np.tile(np.array(row, np.float32), (batch, 1))


def feature_maps(rng, batch, channels, shape=(IMAGE, IMAGE)):
    return [rng.normal(size=(batch, math.ceil(shape[0] / s), math.ceil(shape[1] / s), channels)).astype(np.float32)
            for s in STRIDES]


def random_boxes(rng, batch, count):
    # Sides from 2 px to the whole image so every level is used; some boxes stick out of the image.
    sides = np.exp(rng.uniform(np.log(2 / IMAGE), np.log(1.8), size=(batch, count, 2)))
    corners = rng.uniform(-0.1, 1.0, size=(batch, count, 2))
    return np.concatenate([corners, corners + sides], axis=-1).astype(np.float32)


def test_roi_align_matches_reference(rng):
    boxes = random_boxes(rng, 2, 24)
    boxes[1, -3:] = 0  # zero padding rows
    boxes[0, 0] = [-0.3, -0.2, 1.4, 1.5]  # bigger than the image: level 5
    maps = feature_maps(rng, 2, 3)
    got = np.asarray(PyramidROIAlign((7, 7))([boxes, image_meta(2), *maps]))
    assert got.shape == (2, 24, 7, 7, 3)
    levels = {ref_level(b, (IMAGE, IMAGE)) for b in boxes.reshape(-1, 4)}
    assert levels == {2, 3, 4, 5}
    np.testing.assert_allclose(got, ref_roi_align(boxes, (IMAGE, IMAGE), maps, (7, 7)), atol=1e-4)


def test_level_rule_tiny_huge_and_degenerate_boxes():
    # Constant feature maps equal to their level number reveal the chosen level.
    maps = [np.full((1, IMAGE // s, IMAGE // s, 1), level, np.float32) for s, level in zip(STRIDES, range(2, 6))]
    boxes = np.array([[[0.5, 0.5, 0.51, 0.51],   # tiny -> 2
                       [0.25, 0.25, 0.75, 0.75],  # 128 px on a 256 px image: log2(128/224) = -0.8 -> 3
                       [0.0, 0.0, 224 / IMAGE, 224 / IMAGE],  # 224 px -> 4
                       [-1.0, -1.0, 2.0, 2.0],   # huge -> clamped to 5
                       [0.0, 0.0, 0.0, 0.0],     # zero padding -> 2 (log2(0) = -inf)
                       [0.3, 0.3, 0.3, 0.9]]],   # zero height -> 2
                     np.float32)
    got = np.asarray(PyramidROIAlign((3, 3))([boxes, image_meta(1), *maps]))
    levels = got[0, :, 0, 0, 0]
    assert [ref_level(b, (IMAGE, IMAGE)) for b in boxes[0]] == [2, 3, 4, 5, 2, 2]
    # The huge box extrapolates to 0 outside the map; its centre sample is inside.
    np.testing.assert_array_equal(levels[[0, 1, 2, 4, 5]], [2, 3, 4, 2, 2])
    assert got[0, 3, 1, 1, 0] == 5


def test_boxes_with_nan_or_inf_are_pooled_as_zero_boxes_and_the_rest_keep_their_features(rng):
    """An untrained head's overflowing deltas can give NaN detection boxes; pooling must not fail on them."""
    good = random_boxes(rng, 1, 3)
    boxes = np.concatenate([good[:, :1], np.full((1, 1, 4), np.nan, np.float32), good[:, 1:]], axis=1)
    boxes[0, 2, 3] = np.inf
    maps = feature_maps(rng, 1, 2)
    got = np.asarray(PyramidROIAlign((3, 3))([boxes, image_meta(1), *maps]))
    zero_box = np.zeros((1, 1, 4), np.float32)
    for row in (1, 2):  # pooled as a zero (padding) box
        np.testing.assert_allclose(got[:, row], ref_roi_align(zero_box, (IMAGE, IMAGE), maps, (3, 3))[:, 0], atol=1e-5)
    kept = good[:, [0, 2]]
    np.testing.assert_allclose(got[:, [0, 3]], ref_roi_align(kept, (IMAGE, IMAGE), maps, (3, 3)), atol=1e-5)


def test_level_uses_molded_image_area_from_meta(rng):
    boxes = np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32)
    maps = [np.full((1, 16, 16, 1), level, np.float32) for level in range(2, 6)]
    # The same normalized box is 448 px on a 448 px image -> level 5 (256 px image -> 4).
    got = np.asarray(PyramidROIAlign((1, 1))([boxes, image_meta(1, (448, 448, 3)), *maps]))
    assert got[0, 0, 0, 0, 0] == 5
    got = np.asarray(PyramidROIAlign((1, 1))([boxes, image_meta(1, (256, 256, 3)), *maps]))
    assert got[0, 0, 0, 0, 0] == 4


def test_float16_features_keep_dtype_and_box_precision(rng):
    boxes = random_boxes(rng, 1, 8)
    maps = feature_maps(rng, 1, 2)
    got = PyramidROIAlign((3, 3))([boxes, image_meta(1), *[m.astype(np.float16) for m in maps]])
    assert got.dtype == "float16"
    want = ref_roi_align(boxes, (IMAGE, IMAGE), [m.astype(np.float16).astype(np.float32) for m in maps], (3, 3))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=1e-2)


def test_no_gradient_through_boxes(rng):
    boxes = tf.Variable(random_boxes(rng, 1, 4))
    maps = [tf.Variable(m) for m in feature_maps(rng, 1, 2)]
    layer = PyramidROIAlign((3, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer([boxes, tf.constant(image_meta(1)), *maps]))
    grads = tape.gradient(loss, [boxes, *maps])
    assert grads[0] is None
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads[1:] if g is not None) > 0


def test_config_round_trip(rng):
    layer = PyramidROIAlign((7, 5), name="roi_align_classifier")
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.pool_shape == (7, 5)
    assert clone.autocast is False
    boxes, maps = random_boxes(rng, 1, 5), feature_maps(rng, 1, 2)
    np.testing.assert_array_equal(np.asarray(clone([boxes, image_meta(1), *maps])),
                                  np.asarray(layer([boxes, image_meta(1), *maps])))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, PyramidROIAlign)


@pytest.mark.parametrize("batch", [1, 3])
def test_in_functional_model(rng, batch):
    boxes = keras.Input((10, 4))
    meta = keras.Input((15,))
    maps = [keras.Input((None, None, 4)) for _ in STRIDES]
    pooled = PyramidROIAlign((14, 14))([boxes, meta, *maps])
    assert tuple(pooled.shape) == (None, 10, 14, 14, 4)
    model = keras.Model([boxes, meta, *maps], pooled)
    values = [random_boxes(rng, batch, 10), image_meta(batch), *feature_maps(rng, batch, 4)]
    np.testing.assert_allclose(model.predict(values, verbose=0),
                               ref_roi_align(values[0], (IMAGE, IMAGE), values[2:], (14, 14)), atol=1e-4)

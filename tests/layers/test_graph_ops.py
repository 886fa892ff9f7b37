"""mrcnn_tf.ops.graph against slow numpy references (normalized boxes unless stated)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.ops import graph


# ---------------------------------------------------------------- slow numpy references
def ref_apply_deltas(boxes, deltas):
    out = np.zeros_like(boxes, dtype=np.float64)
    for i, (box, delta) in enumerate(zip(boxes, deltas)):
        h, w = box[2] - box[0], box[3] - box[1]
        cy, cx = box[0] + h / 2 + delta[0] * h, box[1] + w / 2 + delta[1] * w
        h, w = h * math.exp(min(delta[2], math.log(1000 / 16))), w * math.exp(min(delta[3], math.log(1000 / 16)))
        out[i] = (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)
    return out


def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_refinement(box, gt):
    out = []
    for b, g in zip(box, gt):
        h, w, gh, gw = b[2] - b[0], b[3] - b[1], g[2] - g[0], g[3] - g[1]
        out.append(((g[0] + gh / 2 - b[0] - h / 2) / h, (g[1] + gw / 2 - b[1] - w / 2) / w,
                    math.log(gh / h), math.log(gw / w)))
    return np.array(out)


def random_boxes(rng, n, low=0.0, high=1.0):
    corners = rng.uniform(low, high, size=(n, 2, 2))
    corners.sort(axis=1)
    boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1)
    return boxes.astype(np.float32)


# ---------------------------------------------------------------- tests
def test_apply_box_deltas_matches_reference(rng):
    boxes = random_boxes(rng, 30)
    deltas = rng.normal(scale=0.3, size=(30, 4)).astype(np.float32)
    got = graph.apply_box_deltas_graph(tf.constant(boxes), tf.constant(deltas)).numpy()
    np.testing.assert_allclose(got, ref_apply_deltas(boxes, deltas), atol=1e-5)
    # Leading batch dims are kept.
    got3 = graph.apply_box_deltas_graph(tf.constant(boxes.reshape(3, 10, 4)), tf.constant(deltas.reshape(3, 10, 4)))
    np.testing.assert_allclose(got3.numpy().reshape(30, 4), got, atol=1e-6)


def test_huge_size_deltas_are_capped_and_never_give_nan(rng):
    """An untrained anchor's log(dh) of 90 overflowed exp() in float32 (inf - inf = NaN proposals)."""
    boxes = random_boxes(rng, 4)
    deltas = np.array([[0.1, 0.2, 90.0, 4.0], [0, 0, 1e4, -1e4], [0, 0, -90.0, 5.0], [35.0, -20.0, 0, 0]], np.float32)
    got = graph.apply_box_deltas_graph(tf.constant(boxes), tf.constant(deltas)).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref_apply_deltas(boxes, deltas), rtol=1e-5, atol=1e-5)
    heights = got[:, 2] - got[:, 0]
    assert heights[0] == pytest.approx((boxes[0, 2] - boxes[0, 0]) * 62.5, rel=1e-5)  # at most 1000/16 times larger
    assert heights[2] == pytest.approx(0, abs=1e-30)  # shrinking is not capped: a point box, still finite


def test_apply_zero_deltas_is_identity(rng):
    boxes = random_boxes(rng, 5)
    got = graph.apply_box_deltas_graph(tf.constant(boxes), tf.zeros([5, 4])).numpy()
    np.testing.assert_allclose(got, boxes, atol=1e-6)


def test_clip_boxes_to_window(rng):
    boxes = random_boxes(rng, 40, -0.5, 1.5)
    window = np.array([0.1, 0.2, 0.8, 0.9], np.float32)
    got = graph.clip_boxes_graph(tf.constant(boxes), tf.constant(window)).numpy()
    want = boxes.copy()
    for i in range(len(boxes)):
        for k, (lo, hi) in enumerate([(0.1, 0.8), (0.2, 0.9), (0.1, 0.8), (0.2, 0.9)]):
            want[i, k] = min(max(boxes[i, k], lo), hi)
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_overlaps_matches_reference_and_handles_degenerate(rng):
    b1 = np.concatenate([random_boxes(rng, 12), np.zeros((2, 4), np.float32)])
    b2 = np.concatenate([random_boxes(rng, 7), np.zeros((1, 4), np.float32), b1[:2]])
    got = graph.overlaps_graph(tf.constant(b1), tf.constant(b2)).numpy()
    want = np.array([[ref_iou(a, b) for b in b2] for a in b1])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.diag(got[:2, -2:]), [1.0, 1.0], atol=1e-6)
    assert graph.overlaps_graph(tf.constant(b1), tf.zeros([0, 4])).shape == (14, 0)


def test_box_refinement_inverts_apply_deltas(rng):
    boxes = random_boxes(rng, 20) + np.array([0, 0, 0.05, 0.05], np.float32)
    gt = random_boxes(rng, 20) + np.array([0, 0, 0.05, 0.05], np.float32)
    deltas = graph.box_refinement_graph(tf.constant(boxes), tf.constant(gt)).numpy()
    np.testing.assert_allclose(deltas, ref_refinement(boxes, gt), rtol=1e-4, atol=1e-4)
    back = graph.apply_box_deltas_graph(tf.constant(boxes), tf.constant(deltas)).numpy()
    np.testing.assert_allclose(back, gt, atol=1e-5)


def test_norm_denorm_boxes():
    pixels = np.array([[0, 0, 64, 128], [10, 20, 30, 40], [0, 0, 0, 0]], np.int32)
    got = graph.norm_boxes_graph(tf.constant(pixels), (64, 128)).numpy()
    want = (pixels - np.array([0, 0, 1, 1])) / np.array([63, 127, 63, 127])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(graph.denorm_boxes_graph(tf.constant(got), tf.constant([64, 128])).numpy(), pixels)
    # Per-image shapes [B, 2] broadcast against [B, 4] boxes; a channel entry is ignored.
    shapes = tf.constant([[64, 128, 3], [33, 17, 3]])
    got_b = graph.norm_boxes_graph(tf.constant([[10, 20, 30, 40], [10, 20, 30, 40]]), shapes).numpy()
    np.testing.assert_allclose(got_b[1], (np.array([10, 20, 29, 39]) / np.array([32, 16, 32, 16])), atol=1e-6)


def test_trim_zeros_and_batch_pack(rng):
    boxes = np.concatenate([random_boxes(rng, 3), np.zeros((2, 4), np.float32)])
    boxes[[1, 3]] = boxes[[3, 1]]
    trimmed, keep = graph.trim_zeros_graph(tf.constant(boxes))
    np.testing.assert_array_equal(keep.numpy(), [True, False, True, True, False])
    np.testing.assert_array_equal(trimmed.numpy(), boxes[[0, 2, 3]])
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    counts = np.array([2, 0, 5])
    want = np.concatenate([x[i, :c] for i, c in enumerate(counts)])
    np.testing.assert_array_equal(graph.batch_pack_graph(tf.constant(x), tf.constant(counts)).numpy(), want)
    np.testing.assert_array_equal(graph.batch_pack_graph(tf.constant(x), tf.constant(counts), 1).numpy(), x[0, :2])


def test_parse_image_meta_layout():
    meta = np.array([[7, 100, 200, 3, 64, 128, 3, 1, 2, 60, 120, 0.5, 1, 1, 0]], np.float32)
    parsed = {k: v.numpy() for k, v in graph.parse_image_meta_graph(tf.constant(meta)).items()}
    assert parsed["image_id"].tolist() == [7]
    assert parsed["original_image_shape"].tolist() == [[100, 200, 3]]
    assert parsed["image_shape"].tolist() == [[64, 128, 3]]
    assert parsed["window"].tolist() == [[1, 2, 60, 120]]
    assert parsed["scale"].tolist() == [0.5]
    assert parsed["active_class_ids"].tolist() == [[1, 1, 0]]


def test_log2():
    np.testing.assert_allclose(graph.log2_graph(tf.constant([1.0, 8.0, 0.25])).numpy(), [0, 3, -2], atol=1e-6)


@pytest.mark.parametrize("shape, stride", [((64, 64), 1), ((64, 96), 2), ((70, 33), 1)])
def test_pyramid_anchor_count_matches_graph(shape, stride):
    args = ((8, 16, 32), (0.5, 1, 2), shape, (4, 8, 16), stride)
    anchors = graph.generate_pyramid_anchors_graph(*args)
    assert anchors.shape[0] == graph.pyramid_anchor_count(*args)


# ---------------------------------------------------------------- NormBoxes layer
def test_norm_boxes_layer_matches_reference_and_round_trips(rng):
    import keras

    from mrcnn_tf.layers import NormBoxes

    pixels = np.concatenate([rng.integers(0, 64, size=(2, 3, 4)), np.zeros((2, 1, 4))], axis=1).astype(np.float32)
    image = np.zeros((2, 48, 64, 3), np.float32)
    layer = NormBoxes(name="norm_gt_boxes")
    got = np.asarray(layer([pixels, image]))
    want = np.zeros_like(pixels, dtype=np.float64)
    for b in range(2):
        for g in range(4):
            y1, x1, y2, x2 = pixels[b, g]
            want[b, g] = (y1 / 47, x1 / 63, (y2 - 1) / 47, (x2 - 1) / 63)
    np.testing.assert_allclose(got, want, atol=1e-6)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    boxes_in, image_in = keras.Input((None, 4)), keras.Input((None, None, 3))
    out = NormBoxes()([boxes_in, image_in])
    assert tuple(out.shape) == (None, None, 4)
    model = keras.Model([boxes_in, image_in], out)
    np.testing.assert_allclose(model.predict([pixels, image], verbose=0), want, atol=1e-6)

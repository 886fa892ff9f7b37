"""DetectionLayer against a slow numpy reference of Matterport's refine_detections_graph."""
import math

import keras
import numpy as np
import pytest

from mrcnn_tf.layers import DetectionLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])
IMAGE = (64, 96)


def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_refine(rois, probs, deltas, window, min_confidence, max_instances, nms_threshold, agnostic=False):
    """One image: arg-max class, refine + clip, filter, NMS per class (or over all), top D by score, pad."""
    candidates = []
    for i, (roi, p) in enumerate(zip(rois, probs)):
        c = int(np.argmax(p))
        dy, dx, dh, dw = deltas[i, c] * STD
        h, w = roi[2] - roi[0], roi[3] - roi[1]
        cap = math.log(1000 / 16)  # the largest size delta applied
        cy, cx = roi[0] + h / 2 + dy * h, roi[1] + w / 2 + dx * w
        h, w = h * math.exp(min(dh, cap)), w * math.exp(min(dw, cap))
        box = [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]
        box = [min(max(v, window[k % 2]), window[2 + k % 2]) for k, v in enumerate(box)]
        if c > 0 and p[c] >= min_confidence:
            candidates.append((i, c, float(p[c]), box))
    kept = []
    groups = [None] if agnostic else sorted({cand[1] for cand in candidates})
    for c in groups:
        same = sorted([cand for cand in candidates if c is None or cand[1] == c], key=lambda cand: (-cand[2], cand[0]))
        chosen = []
        for cand in same:
            if all(ref_iou(cand[3], k[3]) <= nms_threshold for k in chosen):
                chosen.append(cand)
        kept += chosen[:max_instances]
    kept = sorted(kept, key=lambda cand: (-cand[2], cand[0]))[:max_instances]
    out = np.zeros((max_instances, 6))
    for row, (_, c, score, box) in enumerate(kept):
        out[row] = [*box, c, score]
    return out


def image_meta(batch, window=(8, 0, 56, 96), num_classes=4):
    row = [0, 100, 150, 3, *IMAGE, 3, *window, 0.64] + [1] * num_classes
    return np.tile(np.array(row, np.float32), (batch, 1))


def random_inputs(rng, batch, count, num_classes=4, temperature=3.0):
    # ROIs in a few clusters so NMS has work to do; peaked class probabilities.
    centers = rng.uniform(0.2, 0.8, size=(batch, 3, 2))[:, rng.integers(0, 3, count)]
    sizes = rng.uniform(0.1, 0.3, size=(batch, count, 2))
    centers = centers + rng.normal(scale=0.03, size=centers.shape)
    rois = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)
    logits = temperature * rng.normal(size=(batch, count, num_classes))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    deltas = rng.normal(scale=0.5, size=(batch, count, num_classes, 4))
    return [x.astype(np.float32) for x in (rois, probs, deltas)]


def reference(inputs, meta, min_confidence, max_instances, nms_threshold, agnostic=False):
    rois, probs, deltas = inputs
    out = []
    for b in range(len(rois)):
        window = meta[b, 7:11]
        norm = (window - np.array([0, 0, 1, 1])) / np.array([IMAGE[0] - 1, IMAGE[1] - 1] * 2)
        out.append(ref_refine(rois[b], probs[b], deltas[b], norm, min_confidence, max_instances, nms_threshold,
                              agnostic))
    return np.stack(out)


@pytest.mark.parametrize("min_confidence, max_instances, nms_threshold", [(0.5, 10, 0.3), (0.0, 40, 0.5),
                                                                        (0.7, 3, 0.3)])
def test_detections_match_reference(rng, min_confidence, max_instances, nms_threshold):
    inputs = random_inputs(rng, 2, 40)
    meta = image_meta(2)
    meta[1, 7:11] = [0, 16, 64, 80]  # each image has its own window
    got = np.asarray(DetectionLayer(STD, min_confidence, max_instances, nms_threshold)([*inputs, meta]))
    want = reference(inputs, meta, min_confidence, max_instances, nms_threshold)
    assert got.shape == (2, max_instances, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_nms_is_per_class_and_clips_to_window():
    # Two identical boxes of different classes both survive; a same-class duplicate is suppressed.
    rois = np.array([[[0.0, 0.0, 0.5, 0.5]] * 3 + [[0.6, 0.6, 0.9, 0.9]]], np.float32)
    probs = np.array([[[0.1, 0.9, 0.0], [0.2, 0.0, 0.8], [0.15, 0.85, 0.0], [0.95, 0.05, 0.0]]], np.float32)
    inputs = [rois, probs, np.zeros((1, 4, 3, 4), np.float32)]
    meta = image_meta(1, window=(8, 0, 56, 96), num_classes=3)
    got = np.asarray(DetectionLayer(STD, 0.7, 5, 0.3)([*inputs, meta]))[0]
    assert got[:, 4].tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_allclose(got[:2, 5], [0.9, 0.8], atol=1e-6)
    np.testing.assert_allclose(got[0, :4], [8 / 63, 0, 0.5, 0.5], atol=1e-6)  # y1 clipped to the window
    np.testing.assert_allclose(got, reference(inputs, meta, 0.7, 5, 0.3)[0], atol=1e-6)


@pytest.mark.parametrize("min_confidence, max_instances, nms_threshold", [(0.5, 10, 0.3), (0.0, 40, 0.5)])
def test_class_agnostic_nms_matches_reference(rng, min_confidence, max_instances, nms_threshold):
    inputs = random_inputs(rng, 2, 40)
    meta = image_meta(2)
    layer = DetectionLayer(STD, min_confidence, max_instances, nms_threshold, class_agnostic_nms=True)
    got = np.asarray(layer([*inputs, meta]))
    want = reference(inputs, meta, min_confidence, max_instances, nms_threshold, agnostic=True)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Across classes no two kept boxes overlap beyond the threshold (per-class NMS allows that).
    for image in got:
        boxes = image[image[:, 5] > 0, :4]
        for i in range(len(boxes)):
            for j in range(i):
                assert ref_iou(boxes[i], boxes[j]) <= nms_threshold + 1e-5


def test_huge_and_non_finite_deltas():
    """A zero-height ROI with a huge height delta stays a finite (zero-height) box: the size delta is capped, so no
    0 * exp(inf) = NaN; a NaN delta (a diverged network) is no detection; the others stay."""
    rois = np.array([[[0.3, 0.3, 0.3, 0.6], [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.7, 0.7]]], np.float32)
    probs = np.array([[[0.05, 0.95, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]]], np.float32)
    deltas = np.zeros((1, 3, 3, 4), np.float32)
    deltas[0, 0, 1, 2] = 1000.0
    deltas[0, 2, 1, 0] = np.nan
    meta = image_meta(1, num_classes=3)
    got = np.asarray(DetectionLayer(STD, 0.5, 4, 0.3)([rois, probs, deltas, meta]))[0]
    assert np.isfinite(got).all()
    want = reference([rois[:, :2], probs[:, :2], deltas[:, :2]], meta, 0.5, 4, 0.3)[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0, 0] == got[0, 2]  # the zero-height box, first by its score


def test_class_agnostic_nms_keeps_one_type_per_object():
    # The per-class test's inputs: the class-2 twin of the class-1 box is now suppressed.
    rois = np.array([[[0.0, 0.0, 0.5, 0.5]] * 3 + [[0.6, 0.6, 0.9, 0.9]]], np.float32)
    probs = np.array([[[0.1, 0.9, 0.0], [0.2, 0.0, 0.8], [0.15, 0.85, 0.0], [0.95, 0.05, 0.0]]], np.float32)
    inputs = [rois, probs, np.zeros((1, 4, 3, 4), np.float32)]
    meta = image_meta(1, window=(8, 0, 56, 96), num_classes=3)
    got = np.asarray(DetectionLayer(STD, 0.7, 5, 0.3, class_agnostic_nms=True)([*inputs, meta]))[0]
    assert got[:, 4].tolist() == [1, 0, 0, 0, 0]
    np.testing.assert_allclose(got[0, 5], 0.9, atol=1e-6)


@pytest.mark.parametrize("case", ["below_confidence", "all_background", "padding_rois"])
def test_no_detection_gives_zeros(rng, case):
    rois, probs, deltas = random_inputs(rng, 2, 12)
    if case == "below_confidence":
        probs[0] = 0.25  # every class 0.25 < 0.5
        probs[0, :, 0] = 0.2
    elif case == "all_background":
        probs[0] = 0.0
        probs[0, :, 0] = 1.0
    else:
        rois[0] = 0.0
        probs[0] = 0.0
        probs[0, :, 0] = 1.0  # what the head says for zero-padded ROIs
    got = np.asarray(DetectionLayer(STD, 0.5, 6, 0.3)([rois, probs, deltas, image_meta(2)]))
    assert not got[0].any()
    np.testing.assert_allclose(got, reference([rois, probs, deltas], image_meta(2), 0.5, 6, 0.3), atol=1e-4)


def test_config_round_trip(rng):
    detection = DetectionLayer([0.1, 0.1, 0.2, 0.2], 0.7, 100, 0.3, name="mrcnn_detection")
    config = detection.get_config()
    clone = detection.__class__.from_config(config)
    assert clone.get_config() == config and clone.name == "mrcnn_detection"
    inputs = [*random_inputs(rng, 1, 10), image_meta(1)]
    np.testing.assert_array_equal(np.asarray(clone(inputs)), np.asarray(detection(inputs)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(detection))
    assert isinstance(restored, DetectionLayer) and restored.detection_max_instances == 100
    assert restored.class_agnostic_nms is False
    agnostic = DetectionLayer.from_config(dict(config, class_agnostic_nms=True))
    assert agnostic.get_config()["class_agnostic_nms"] is True


def test_in_functional_model_with_any_batch(rng):
    rois, probs, deltas, meta = (keras.Input((15, 4)), keras.Input((15, 4)), keras.Input((15, 4, 4)),
                                 keras.Input((16,)))
    detections = DetectionLayer(STD, 0.5, 8, 0.3)([rois, probs, deltas, meta])
    assert tuple(detections.shape) == (None, 8, 6)
    model = keras.Model([rois, probs, deltas, meta], detections)
    for batch in (1, 3):
        inputs = random_inputs(rng, batch, 15)
        got = model.predict([*inputs, image_meta(batch)], verbose=0)
        np.testing.assert_allclose(got, reference(inputs, image_meta(batch), 0.5, 8, 0.3), atol=1e-4)

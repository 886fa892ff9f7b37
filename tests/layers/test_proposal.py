"""ProposalLayer against a slow numpy reference (top-k, deltas, clip, greedy NMS, padding)."""
import math

import keras
import numpy as np
import pytest

from mrcnn_tf.layers import ProposalLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])


def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    return inter / (area_a + area_b - inter)


def ref_proposals(rpn_class, rpn_bbox, anchors, proposal_count, nms_threshold, pre_nms_limit, std=STD):
    out = np.zeros((len(rpn_class), proposal_count, 4))
    for b in range(len(rpn_class)):
        scores = rpn_class[b, :, 1]
        order = np.argsort(-scores, kind="stable")[:min(pre_nms_limit, len(scores))]
        boxes = []
        for i in order:
            y1, x1, y2, x2 = anchors[b, i]
            dy, dx, dh, dw = rpn_bbox[b, i] * std
            h, w = y2 - y1, x2 - x1
            cy, cx = y1 + h / 2 + dy * h, x1 + w / 2 + dx * w
            h, w = h * math.exp(dh), w * math.exp(dw)
            boxes.append([min(max(v, 0.0), 1.0) for v in (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)])
        kept = []
        for box in boxes:  # already in score order
            if len(kept) == proposal_count:
                break
            if all(ref_iou(box, k) <= nms_threshold for k in kept):
                kept.append(box)
        if kept:
            out[b, :len(kept)] = kept
    return out


def random_inputs(rng, batch, count, spread=0.3):
    centers = rng.uniform(0, 1, size=(batch, count, 2))
    sizes = rng.uniform(0.05, 0.4, size=(batch, count, 2))
    anchors = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)
    logits = rng.normal(size=(batch, count, 2))
    rpn_class = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rpn_bbox = rng.normal(scale=spread, size=(batch, count, 4))
    return [x.astype(np.float32) for x in (rpn_class, rpn_bbox, anchors)]


@pytest.mark.parametrize("batch, count, proposal_count, pre_nms_limit, threshold",
                         [(2, 60, 20, 40, 0.5), (3, 30, 50, 1000, 0.7), (1, 80, 10, 80, 0.3)])
def test_proposals_match_reference(rng, batch, count, proposal_count, pre_nms_limit, threshold):
    inputs = random_inputs(rng, batch, count)
    layer = ProposalLayer(proposal_count, threshold, pre_nms_limit, STD, name="ROI")
    got = np.asarray(layer(inputs))
    want = ref_proposals(*inputs, proposal_count, threshold, pre_nms_limit)
    assert got.shape == (batch, proposal_count, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_proposals_pad_with_zeros_and_clip_to_border(rng):
    # Identical anchors suppress each other: one survivor, the rest is zero padding.
    anchors = np.tile(np.array([[-0.2, 0.5, 0.4, 1.3]], np.float32), (1, 6, 1))
    rpn_class = np.tile(np.array([[0.2, 0.8]], np.float32), (1, 6, 1))
    rpn_class[0, 3] = [0.1, 0.9]
    inputs = [rpn_class, np.zeros((1, 6, 4), np.float32), anchors]
    got = np.asarray(ProposalLayer(4, 0.7, 100, STD)(inputs))
    np.testing.assert_allclose(got[0, 0], [0.0, 0.5, 0.4, 1.0], atol=1e-6)  # clipped to [0, 1]
    np.testing.assert_array_equal(got[0, 1:], 0)
    np.testing.assert_allclose(got, ref_proposals(*inputs, 4, 0.7, 100), atol=1e-6)


def test_batch_size_not_baked_in(rng):
    layer = ProposalLayer(8, 0.6, 30, STD)
    for batch in (1, 3):
        inputs = random_inputs(rng, batch, 25)
        np.testing.assert_allclose(np.asarray(layer(inputs)), ref_proposals(*inputs, 8, 0.6, 30), atol=1e-4)


def test_float16_inputs_give_float32_proposals(rng):
    inputs = random_inputs(rng, 2, 20)
    got = np.asarray(ProposalLayer(5, 0.7, 20, STD)([x.astype(np.float16) for x in inputs]))
    assert got.dtype == np.float32
    want = ref_proposals(*[x.astype(np.float16).astype(np.float32) for x in inputs], 5, 0.7, 20)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_config_round_trip(rng):
    layer = ProposalLayer(7, 0.65, 33, [0.1, 0.2, 0.3, 0.4], name="ROI")
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config and clone.name == "ROI"
    assert config["rpn_bbox_std_dev"] == [0.1, 0.2, 0.3, 0.4]
    inputs = random_inputs(rng, 2, 30)
    np.testing.assert_array_equal(np.asarray(clone(inputs)), np.asarray(layer(inputs)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ProposalLayer) and restored.pre_nms_limit == 33


def test_in_functional_model(rng):
    rpn_class, rpn_bbox, anchors = (keras.Input((None, 2)), keras.Input((None, 4)), keras.Input((None, 4)))
    rois = ProposalLayer(12, 0.7, 40, STD)([rpn_class, rpn_bbox, anchors])
    assert tuple(rois.shape) == (None, 12, 4)
    model = keras.Model([rpn_class, rpn_bbox, anchors], rois)
    inputs = random_inputs(rng, 2, 50)
    got = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(got, ref_proposals(*inputs, 12, 0.7, 40), atol=1e-4)


@pytest.mark.parametrize("shift, survivors", [(0.05, 1), (0.2, 2)])
def test_nms_threshold_decides_suppression(shift, survivors):
    # Two 0.5-wide boxes shifted by 0.05 (IoU 0.82) or 0.2 (IoU 0.43) against threshold 0.7.
    anchors = np.array([[[0.1, 0.1, 0.6, 0.6], [0.1, 0.1 + shift, 0.6, 0.6 + shift]]], np.float32)
    rpn_class = np.array([[[0.3, 0.7], [0.1, 0.9]]], np.float32)
    inputs = [rpn_class, np.zeros((1, 2, 4), np.float32), anchors]
    got = np.asarray(ProposalLayer(3, 0.7, 10, STD)(inputs))
    assert (np.abs(got[0]).sum(-1) > 0).sum() == survivors
    np.testing.assert_allclose(got[0, 0], anchors[0, 1], atol=1e-6)  # the higher score comes first
    np.testing.assert_allclose(got, ref_proposals(*inputs, 3, 0.7, 10), atol=1e-6)


def test_box_layers_stay_float32_under_mixed_precision():
    from mrcnn_tf.layers import Anchors, DetectionLayer, DetectionTargetLayer, NormBoxes, PyramidROIAlign

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        box_layers = [ProposalLayer(4, 0.7, 10, STD), DetectionLayer(STD, 0.5, 4, 0.3), NormBoxes(),
                      DetectionTargetLayer(4, 0.5, STD, (4, 4), True), Anchors((8,), (1,), (4,), 1)]
        assert all(layer.compute_dtype == "float32" for layer in box_layers)
        rpn = keras.Input((6, 2), dtype="float16")
        rois = box_layers[0]([rpn, keras.Input((6, 4), dtype="float16"), keras.Input((6, 4))])
        assert rois.dtype == "float32"
        roi_align = PyramidROIAlign((2, 2))
        assert roi_align.autocast is False
        maps = [keras.Input((8, 8, 2), dtype="float16") for _ in range(4)]
        assert roi_align([rois, keras.Input((15,)), *maps]).dtype == "float16"
    finally:
        keras.config.set_dtype_policy(previous)

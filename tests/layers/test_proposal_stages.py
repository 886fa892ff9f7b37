"""ProposalLayer.inspection_stages (what notebooks see of the layer) against numpy and against call()."""
import math

import numpy as np
import pytest

from mrcnn_tf.layers import ProposalLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])


def ref_iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_stages(rpn_class, rpn_bbox, anchors, proposal_count, threshold, pre_nms_limit):
    """Per image, written out: top-k anchors, their deltas, clipping, greedy NMS indices."""
    out = {k: [] for k in ("pre_nms_anchors", "refined_anchors", "refined_anchors_clipped", "nms")}
    for scores, deltas, boxes in zip(rpn_class[:, :, 1], rpn_bbox, anchors):
        order = np.argsort(-scores, kind="stable")[:min(pre_nms_limit, len(scores))]
        refined, clipped = [], []
        for i in order:
            y1, x1, y2, x2 = boxes[i]
            dy, dx, dh, dw = deltas[i] * STD
            h, w = y2 - y1, x2 - x1
            cy, cx, h, w = y1 + h / 2 + dy * h, x1 + w / 2 + dx * w, h * math.exp(dh), w * math.exp(dw)
            refined.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
            clipped.append([min(max(v, 0.0), 1.0) for v in refined[-1]])
        kept = []
        for k, box in enumerate(clipped):
            if len(kept) < proposal_count and all(ref_iou(box, clipped[j]) <= threshold for j in kept):
                kept.append(k)
        out["pre_nms_anchors"].append(boxes[order])
        out["refined_anchors"].append(np.array(refined))
        out["refined_anchors_clipped"].append(np.array(clipped))
        out["nms"].append(kept)
    return out


def random_inputs(rng, batch, count):
    centers = rng.uniform(0, 1, size=(batch, count, 2))
    sizes = rng.uniform(0.05, 0.4, size=(batch, count, 2))
    anchors = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)
    logits = rng.normal(size=(batch, count, 2))
    rpn_class = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rpn_bbox = rng.normal(scale=0.3, size=(batch, count, 4))
    return [x.astype(np.float32) for x in (rpn_class, rpn_bbox, anchors)]


@pytest.mark.parametrize("batch, count, proposal_count, pre_nms_limit, threshold",
                         [(2, 60, 12, 40, 0.5), (1, 30, 50, 1000, 0.7)])
def test_stages_match_reference_and_call(rng, batch, count, proposal_count, pre_nms_limit, threshold):
    inputs = random_inputs(rng, batch, count)
    layer = ProposalLayer(proposal_count, threshold, pre_nms_limit, STD, name="ROI")
    stages = layer.inspection_stages(inputs)
    want = ref_stages(*inputs, proposal_count, threshold, pre_nms_limit)
    k = min(count, pre_nms_limit)
    assert stages["pre_nms_anchors"].shape == (batch, k, 4) and stages["pre_nms_scores"].shape == (batch, k)
    assert stages["rpn_non_max_suppression"].shape == (batch, proposal_count)
    assert stages["rpn_non_max_suppression"].dtype == np.int32
    for key in ("pre_nms_anchors", "refined_anchors", "refined_anchors_clipped"):
        np.testing.assert_allclose(stages[key], np.stack(want[key]), atol=1e-5)
    for b in range(batch):
        kept = stages["rpn_non_max_suppression"][b]
        count_kept = len(want["nms"][b])
        assert kept[:count_kept].tolist() == want["nms"][b] and (kept[count_kept:] == -1).all()
        np.testing.assert_array_equal(np.sort(stages["pre_nms_scores"][b])[::-1], stages["pre_nms_scores"][b])
    # The proposals are exactly what the layer's call() returns.
    np.testing.assert_allclose(stages["proposals"], np.asarray(layer(inputs)), atol=1e-6)


def test_degenerate_stages(rng):
    """Identical anchors and zero deltas: NMS keeps one box, -1 and zero rows pad; fewer anchors than the limit."""
    rpn_class, _, _ = random_inputs(rng, 2, 5)
    anchors = np.tile(np.array([[0.2, 0.2, 0.6, 0.7]], np.float32), (2, 5, 1))
    anchors[1] = 0.0  # all-zero anchors of an empty image: zero-area boxes, none suppresses another
    layer = ProposalLayer(4, 0.7, 100, STD)
    stages = layer.inspection_stages([rpn_class, np.zeros((2, 5, 4), np.float32), anchors])
    assert stages["pre_nms_anchors"].shape == (2, 5, 4)
    assert stages["rpn_non_max_suppression"][0].tolist() == [0, -1, -1, -1]
    assert not stages["proposals"][0, 1:].any()
    np.testing.assert_allclose(stages["proposals"][0, 0], [0.2, 0.2, 0.6, 0.7], atol=1e-6)
    np.testing.assert_allclose(stages["proposals"], np.asarray(layer([rpn_class, np.zeros((2, 5, 4), np.float32),
                                                                      anchors])), atol=1e-6)

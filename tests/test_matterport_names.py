"""Matterport's public names: present in modellib / utils / visualize, and called with Matterport's arguments."""
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf import model as modellib, utils, visualize
from mrcnn_tf.nets import losses
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.layers import DetectionLayer, DetectionTargetLayer
from mrcnn_tf.ops.image import compose_image_meta, resize_image
from mrcnn_tf.ops.masks import resize_mask

# Top-level names of Matterport's mrcnn/model.py, utils.py and visualize.py (3deaec5), and MaskRCNN's methods.
MODEL_NAMES = """log BatchNorm compute_backbone_shapes identity_block conv_block resnet_graph apply_box_deltas_graph
    clip_boxes_graph ProposalLayer log2_graph PyramidROIAlign overlaps_graph detection_targets_graph
    DetectionTargetLayer refine_detections_graph DetectionLayer rpn_graph build_rpn_model fpn_classifier_graph
    build_fpn_mask_graph smooth_l1_loss rpn_class_loss_graph rpn_bbox_loss_graph mrcnn_class_loss_graph
    mrcnn_bbox_loss_graph mrcnn_mask_loss_graph load_image_gt build_detection_targets build_rpn_targets
    generate_random_rois data_generator MaskRCNN compose_image_meta parse_image_meta parse_image_meta_graph
    mold_image unmold_image trim_zeros_graph batch_pack_graph norm_boxes_graph denorm_boxes_graph""".split()
UTILS_NAMES = """extract_bboxes compute_iou compute_overlaps compute_overlaps_masks non_max_suppression
    apply_box_deltas box_refinement_graph box_refinement Dataset resize_image resize_mask minimize_mask expand_mask
    mold_mask unmold_mask generate_anchors generate_pyramid_anchors trim_zeros compute_matches compute_ap
    compute_recall compute_ap_range batch_slice download_trained_weights norm_boxes denorm_boxes resize
    COCO_MODEL_URL""".split()
VISUALIZE_NAMES = """display_images random_colors apply_mask display_instances display_differences draw_rois
    draw_box display_top_masks plot_precision_recall plot_overlaps draw_boxes display_table
    display_weight_stats""".split()
METHODS = """ancestor find_trainable_layer get_trainable_layers run_graph get_imagenet_weights compile
    set_trainable set_log_dir train mold_inputs unmold_detections detect detect_molded get_anchors find_last
    load_weights build""".split()


def test_every_matterport_name_exists():
    assert [n for n in MODEL_NAMES if not hasattr(modellib, n)] == []
    assert [n for n in UTILS_NAMES if not hasattr(utils, n)] == []
    assert [n for n in VISUALIZE_NAMES if not hasattr(visualize, n)] == []
    assert [n for n in METHODS if not hasattr(modellib.MaskRCNN, n)] == []
    assert set(MODEL_NAMES) <= set(modellib.__all__)
    assert {"batch_slice", "mold_mask", "box_refinement_graph"} <= set(utils.__all__)


def test_losses_with_matterport_argument_order(rng):
    config = tiny_config()
    rpn_match = rng.choice([-1, 0, 1], size=(2, 30, 1)).astype(np.int32)
    target_bbox = rng.normal(size=(2, 32, 4)).astype(np.float32)
    rpn_bbox = rng.normal(size=(2, 30, 4)).astype(np.float32)
    got = float(modellib.rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox))
    values = []  # slow reference: positive anchor a of image b takes row k of b's packed targets
    for b in range(2):
        for k, a in enumerate(np.flatnonzero(rpn_match[b, :, 0] == 1)):
            d = np.abs(target_bbox[b, k] - rpn_bbox[b, a]).astype(np.float64)
            values.extend(np.where(d < 1, 0.5 * d * d, d - 0.5))
    assert got == pytest.approx(np.mean(values), rel=1e-5)
    assert got == pytest.approx(float(losses.rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox)))
    logits = rng.normal(size=(2, 30, 2)).astype(np.float32)
    assert float(modellib.rpn_class_loss_graph(rpn_match, logits)) == float(
        losses.rpn_class_loss_graph(rpn_match, logits))
    for name in ("smooth_l1_loss", "rpn_class_loss_graph", "mrcnn_class_loss_graph", "mrcnn_bbox_loss_graph",
                 "mrcnn_mask_loss_graph"):
        assert getattr(modellib, name) is getattr(losses, name)  # same argument order as Matterport's


def test_detection_targets_graph_is_the_layer_for_one_image(rng):
    config = tiny_config(TRAIN_ROIS_PER_IMAGE=12, ROI_POSITIVE_RATIO=0.33, MINI_MASK_SHAPE=(12, 10))
    proposals = np.array([[0.12, 0.11, 0.41, 0.38], [0.0, 0.6, 0.2, 0.95], [0.52, 0.48, 0.88, 0.83],
                          [0.3, 0.3, 0.6, 0.6], [0, 0, 0, 0]], np.float32)  # 2 positives, 2 negatives, padding
    boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8], [0, 0, 0, 0]], np.float32)
    class_ids = np.array([2, 1, 0], np.int32)
    masks = rng.random((12, 10, 3)) > 0.5
    got = modellib.detection_targets_graph(proposals, class_ids, boxes, masks, config)
    layer = DetectionTargetLayer(12, 0.33, config.BBOX_STD_DEV, config.MASK_SHAPE, True)
    want = layer([proposals[None], class_ids[None], boxes[None], masks[None]])
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w)[0], atol=1e-6)
    assert np.asarray(got[1]).tolist()[:3] == [2, 1, 0]


def test_refine_detections_graph_is_the_layer_for_one_image(rng):
    config = tiny_config(DETECTION_MIN_CONFIDENCE=0.3, DETECTION_MAX_INSTANCES=6)
    rois = np.sort(rng.uniform(0, 1, size=(20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]
    logits = rng.normal(scale=2, size=(20, config.NUM_CLASSES))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    deltas = rng.normal(scale=0.5, size=(20, config.NUM_CLASSES, 4)).astype(np.float32)
    window_px = np.array([8, 0, 56, 64])
    meta = compose_image_meta(0, (48, 64, 3), (64, 64, 3), window_px, 1.0, np.ones(config.NUM_CLASSES))
    got = modellib.refine_detections_graph(rois.astype(np.float32), probs, deltas,
                                           utils.norm_boxes(window_px, (64, 64)), config)
    layer = DetectionLayer(config.BBOX_STD_DEV, 0.3, 6, config.DETECTION_NMS_THRESHOLD)
    want = np.asarray(layer([rois[None].astype(np.float32), probs[None], deltas[None], meta[None].astype(np.float32)]))
    np.testing.assert_allclose(np.asarray(got), want[0], atol=1e-6)
    assert np.asarray(got).shape == (6, 6) and np.count_nonzero(np.asarray(got)[:, 4]) >= 1


def test_batch_slice_loops_and_stacks(rng):
    x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    y = rng.integers(0, 5, size=(3, 2))
    first, second = utils.batch_slice([x, y], lambda a, i: (a[i[0]], a.sum()), 3, names=["rows", "sums"])
    np.testing.assert_allclose(np.asarray(first), np.stack([x[b, y[b, 0]] for b in range(3)]))
    np.testing.assert_allclose(np.asarray(second), x.sum(axis=(1, 2)), rtol=1e-5)
    single = utils.batch_slice(x, lambda a: a * 2, 2)  # one input, one output: a tensor, not a list
    np.testing.assert_allclose(np.asarray(single), x[:2] * 2)
    with pytest.raises(MrcnnError, match="batch_size"):
        utils.batch_slice(x, lambda a: a, 0)


def test_box_refinement_graph_matches_numpy(rng):
    boxes = np.sort(rng.uniform(0, 50, size=(6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]
    gt = boxes + rng.uniform(-2, 2, size=boxes.shape)
    np.testing.assert_allclose(np.asarray(utils.box_refinement_graph(boxes, gt)), utils.box_refinement(boxes, gt),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["square", "pad64", "none"])
def test_mold_mask_follows_the_molded_image(rng, mode):
    config = tiny_config(IMAGE_RESIZE_MODE=mode, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=128)
    image = rng.integers(0, 255, size=(40, 100, 3)).astype(np.uint8)
    if mode == "none":
        image = image[:, :64]
    masks = np.zeros(image.shape[:2] + (2,), bool)
    masks[5:20, 10:30, 0] = masks[22:38, 40:60, 1] = True
    molded, window, scale, padding, _ = resize_image(image, min_dim=64, max_dim=128, mode=mode)
    got = utils.mold_mask(masks, config)
    assert got.shape == molded.shape[:2] + (2,) and got.dtype == bool
    np.testing.assert_array_equal(got, resize_mask(masks, scale, padding))
    y1, x1, y2, x2 = window
    assert got[y1:y2, x1:x2].sum() == got.sum() > 0  # nothing lands in the padding
    with pytest.raises(MrcnnError, match="crop"):
        utils.mold_mask(masks, tiny_config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=64))
    with pytest.raises(MrcnnError, match=r"\[H, W, N\]"):
        utils.mold_mask(masks[..., 0], config)


def test_utils_imports_without_tensorflow():
    """The graph helper is loaded on first use: `from mrcnn_tf import utils` alone stays TensorFlow-free."""
    import subprocess
    import sys

    code = ("import sys; from mrcnn_tf import utils; assert 'tensorflow' not in sys.modules; "
            "utils.box_refinement_graph; assert 'tensorflow' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)

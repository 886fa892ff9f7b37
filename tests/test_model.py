"""`MaskRCNN` facade: building both modes, forward passes, detect(), unmolding, anchors, log dirs."""
import os

import keras
import numpy as np
import pytest

from helpers_model import favour_foreground, tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn_tf.ops.boxes import norm_boxes
from mrcnn_tf.ops.image import compose_image_meta, mold_image, parse_image_meta, resize_image

TRAINING_KEYS = ("rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits", "mrcnn_class", "mrcnn_bbox",
                 "mrcnn_mask", "rpn_rois", "output_rois", "target_class_ids", "target_bbox", "target_mask")


def anchor_count(config, size):
    shapes = compute_backbone_shapes(config, (size, size))
    return int(sum(h * w for h, w in shapes)) * len(config.RPN_ANCHOR_RATIOS)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """Inference model that keeps every non-background detection."""
    config = tiny_config(IMAGES_PER_GPU=2, DETECTION_MIN_CONFIDENCE=0.0)
    return favour_foreground(modellib.MaskRCNN("inference", config, str(tmp_path_factory.mktemp("logs"))))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return modellib.MaskRCNN("training", tiny_config(IMAGES_PER_GPU=2), str(tmp_path_factory.mktemp("logs")))


# ---------------------------------------------------------------------- building
@pytest.mark.parametrize("mode,overrides", [
    ("inference", dict(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128)),
    ("inference", dict(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64)),
    ("inference", dict(BACKBONE="resnet101")),
    ("training", dict(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, USE_MINI_MASK=False)),
    ("training", dict(USE_RPN_ROIS=False)),
    ("training", dict(BACKBONE="resnet18", TRAIN_BN=True)),
])
def test_build_modes_and_sizes(mode, overrides, tmp_path):
    config = tiny_config(**overrides)
    model = modellib.MaskRCNN(mode, config, str(tmp_path))
    names = [t.name for t in model.keras_model.inputs]
    if mode == "inference":
        assert names == ["input_image", "input_image_meta", "input_anchors"]
        shapes = [tuple(o.shape) for o in model.keras_model.outputs]
        nc, r, d = config.NUM_CLASSES, config.POST_NMS_ROIS_INFERENCE, config.DETECTION_MAX_INSTANCES
        assert shapes[0] == (None, d, 6)
        assert shapes[1][2:] == (nc,) and shapes[2][2:] == (nc, 4)
        assert shapes[3] == (None, d, 28, 28, nc)
        assert shapes[4] == (None, r, 4)
    else:
        expected = ["input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox", "input_gt_class_ids",
                    "input_gt_boxes", "input_gt_masks"]
        assert names == expected + ([] if config.USE_RPN_ROIS else ["input_roi"])
        assert set(model.keras_model.output) == set(TRAINING_KEYS)
        assert type(model.keras_model).__name__ == "MaskRCNNTrainModel"
    assert model.keras_model.name == "mask_rcnn"


def test_callable_backbone_is_used(tmp_path, rng):
    from mrcnn_tf.nets.resnet import resnet_graph

    calls = []

    def backbone(image, stage5=True, train_bn=True):
        calls.append((stage5, train_bn))
        return resnet_graph(image, "resnet50", stage5=stage5, train_bn=train_bn)

    def backbone_shapes(image_shape):
        return np.array([[-(-image_shape[0] // s), -(-image_shape[1] // s)] for s in (4, 8, 16, 32, 64)])

    # staticmethod: a plain function as a class attribute would be bound to the config.
    config = tiny_config(BACKBONE=staticmethod(backbone), COMPUTE_BACKBONE_SHAPE=staticmethod(backbone_shapes),
                         DETECTION_MIN_CONFIDENCE=0.0)
    model = favour_foreground(modellib.MaskRCNN("inference", config, str(tmp_path)))
    assert calls == [(True, config.TRAIN_BN)]
    assert "res2a_branch2a" in [layer.name for layer in model.keras_model.layers]
    result = model.detect(random_images(rng, [(64, 64, 3)]))[0]
    assert_result_format(result, (64, 64))


def test_bad_mode_and_wrong_mode_calls(trainer, tmp_path):
    with pytest.raises(MrcnnError, match="mode"):
        modellib.MaskRCNN("testing", tiny_config(), str(tmp_path))
    with pytest.raises(MrcnnError, match="inference"):
        trainer.detect([np.zeros((64, 64, 3), np.uint8)])


# ---------------------------------------------------------------------- forward passes
def training_inputs(config, rng, batch=2, size=64):
    """Correctly shaped synthetic training inputs: 2 GT boxes per image, the rest zero padding."""
    anchors = anchor_count(config, size)
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    meta = compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size), 1.0,
                              np.ones(config.NUM_CLASSES))
    metas = np.tile(meta, (batch, 1)).astype(np.float32)
    rpn_match = rng.choice([-1, 0, 1], size=(batch, anchors, 1)).astype(np.int32)
    rpn_bbox = rng.normal(size=(batch, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4)).astype(np.float32)
    gt_ids = np.zeros((batch, config.MAX_GT_INSTANCES), np.int32)
    gt_ids[:, :2] = [1, 2]
    gt_boxes = np.zeros((batch, config.MAX_GT_INSTANCES, 4), np.float32)
    gt_boxes[:, 0] = [4, 6, 30, 40]
    gt_boxes[:, 1] = [20, 20, 60, 50]
    gt_masks = np.zeros((batch,) + tuple(config.MINI_MASK_SHAPE) + (config.MAX_GT_INSTANCES,), bool)
    gt_masks[:, 4:24, 4:24, :2] = True
    return [images, metas, rpn_match, rpn_bbox, gt_ids, gt_boxes, gt_masks]


def test_training_forward_pass_shapes_and_losses(trainer, rng):
    config = trainer.config
    inputs = training_inputs(config, rng)
    out = trainer.keras_model(inputs, training=False)
    b, a, t, nc = 2, anchor_count(config, 64), config.TRAIN_ROIS_PER_IMAGE, config.NUM_CLASSES
    # The mask head runs on the first P slots, P = the batch's largest count of positive ROIs (PositiveROIs).
    positives = max(int((np.asarray(out["target_class_ids"]) > 0).sum(axis=1).max()), 1)
    s = min(2 ** int(np.ceil(np.log2(positives))), int(t * config.ROI_POSITIVE_RATIO))
    expected = {
        "rpn_class_logits": (b, a, 2), "rpn_class": (b, a, 2), "rpn_bbox": (b, a, 4),
        "mrcnn_class_logits": (b, t, nc), "mrcnn_class": (b, t, nc), "mrcnn_bbox": (b, t, nc, 4),
        "mrcnn_mask": (b, s, 28, 28, nc), "rpn_rois": (b, config.POST_NMS_ROIS_TRAINING, 4),
        "output_rois": (b, t, 4), "target_class_ids": (b, t), "target_bbox": (b, t, 4),
        "target_mask": (b, s, 28, 28)}
    assert {k: tuple(np.shape(v)) for k, v in out.items()} == expected
    rois = np.asarray(out["rpn_rois"])
    assert rois.min() >= 0 and rois.max() <= 1
    np.testing.assert_allclose(np.asarray(out["rpn_class"]).sum(-1), 1.0, rtol=1e-5)
    ids = np.asarray(out["target_class_ids"])
    assert set(np.unique(ids)) <= {0, 1, 2}
    # Every positive ROI sits in the first s slots, the only ones the mask head sees.
    assert not ids[:, s:].any()
    losses = trainer.keras_model.mrcnn_losses(inputs, out)
    assert all(np.isfinite(float(v)) for v in losses.values())


@pytest.mark.slow
def test_compile_and_train_step_keeps_batchnorm_frozen(trainer, rng):
    """One fit step on the heads: heads move, the backbone and frozen BN statistics do not."""
    trainer.set_trainable("heads", verbose=0)
    trainer.compile(learning_rate=0.01, momentum=0.9)
    model = trainer.keras_model
    bn = model.get_layer("mrcnn_class_bn1").layer
    watched = {"bn_moving_mean": bn.moving_mean, "conv1": model.get_layer("conv1").weights[0],
               "head": model.get_layer("mrcnn_class_conv1").weights[0], "bn_gamma": bn.gamma}
    before = {k: np.asarray(v).copy() for k, v in watched.items()}
    logs = model.train_on_batch(training_inputs(trainer.config, rng), return_dict=True)
    assert np.isfinite(logs["loss"]) and "rpn_class_loss" in logs
    changed = {k: not np.array_equal(before[k], np.asarray(v)) for k, v in watched.items()}
    assert changed == {"bn_moving_mean": False, "conv1": False, "head": True, "bn_gamma": True}


def test_inference_forward_pass_any_batch(detector, rng):
    config = detector.config
    images = rng.normal(size=(3, 64, 64, 3)).astype(np.float32)  # batch 3 > IMAGES_PER_GPU
    meta = compose_image_meta(0, (64, 64, 3), (64, 64, 3), (0, 0, 64, 64), 1.0, np.zeros(config.NUM_CLASSES))
    anchors = np.broadcast_to(detector.get_anchors((64, 64, 3)), (3, anchor_count(config, 64), 4))
    outputs = detector.keras_model([images, np.tile(meta, (3, 1)).astype(np.float32), anchors.astype(np.float32)])
    d, r, nc, a = config.DETECTION_MAX_INSTANCES, config.POST_NMS_ROIS_INFERENCE, config.NUM_CLASSES, anchors.shape[1]
    assert [tuple(o.shape) for o in outputs] == [(3, d, 6), (3, r, nc), (3, r, nc, 4), (3, d, 28, 28, nc),
                                                 (3, r, 4), (3, a, 2), (3, a, 4)]
    detections = np.asarray(outputs[0])
    real = detections[..., 4] > 0
    assert real.any()  # DETECTION_MIN_CONFIDENCE 0 keeps some
    assert np.all(detections[real][:, :4] >= 0) and np.all(detections[real][:, :4] <= 1)
    assert np.all(detections[~real] == 0)


# ---------------------------------------------------------------------- detect
def random_images(rng, shapes):
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]


def assert_result_format(result, shape):
    n = len(result["class_ids"])
    assert result["rois"].shape == (n, 4) and result["rois"].dtype == np.int32
    assert result["scores"].shape == (n,) and result["class_ids"].dtype == np.int32
    assert result["masks"].shape == shape[:2] + (n,) and result["masks"].dtype == bool
    rois = result["rois"]
    assert np.all(rois[:, 2] > rois[:, 0]) and np.all(rois[:, 3] > rois[:, 1])
    assert np.all(rois >= 0) and np.all(rois[:, 2] <= shape[0]) and np.all(rois[:, 3] <= shape[1])
    assert np.all((result["class_ids"] >= 1) & (result["class_ids"] < 3))
    assert np.all(np.diff(result["scores"]) <= 1e-6)  # best first
    for i in range(n):  # every mask lies inside its box
        y1, x1, y2, x2 = rois[i]
        outside = result["masks"][:, :, i].copy()
        outside[y1:y2, x1:x2] = False
        assert not outside.any()


def test_detect_any_count_any_size_in_input_order(detector, rng):
    shapes = [(50, 70, 3), (64, 64, 3), (30, 90, 3)]
    images = random_images(rng, shapes)
    results = detector.detect(images)
    assert len(results) == 3
    for result, shape in zip(results, shapes):
        assert set(result) == {"rois", "class_ids", "scores", "masks"}
        assert_result_format(result, shape)
    assert all(len(r["scores"]) > 0 for r in results)
    # images[1] shared a batch with images[0] (BATCH_SIZE 2); alone it must give the same answer. Random
    # weights saturate every score at 1.0, so which of the tied boxes come first is float noise (oneDNN
    # sums differently per batch size): the RPN's per-anchor outputs (rpn_class, rpn_bbox), whose order
    # does not depend on ties, are compared instead.
    alone = detector.detect(images[1])
    assert len(alone) == 1
    assert_result_format(alone[0], shapes[1])
    np.testing.assert_allclose(alone[0]["scores"], results[1]["scores"], rtol=1e-4, atol=1e-5)
    molded, metas, _ = detector.mold_inputs(images[:2])
    anchors = detector.get_anchors(molded[0].shape)
    pair = detector._predict(molded, metas, np.broadcast_to(anchors, (2,) + anchors.shape))
    single = detector._predict(molded[1:], metas[1:], anchors[np.newaxis])
    for in_pair, by_itself in zip(pair[-2:], single[-2:]):
        in_pair, by_itself = np.asarray(in_pair)[1], np.asarray(by_itself)[0]
        np.testing.assert_allclose(by_itself, in_pair, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(in_pair).max()))
    assert detector.detect([]) == []


def test_detect_groups_molded_shapes_without_retracing(tmp_path, rng):
    config = tiny_config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64, DETECTION_MIN_CONFIDENCE=0.0)
    model = favour_foreground(modellib.MaskRCNN("inference", config, str(tmp_path)))
    shapes = [(64, 64, 3), (50, 120, 3), (64, 70, 3), (40, 40)]  # molds to 64x64, 64x192, 64x128, 64x64
    images = random_images(rng, shapes)
    results = model.detect(images)
    for result, shape in zip(results, shapes):
        assert_result_format(result, shape[:2])
        assert len(result["scores"]) > 0
    again = model.detect([images[1]])
    np.testing.assert_allclose(again[0]["scores"], results[1]["scores"], rtol=1e-4, atol=1e-5)
    assert model._predict_fn.experimental_get_tracing_count() == 1
    with pytest.raises(MrcnnError, match="different shapes"):
        model.mold_inputs(images)


def test_detect_molded_matches_detect(detector, rng):
    image = random_images(rng, [(48, 64, 3)])[0]
    molded, metas, windows = detector.mold_inputs([image])
    assert molded.shape == (1, 64, 64, 3) and metas.shape == (1, detector.config.IMAGE_META_SIZE)
    parsed = parse_image_meta(metas)
    np.testing.assert_array_equal(parsed["window"][0], windows[0])
    np.testing.assert_array_equal(parsed["original_image_shape"][0], (48, 64, 3))
    a = detector.detect_molded(molded, metas)[0]
    b = detector.detect([image])[0]
    np.testing.assert_array_equal(a["rois"], b["rois"])
    np.testing.assert_array_equal(a["masks"], b["masks"])


# ---------------------------------------------------------------------- unmold_detections
def test_unmold_detections_maps_boxes_back_and_picks_class_masks(detector):
    original = (50, 100, 3)
    molded, window, scale, padding, _ = resize_image(np.zeros(original, np.uint8), min_dim=64, max_dim=64,
                                                     mode="square")
    image_shape = molded.shape
    # Reference by hand: original pixel boxes -> molded pixels (scale + top/left padding) -> normalized.
    boxes = np.array([[10, 20, 30, 60], [0, 0, 50, 100], [5, 5, 5, 40]], np.float64)  # last: zero height
    top, left = padding[0][0], padding[1][0]
    molded_boxes = boxes * scale + [top, left, top, left]
    detections = np.zeros((6, 6), np.float32)
    detections[:3, :4] = norm_boxes(molded_boxes, image_shape[:2])
    detections[:3, 4] = [2, 1, 1]
    detections[:3, 5] = [0.9, 0.8, 0.7]
    detections[4] = [0.1, 0.1, 0.5, 0.5, 1, 0.5]  # after the first padding row: ignored
    masks = np.zeros((6, 28, 28, 3), np.float32)
    masks[0, :, :, 2] = 1.0  # class 2 channel full for detection 0; other channels empty
    masks[1, 7:21, 7:21, 1] = 1.0  # centre only for detection 1
    out_boxes, class_ids, scores, full = detector.unmold_detections(detections, masks, original, image_shape,
                                                                    window)
    np.testing.assert_allclose(out_boxes, boxes[:2], atol=1)
    np.testing.assert_array_equal(class_ids, [2, 1])
    np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)
    assert full.shape == (50, 100, 2) and full.dtype == bool
    y1, x1, y2, x2 = out_boxes[0]
    assert full[y1:y2, x1:x2, 0].all() and full[:, :, 0].sum() == (y2 - y1) * (x2 - x1)
    assert full[25, 50, 1] and not full[2, 2, 1] and 0 < full[:, :, 1].sum() < 50 * 100 / 2


def test_unmold_detections_with_no_detections(detector):
    out = detector.unmold_detections(np.zeros((6, 6), np.float32), np.zeros((6, 28, 28, 3), np.float32),
                                     (40, 30, 3), (64, 64, 3), (0, 0, 64, 48))
    boxes, class_ids, scores, masks = out
    assert boxes.shape == (0, 4) and class_ids.shape == (0,) and scores.shape == (0,)
    assert masks.shape == (40, 30, 0) and masks.dtype == bool


# ---------------------------------------------------------------------- anchors, molding, helpers
@pytest.mark.parametrize("shape", [(64, 64, 3), (64, 192, 3), (128, 64, 3)])
def test_get_anchors_matches_generate_pyramid_anchors(detector, shape):
    config = detector.config
    pixels = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                      compute_backbone_shapes(config, shape), config.BACKBONE_STRIDES,
                                      config.RPN_ANCHOR_STRIDE)
    normalized = detector.get_anchors(shape)
    np.testing.assert_allclose(detector.anchors, pixels)
    np.testing.assert_allclose(normalized, norm_boxes(pixels, shape[:2]), rtol=1e-6)
    assert detector.get_anchors(shape) is normalized  # cached


def test_mold_inputs_subtracts_mean_and_pads(detector, rng):
    image = random_images(rng, [(32, 64, 3)])[0]
    molded, metas, windows = detector.mold_inputs([image])
    np.testing.assert_array_equal(windows[0], (16, 0, 48, 64))
    expected, _, _, _, _ = resize_image(image, min_dim=64, max_dim=64, mode="square")
    np.testing.assert_allclose(molded[0], mold_image(expected, detector.config))
    grey = detector.mold_inputs([image[..., 0]])[0]  # a grey image is repeated to 3 channels
    assert grey.shape == (1, 64, 64, 3)
    with pytest.raises(MrcnnError, match="channels|expected"):
        detector.mold_inputs([np.zeros((64, 64, 5), np.uint8)])


def test_run_graph_returns_named_intermediates(detector, rng, capsys):
    image = random_images(rng, [(64, 64, 3)])[0]
    values = detector.run_graph([image], [("rois", detector.keras_model.get_layer("ROI").output),
                                          ("p2", "fpn_p2")])
    assert list(values) == ["rois", "p2"]
    assert values["rois"].shape == (1, detector.config.POST_NMS_ROIS_INFERENCE, 4)
    assert values["p2"].shape == (1, 16, 16, detector.config.TOP_DOWN_PYRAMID_SIZE)
    assert "rois" in capsys.readouterr().out


def test_trainable_layers_unwrap_time_distributed(trainer):
    found = trainer.get_trainable_layers()
    # ResNet-18 (20 convolutions, 20 BatchNorms) + FPN (8) + rpn_model (1) + heads (16); ResNet-50: 131.
    assert len(found) == 65
    assert not any(isinstance(layer, keras.layers.TimeDistributed) for layer in found)
    assert "rpn_model" in [layer.name for layer in found]


def test_log_prints_shape_range_and_dtype(capsys):
    modellib.log("boxes", np.array([[1.0, 2.0], [3.0, 4.5]]))
    modellib.log("empty", np.zeros((0, 4)))
    out = capsys.readouterr().out
    assert "shape: (2, 2)" in out and "1.00000" in out and "4.50000" in out and "float64" in out
    assert "shape: (0, 4)" in out


def test_matterport_module_names():
    from mrcnn_tf.layers.batch_norm import BatchNorm

    assert modellib.BatchNorm is BatchNorm
    assert modellib.compose_image_meta is compose_image_meta
    with pytest.raises(AttributeError):
        modellib.no_such_name  # noqa: B018


# ---------------------------------------------------------------------- log dirs, checkpoints
def test_set_log_dir_never_reuses_and_resumes_from_checkpoint(tmp_path):
    model = modellib.MaskRCNN("inference", tiny_config(NAME="Cells"), str(tmp_path))
    first = model.log_dir
    assert os.path.dirname(first) == str(tmp_path) and os.path.basename(first).startswith("cells")
    assert model.epoch == 0
    assert model.checkpoint_path.format(epoch=7).endswith("mask_rcnn_cells_0007.weights.h5")
    os.makedirs(first)
    model.set_log_dir()
    assert model.log_dir != first and not os.path.exists(model.log_dir)
    checkpoint = os.path.join(first, "mask_rcnn_cells_0003.weights.h5")
    model.set_log_dir(checkpoint)
    assert model.log_dir == first and model.epoch == 3
    # A foreign file (not in a run folder, or no epoch) starts a new run at epoch 0.
    model.set_log_dir(str(tmp_path / "mask_rcnn_coco.h5"))
    assert model.epoch == 0 and model.log_dir != first


def test_load_weights_restores_values_and_epoch(tmp_path, rng):
    config = tiny_config(NAME="cells")
    source = modellib.MaskRCNN("inference", config, str(tmp_path))
    run = tmp_path / "cells20250101T1200"
    run.mkdir()
    path = run / "mask_rcnn_cells_0004.weights.h5"
    source.keras_model.save_weights(str(path))
    target = modellib.MaskRCNN("inference", config, str(tmp_path))
    target.load_weights(str(path), verbose=0)
    assert target.epoch == 4 and target.log_dir == str(run)
    for a, b in zip(source.keras_model.weights, target.keras_model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert target.find_last() == str(path)

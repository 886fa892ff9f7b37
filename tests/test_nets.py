"""Network structure: Matterport's weighted layer names and shapes, and the building blocks.

The expected weight list is derived here from the naming rules of DESIGN §6 (not read from the
model), so a renamed, missing or reshaped layer -- which would break loading `mask_rcnn_coco.h5`
by name -- fails these tests.
"""
import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.nets.fpn import fpn_graph
from mrcnn_tf.nets.graph import build_inference_graph
from mrcnn_tf.nets.heads import TimeDistributed, fpn_classifier_graph
from mrcnn_tf.nets.resnet import resnet_graph
from mrcnn_tf.nets.rpn import build_rpn_model

CONV = ("kernel", "bias")
BN = ("gamma", "beta", "moving_mean", "moving_variance")
STAGE_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))


def expected_groups(architecture, num_classes, fc=1024, pyramid=256, anchors_per_location=3):
    """name -> [(weight name, shape), ...] for every weighted layer, from Matterport's naming rules."""
    groups = {}

    def conv(name, k, cin, cout):
        groups[name] = [("kernel", (k, k, cin, cout)), ("bias", (cout,))]

    def bn(name, channels):
        groups[name] = [(w, (channels,)) for w in BN]

    conv("conv1", 7, 3, 64)
    bn("bn_conv1", 64)
    cin = 64
    for stage, blocks, (f1, f2, f3) in zip((2, 3, 4, 5), STAGE_BLOCKS[architecture], STAGE_FILTERS):
        for b in range(blocks):
            tag = f"{stage}{chr(ord('a') + b)}"
            conv(f"res{tag}_branch2a", 1, cin, f1)
            bn(f"bn{tag}_branch2a", f1)
            conv(f"res{tag}_branch2b", 3, f1, f2)
            bn(f"bn{tag}_branch2b", f2)
            conv(f"res{tag}_branch2c", 1, f2, f3)
            bn(f"bn{tag}_branch2c", f3)
            if b == 0:
                conv(f"res{tag}_branch1", 1, cin, f3)
                bn(f"bn{tag}_branch1", f3)
            cin = f3
    for level, channels in zip((5, 4, 3, 2), (2048, 1024, 512, 256)):
        conv(f"fpn_c{level}p{level}", 1, channels, pyramid)
    for level in (2, 3, 4, 5):
        conv(f"fpn_p{level}", 3, pyramid, pyramid)
    groups["rpn_model"] = [("kernel", (3, 3, pyramid, 512)), ("bias", (512,)),
                           ("kernel", (1, 1, 512, 2 * anchors_per_location)), ("bias", (2 * anchors_per_location,)),
                           ("kernel", (1, 1, 512, 4 * anchors_per_location)), ("bias", (4 * anchors_per_location,))]
    conv("mrcnn_class_conv1", 7, pyramid, fc)
    bn("mrcnn_class_bn1", fc)
    conv("mrcnn_class_conv2", 1, fc, fc)
    bn("mrcnn_class_bn2", fc)
    groups["mrcnn_class_logits"] = [("kernel", (fc, num_classes)), ("bias", (num_classes,))]
    groups["mrcnn_bbox_fc"] = [("kernel", (fc, 4 * num_classes)), ("bias", (4 * num_classes,))]
    for i in range(1, 5):
        conv(f"mrcnn_mask_conv{i}", 3, pyramid if i == 1 else 256, 256)
        bn(f"mrcnn_mask_bn{i}", 256)
    conv("mrcnn_mask_deconv", 2, 256, 256)  # Conv2DTranspose kernel: (k, k, out, in)
    conv("mrcnn_mask", 1, 256, num_classes)
    return groups


def model_groups(model):
    """name -> [(weight name, shape)] for the model's top-level layers that own weights."""
    return {layer.name: [(w.name, tuple(int(d) for d in w.shape)) for w in layer.weights]
            for layer in model.layers if layer.weights}


@pytest.fixture(scope="module")
def coco_like_model():
    config = tiny_config(BACKBONE="resnet101", NUM_CLASSES=81, IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128,
                         FPN_CLASSIF_FC_LAYERS_SIZE=1024, TOP_DOWN_PYRAMID_SIZE=256)
    inputs, outputs = build_inference_graph(config)
    return keras.Model(inputs, outputs, name="mask_rcnn")


def test_expected_list_matches_design_counts():
    groups = expected_groups("resnet101", 81)
    assert len(groups) == 233
    assert sum(len(v) for v in groups.values()) == 690
    groups50 = expected_groups("resnet50", 81)
    assert len(groups50) == 233 - 17 * 6
    assert sum(len(v) for v in groups50.values()) == 690 - 17 * 18


def test_resnet101_coco_layers_match_matterport(coco_like_model):
    found = model_groups(coco_like_model)
    expected = expected_groups("resnet101", 81)
    assert sorted(set(found) - set(expected)) == []
    assert sorted(set(expected) - set(found)) == []
    for name, weights in expected.items():
        assert found[name] == weights, name
    assert len(found) == 233
    assert sum(len(v) for v in found.values()) == 690
    # Names are unique among all layers, so by-name loading hits exactly one layer per group.
    names = [layer.name for layer in coco_like_model.layers]
    assert len(names) == len(set(names))


def test_rpn_model_is_one_nested_group_of_six_arrays(coco_like_model):
    rpn = coco_like_model.get_layer("rpn_model")
    assert isinstance(rpn, keras.Model)
    assert [layer.name for layer in rpn.layers if layer.weights] == ["rpn_conv_shared", "rpn_class_raw",
                                                                     "rpn_bbox_pred"]
    assert rpn.inputs[0].name == "input_rpn_feature_map"
    assert [w.path for w in rpn.weights] == [f"{layer}/{w}" for layer in ("rpn_conv_shared", "rpn_class_raw",
                                                                          "rpn_bbox_pred") for w in CONV]


def test_resnet50_counts():
    config = tiny_config(BACKBONE="resnet50", NUM_CLASSES=81, FPN_CLASSIF_FC_LAYERS_SIZE=1024,
                         TOP_DOWN_PYRAMID_SIZE=256)
    inputs, outputs = build_inference_graph(config)
    found = model_groups(keras.Model(inputs, outputs))
    assert found == expected_groups("resnet50", 81)
    assert len(found) == 131 and sum(len(v) for v in found.values()) == 384


def test_resnet_feature_shapes_and_block_outputs():
    image = keras.Input([None, None, 3])
    c1, c2, c3, c4, c5 = resnet_graph(image, "resnet50", stage5=True, train_bn=False)
    model = keras.Model(image, [c1, c2, c3, c4, c5])
    outs = model(np.zeros((1, 128, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 64), (1, 32, 16, 256), (1, 16, 8, 512),
                                              (1, 8, 4, 1024), (1, 4, 2, 2048)]
    names = {layer.name for layer in model.layers}
    assert {"res2a_out", "res3d_out", "res4f_out", "res5c_out"} <= names and "res4g_out" not in names
    assert resnet_graph(keras.Input([64, 64, 3]), "resnet50", stage5=False)[4] is None


def test_fpn_levels_and_rpn_outputs():
    c2, c3, c4, c5 = (keras.Input([s, s, c]) for s, c in ((16, 256), (8, 512), (4, 1024), (2, 2048)))
    levels = fpn_graph(c2, c3, c4, c5, pyramid_size=32)
    assert [tuple(p.shape[1:]) for p in levels] == [(16, 16, 32), (8, 8, 32), (4, 4, 32), (2, 2, 32), (1, 1, 32)]
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=32)
    logits, probs, bbox = rpn([np.random.default_rng(0).normal(size=(2, 4, 5, 32)).astype(np.float32)])
    assert tuple(logits.shape) == (2, 60, 2) and tuple(bbox.shape) == (2, 60, 4)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
    # Softmax of the logits: the two outputs describe the same anchors in the same order.
    logits = np.asarray(logits, np.float64)
    ref = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(probs), ref, rtol=1e-4, atol=1e-6)


def test_rpn_anchor_order_is_position_major():
    """Output row r*W*A + c*A + a must come from cell (r, c), anchor a (the anchors' layout)."""
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=8)
    features = np.random.default_rng(1).normal(size=(1, 3, 4, 8)).astype(np.float32)
    _, _, bbox = rpn([features])
    # Reference: the raw 1x1 conv output of bbox_pred, reshaped by hand.
    probe = keras.Model(rpn.inputs, rpn.get_layer("rpn_bbox_pred").output)
    raw = np.asarray(probe([features]))[0]  # [3, 4, 12]
    bbox = np.asarray(bbox)[0]
    for r in range(3):
        for c in range(4):
            for a in range(3):
                np.testing.assert_allclose(bbox[r * 12 + c * 3 + a], raw[r, c, 4 * a:4 * a + 4], rtol=1e-6)


def test_time_distributed_matches_per_roi_loop(rng):
    layer = keras.layers.Conv2D(5, (3, 3), padding="valid")
    wrapped = TimeDistributed(layer, name="td")
    x = rng.normal(size=(2, 4, 6, 6, 3)).astype(np.float32)
    y = np.asarray(wrapped(x))
    assert y.shape == (2, 4, 4, 4, 5)
    for b in range(2):
        for n in range(4):
            np.testing.assert_allclose(y[b, n], np.asarray(layer(x[b, n][None]))[0], rtol=1e-5, atol=1e-5)
    # Symbolic use with an unknown ROI count keeps the static per-ROI dimensions.
    symbolic = TimeDistributed(keras.layers.Dense(7))(keras.Input([None, 3]))
    assert tuple(symbolic.shape) == (None, None, 7)


@pytest.mark.parametrize("train_bn", [False, True, None])
def test_head_batchnorm_follows_train_bn_not_the_fit_flag(train_bn, rng):
    """TRAIN_BN=False keeps head BatchNorm frozen even when the model runs with training=True;
    None follows the call's flag (batch statistics in fit, moving statistics in predict)."""
    config = tiny_config()
    feature_maps = [keras.Input([s, s, 8]) for s in (16, 8, 4, 2)]
    rois = keras.Input([5, 4])
    meta = keras.Input([config.IMAGE_META_SIZE])
    outputs = fpn_classifier_graph(rois, feature_maps, meta, pool_size=7, num_classes=3, train_bn=train_bn,
                                   fc_layers_size=16)
    model = keras.Model([rois, meta] + feature_maps, list(outputs))
    bn = model.get_layer("mrcnn_class_bn1").layer
    assert isinstance(bn, BatchNorm)
    corner = rng.uniform(0, 0.5, size=(2, 5, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.5, size=(2, 5, 2))], axis=-1).astype(np.float32)
    metas = np.zeros((2, config.IMAGE_META_SIZE), np.float32)
    metas[:, 4:7] = [64, 64, 3]
    metas[:, 7:11] = [0, 0, 64, 64]
    maps = [rng.normal(size=(2, s, s, 8)).astype(np.float32) for s in (16, 8, 4, 2)]
    before = np.asarray(bn.moving_mean).copy()
    frozen = [np.asarray(o) for o in model([boxes, metas] + maps, training=False)]
    trained = [np.asarray(o) for o in model([boxes, metas] + maps, training=True)]
    after = np.asarray(bn.moving_mean)
    if train_bn is None:
        assert not np.allclose(before, after)  # training=True updated the moving statistics
        again = [np.asarray(o) for o in model([boxes, metas] + maps, training=False)]
        assert not np.allclose(frozen[0], again[0])  # training=False normalizes with them
        assert not np.allclose(again[0], trained[0])
    elif train_bn:
        assert not np.allclose(before, after)
    else:
        np.testing.assert_array_equal(before, after)
        for a, b in zip(frozen, trained):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert frozen[2].shape == (2, 5, 3, 4)


@pytest.mark.parametrize("agnostic", [False, True])
def test_detection_nms_mode_follows_config(agnostic):
    inputs, outputs = build_inference_graph(tiny_config(DETECTION_NMS_CLASS_AGNOSTIC=agnostic))
    model = keras.Model(inputs, outputs)
    assert model.get_layer("mrcnn_detection").class_agnostic_nms is agnostic

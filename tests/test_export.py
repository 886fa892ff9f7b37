"""SavedModel export: the reloaded serving signature gives exactly model.detect's results.

A tiny random-weight model with DETECTION_MIN_CONFIDENCE 0 (so detections exist); box deltas are
zeroed so boxes are anchor-sized and masks cover real pixels. Image sizes cover no resize,
padding only, upscaling and downscaling.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers_model import tiny_config

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.export import DetectionModule, _resize_bilinear, export_saved_model, load_exported
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.ops.image import resize_image

SIZES = [(128, 128), (128, 96), (50, 130), (200, 150)]


def tiny_model(tmp_path, **overrides):
    keras.utils.set_random_seed(3)
    settings = dict(NUM_CLASSES=4, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=128, DETECTION_MIN_CONFIDENCE=0.0,
                    DETECTION_MAX_INSTANCES=8)
    config = tiny_config(**dict(settings, **overrides))
    model = MaskRCNN("inference", config, str(tmp_path / "logs"))
    rng = np.random.default_rng(0)
    for layer in model.keras_model.layers:
        if layer.name == "rpn_model":
            for inner in layer.layers:
                if inner.name == "rpn_bbox_pred":
                    inner.set_weights([np.zeros_like(w) for w in inner.get_weights()])
        if layer.name == "mrcnn_bbox_fc":
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        if layer.name == "mrcnn_mask":
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(0, 1.0, kernel.shape).astype(kernel.dtype), bias])
    return model


def assert_same(expected, got):
    np.testing.assert_array_equal(got["rois"], expected["rois"])
    np.testing.assert_array_equal(got["class_ids"], expected["class_ids"])
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-6)
    assert got["masks"].dtype == bool and got["masks"].shape == expected["masks"].shape
    np.testing.assert_array_equal(got["masks"], expected["masks"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    model = tiny_model(tmp_path)
    path = export_saved_model(model, tmp_path / "saved")
    return model, path


@pytest.mark.slow
def test_round_trip_matches_detect(exported):
    model, path = exported
    loaded = load_exported(path)
    rng = np.random.default_rng(1)
    total_detections = total_mask_pixels = 0
    for shape in SIZES:
        image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        expected = model.detect([image])[0]
        got = loaded.detect([image])[0]
        assert_same(expected, got)
        total_detections += len(expected["class_ids"])
        total_mask_pixels += int(expected["masks"].sum())
    assert total_detections > 0 and total_mask_pixels > 0  # the comparison was not vacuous
    # The raw signature, as TF Serving would call it.
    raw = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = raw(image=tf.zeros([64, 64, 3], tf.uint8))
    assert set(out) == {"rois", "class_ids", "scores", "masks"} and out["masks"].shape[:2] == (64, 64)


def test_refuses_to_overwrite(exported, tmp_path):
    model, path = exported
    with pytest.raises(MrcnnError, match="--force"):
        export_saved_model(model, path)
    target = tmp_path / "again"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with pytest.raises(MrcnnError, match="already exists"):
        export_saved_model(model, target)


@pytest.mark.parametrize("shape", [(37, 50), (64, 48), (200, 150), (90, 90), (33, 61), (150, 47)])
def test_in_graph_resize_equals_skimage(rng, shape):
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    expected, _, scale, _, _ = resize_image(image, min_dim=64, max_dim=128, mode="square")
    if scale != 1:
        size = (round(shape[0] * scale), round(shape[1] * scale))
        got = _resize_bilinear(tf.constant(image), *size).numpy()
        top, left = (128 - size[0]) // 2, (128 - size[1]) // 2
        np.testing.assert_array_equal(got, expected[top:top + size[0], left:left + size[1]])


def test_pad64_graph_anchors_and_no_detections(tmp_path):
    model = tiny_model(tmp_path, IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64)
    module = DetectionModule(model)
    rng = np.random.default_rng(2)
    for shape in [(64, 64), (70, 100), (40, 130)]:
        image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        got = {k: v.numpy() for k, v in module.detect(tf.constant(image)).items()}
        assert_same(model.detect([image])[0], got)
    # Background wins everywhere -> no detections: empty outputs of the right shapes, no crash.
    layer = model.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = layer.get_weights()
    bias[0] = 1e4
    layer.set_weights([kernel, bias])
    got = {k: v.numpy() for k, v in module.detect(tf.constant(rng.integers(0, 256, (70, 90, 3), np.uint8))).items()}
    assert got["rois"].shape == (0, 4) and got["masks"].shape == (70, 90, 0)
    assert len(model.detect([np.zeros((70, 90, 3), np.uint8)])[0]["class_ids"]) == 0


def test_crop_mode_is_refused(tmp_path):
    model = tiny_model(tmp_path)
    model.config.IMAGE_RESIZE_MODE = "crop"
    with pytest.raises(MrcnnError, match="pad64"):
        DetectionModule(model)

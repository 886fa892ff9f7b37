"""SavedModel export: the reloaded serving signature gives exactly model.detect's results.

A tiny random-weight model with DETECTION_MIN_CONFIDENCE 0 (so detections exist); box deltas are
zeroed so boxes are anchor-sized and masks cover real pixels. Image sizes cover no resize,
padding only, upscaling and downscaling. With a colour typer the graph types the cells as detect does,
and an export from before the graph typed (the typer's file beside it only) is still typed by load_exported.
"""
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers_model import tiny_config

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference import export
from mrcnn_tf.inference.colour_typer import COMPARTMENT_FEATURE_NAMES, TYPER_FILE, ColourTyper
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


def random_typer(seed=0, model=None, images=()):
    """A "colour+compartments" typer of random weights for the 4-class tiny model; its standardisation fits the
    cells `model` detects on `images` when given (so that its choices vary), else it is random."""
    rng = np.random.default_rng(seed)
    f = len(COMPARTMENT_FEATURE_NAMES)
    mean, scale = rng.normal(0, 5, f), rng.uniform(10, 60, f)
    if model is not None:
        typer = ColourTyper(["BG", "a", "b", "c"], mean, scale, np.zeros((f, 3)), np.zeros(3), l2=0.1,
                            feature_set="colour+compartments")
        features = np.concatenate([[typer.features(image, result["masks"][..., n]) for n in range(
            result["masks"].shape[-1])] for image, result in zip(images, model.detect(list(images)))])
        mean, scale = features.mean(0), features.std(0) + 0.1
    return ColourTyper(["BG", "a", "b", "c"], mean, scale, rng.normal(0, 1, (f, 3)), rng.normal(0, 0.3, 3), l2=0.1,
                       feature_set="colour+compartments")


def detect_with(model, typer, image):
    model.typer = typer
    try:
        return model.detect([image])[0]
    finally:
        model.typer = None


@pytest.mark.slow
def test_the_graph_types_with_the_colour_typer(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, shape + (3,), dtype=np.uint8) for shape in [(128, 128), (50, 130)]]
    model = tiny_model(tmp_path)
    model.typer = typer = random_typer(0, model, images)
    path = export_saved_model(model, tmp_path / "saved")
    model.typer = None
    assert ColourTyper.load(path / TYPER_FILE).to_dict() == typer.to_dict()  # the file stays beside it
    raw = tf.saved_model.load(str(path)).signatures["serving_default"]  # as TF Serving calls it
    loaded = load_exported(path)
    assert loaded.typed_in_graph and loaded.typer is not None
    monkeypatch.setattr(export, "retype", None)  # load_exported must not retype what the graph typed
    chosen = set()
    for image in images:
        expected, head = detect_with(model, typer, image), model.detect([image])[0]
        out = {key: value.numpy() for key, value in raw(image=tf.constant(image)).items()}
        assert set(out) == {"rois", "class_ids", "scores", "masks", "head_class_ids", "head_scores"}
        assert_same(expected, out)
        np.testing.assert_array_equal(out["head_class_ids"], head["class_ids"])
        np.testing.assert_allclose(out["head_scores"], head["scores"], rtol=1e-6)
        assert_same(expected, loaded.detect([image])[0])
        assert len(expected["class_ids"]) > 0 and not np.allclose(expected["scores"], head["scores"])
        chosen.update(expected["class_ids"].tolist())
    assert len(chosen) > 1  # the typer's choices vary: the comparison says something
    loaded.typer = None  # the class head's types
    assert_same(head, loaded.detect([image])[0])


def test_an_export_typed_beside_the_graph_is_still_typed_by_load_exported(exported, tmp_path):
    model, path = exported
    old = tmp_path / "old"
    shutil.copytree(path, old)
    typer = random_typer(1)
    typer.save(old / TYPER_FILE)  # before the graph typed: the typer was only written beside it
    loaded = load_exported(old)
    assert not loaded.typed_in_graph and loaded.typer is not None
    image = np.random.default_rng(5).integers(0, 256, (128, 96, 3), dtype=np.uint8)
    expected = detect_with(model, typer, image)
    assert len(expected["class_ids"]) > 0
    assert_same(expected, loaded.detect([image])[0])
    loaded.typer = None
    assert_same(model.detect([image])[0], loaded.detect([image])[0])

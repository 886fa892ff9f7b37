"""Config: Matterport's defaults, derived values, validation messages, JSON and --set overrides."""
import json

import numpy as np
import pytest

from mrcnn_tf.config import LOSS_NAMES, Config
from mrcnn_tf.errors import ConfigError, MrcnnError

# Matterport's table (reference §3, commit 3deaec5), written out independently of config.py.
MATTERPORT_DEFAULTS = {
    "NAME": None, "GPU_COUNT": 1, "IMAGES_PER_GPU": 2, "STEPS_PER_EPOCH": 1000, "VALIDATION_STEPS": 50,
    "BACKBONE": "resnet101", "COMPUTE_BACKBONE_SHAPE": None, "BACKBONE_STRIDES": [4, 8, 16, 32, 64],
    "FPN_CLASSIF_FC_LAYERS_SIZE": 1024, "TOP_DOWN_PYRAMID_SIZE": 256, "NUM_CLASSES": 1,
    "RPN_ANCHOR_SCALES": (32, 64, 128, 256, 512), "RPN_ANCHOR_RATIOS": [0.5, 1, 2], "RPN_ANCHOR_STRIDE": 1,
    "RPN_NMS_THRESHOLD": 0.7, "RPN_TRAIN_ANCHORS_PER_IMAGE": 256, "PRE_NMS_LIMIT": 6000,
    "POST_NMS_ROIS_TRAINING": 2000, "POST_NMS_ROIS_INFERENCE": 1000, "USE_MINI_MASK": True,
    "MINI_MASK_SHAPE": (56, 56), "IMAGE_RESIZE_MODE": "square", "IMAGE_MIN_DIM": 800, "IMAGE_MAX_DIM": 1024,
    "IMAGE_MIN_SCALE": 0, "IMAGE_CHANNEL_COUNT": 3, "MEAN_PIXEL": np.array([123.7, 116.8, 103.9]),
    "TRAIN_ROIS_PER_IMAGE": 200, "ROI_POSITIVE_RATIO": 0.33, "POOL_SIZE": 7, "MASK_POOL_SIZE": 14,
    "MASK_SHAPE": [28, 28], "MAX_GT_INSTANCES": 100, "RPN_BBOX_STD_DEV": np.array([0.1, 0.1, 0.2, 0.2]),
    "BBOX_STD_DEV": np.array([0.1, 0.1, 0.2, 0.2]), "DETECTION_MAX_INSTANCES": 100,
    "DETECTION_MIN_CONFIDENCE": 0.7, "DETECTION_NMS_THRESHOLD": 0.3, "LEARNING_RATE": 0.001,
    "LEARNING_MOMENTUM": 0.9, "WEIGHT_DECAY": 0.0001,
    "LOSS_WEIGHTS": {"rpn_class_loss": 1.0, "rpn_bbox_loss": 1.0, "mrcnn_class_loss": 1.0,
                     "mrcnn_bbox_loss": 1.0, "mrcnn_mask_loss": 1.0},
    "USE_RPN_ROIS": True, "TRAIN_BN": False, "GRADIENT_CLIP_NORM": 5.0,
}


class SmallConfig(Config):
    NAME = "small"
    NUM_CLASSES = 1 + 5
    IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    MEAN_PIXEL = np.array([10.0, 20.0, 30.0])


@pytest.mark.parametrize("name", sorted(MATTERPORT_DEFAULTS))
def test_defaults_equal_matterport(name):
    value, expected = getattr(Config(), name), MATTERPORT_DEFAULTS[name]
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(value, expected)
    else:
        assert value == expected and type(value) is type(expected)


def test_derived_values():
    config = Config()
    assert config.BATCH_SIZE == 2 and config.IMAGE_META_SIZE == 12 + 1
    np.testing.assert_array_equal(config.IMAGE_SHAPE, [1024, 1024, 3])
    small = SmallConfig()
    assert small.BATCH_SIZE == 1 and small.IMAGE_META_SIZE == 18
    small.GPU_COUNT, small.IMAGES_PER_GPU = 2, 3
    small.IMAGE_RESIZE_MODE, small.IMAGE_MIN_DIM, small.IMAGE_MAX_DIM = "crop", 64, 256
    small.refresh()
    assert small.BATCH_SIZE == 6
    np.testing.assert_array_equal(small.IMAGE_SHAPE, [64, 64, 3])  # crop mode uses MIN_DIM


# Every entry: attribute, bad value; the one-line message must name the attribute.
BAD_VALUES = [
    ("GPU_COUNT", 0), ("IMAGES_PER_GPU", 1.5), ("STEPS_PER_EPOCH", True), ("NUM_CLASSES", 0),
    ("POST_NMS_ROIS_INFERENCE", -1), ("MAX_GT_INSTANCES", "100"), ("RPN_NMS_THRESHOLD", 1.5),
    ("DETECTION_MIN_CONFIDENCE", -0.1), ("ROI_POSITIVE_RATIO", 0), ("NAME", ""), ("BACKBONE", "vgg16"),
    ("IMAGE_RESIZE_MODE", "fit"), ("RPN_ANCHOR_SCALES", (32, 64)), ("RPN_ANCHOR_SCALES", (0, 64, 128, 256, 512)),
    ("RPN_ANCHOR_RATIOS", [0.5, -1]), ("IMAGE_MAX_DIM", 1000), ("IMAGE_MIN_DIM", 2048),
    ("MEAN_PIXEL", np.array([1.0, 2.0])), ("RPN_BBOX_STD_DEV", np.array([0.1, 0.1, 0.2])),
    ("BBOX_STD_DEV", np.array([0.1, 0.1, 0.2, 0.0])), ("MASK_SHAPE", [56, 56]), ("MINI_MASK_SHAPE", (0, 56)),
    ("LOSS_WEIGHTS", {"rpn_class_loss": 1.0}), ("LEARNING_RATE", 0), ("WEIGHT_DECAY", -1e-4),
    ("GRADIENT_CLIP_NORM", 0), ("IMAGE_MIN_SCALE", -1), ("TRAIN_BN", "yes"), ("MIXED_PRECISION", "fp8"),
    ("TRAIN_ROIS_PER_IMAGE", 2), ("LEARNING_MOMENTUM", 2.0), ("DETECTION_NMS_CLASS_AGNOSTIC", "yes"),
    ("XLA", 1), ("BN_STATS_BATCHES", -1), ("BN_STATS_BATCHES", 2.5), ("NUCLEUS_MASKS", "yes"),
    ("LOSS_WEIGHTS", {**dict.fromkeys(LOSS_NAMES, 1.0), "nucleus_loss": 1.0}),
]


@pytest.mark.parametrize("name, value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_validation_error_names_the_attribute(name, value):
    config = Config()
    setattr(config, name, value)
    with pytest.raises(ConfigError) as info:
        config.refresh()
    message = str(info.value)
    assert name in message and "\n" not in message
    assert isinstance(info.value, MrcnnError)


def test_callable_backbone_needs_compute_backbone_shape():
    config = Config()
    config.BACKBONE = lambda image: image
    with pytest.raises(ConfigError, match="COMPUTE_BACKBONE_SHAPE"):
        config.refresh()
    config.COMPUTE_BACKBONE_SHAPE = lambda shape: np.array([[shape[0] // 4, shape[1] // 4]])
    config.refresh()


def test_json_round_trip(tmp_path):
    config = SmallConfig()
    config.apply_overrides(["LEARNING_RATE=0.02", "TRAIN_BN=true", "MIXED_PRECISION=mixed_float16"])
    path = config.save_json(tmp_path / "config.json")
    assert json.loads(path.read_text())["NUM_CLASSES"] == 6
    loaded = SmallConfig.load_json(path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.MEAN_PIXEL, np.ndarray) and isinstance(loaded.RPN_ANCHOR_SCALES, tuple)
    assert loaded.LEARNING_RATE == 0.02 and loaded.TRAIN_BN is True
    # A base Config restores the subclass's values too (what evaluate/detect do with a checkpoint).
    assert Config.load_json(path).to_dict() == config.to_dict()


def test_json_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.json"):
        Config.load_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        Config.load_json(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"NOT_A_KEY": 1}))
    with pytest.raises(ConfigError, match="NOT_A_KEY"):
        Config.load_json(unknown)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"IMAGES_PER_GPU": 0}))
    with pytest.raises(ConfigError, match="invalid.json.*IMAGES_PER_GPU"):
        Config.load_json(invalid)


def test_apply_overrides_typing():
    config = Config().apply_overrides([
        "IMAGES_PER_GPU=1", "LEARNING_RATE=1", "BACKBONE=resnet50", "RPN_ANCHOR_SCALES=[8, 16, 32, 64, 128]",
        "MEAN_PIXEL=[1, 2, 3]", "USE_MINI_MASK=false", "GRADIENT_CLIP_NORM=null", "name=cells",
        "LOSS_WEIGHTS={\"rpn_class_loss\": 1, \"rpn_bbox_loss\": 1, \"mrcnn_class_loss\": 1, "
        "\"mrcnn_bbox_loss\": 1, \"mrcnn_mask_loss\": 2}",
    ])
    assert config.IMAGES_PER_GPU == 1 and type(config.IMAGES_PER_GPU) is int and config.BATCH_SIZE == 1
    assert config.LEARNING_RATE == 1.0 and type(config.LEARNING_RATE) is float
    assert config.BACKBONE == "resnet50" and config.NAME == "cells"
    assert config.RPN_ANCHOR_SCALES == (8, 16, 32, 64, 128)
    assert isinstance(config.MEAN_PIXEL, np.ndarray) and config.MEAN_PIXEL.tolist() == [1.0, 2.0, 3.0]
    assert config.USE_MINI_MASK is False and config.GRADIENT_CLIP_NORM is None
    assert config.LOSS_WEIGHTS["mrcnn_mask_loss"] == 2.0 and type(config.LOSS_WEIGHTS["rpn_class_loss"]) is float


@pytest.mark.parametrize("pair, fragment", [
    ("IMAGES_PER_GPU=1.5", "IMAGES_PER_GPU"),
    ("LEARNING_RATE=fast", "LEARNING_RATE"),
    ("USE_MINI_MASK=1", "USE_MINI_MASK"),
    ("RPN_ANCHOR_SCALES=32", "RPN_ANCHOR_SCALES"),
    ("NOT_A_KEY=1", "NOT_A_KEY"),
    ("BATCH_SIZE=4", "BATCH_SIZE"),
    ("IMAGES_PER_GPU", "KEY=VALUE"),
    ("IMAGE_MAX_DIM=1000", "IMAGE_MAX_DIM"),   # parses, then fails validation
])
def test_apply_overrides_errors(pair, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config().apply_overrides([pair])


def test_optimizer_choice_is_validated():
    assert Config().OPTIMIZER == "sgd"  # Matterport's optimizer stays the default
    assert Config().apply_overrides(["OPTIMIZER=adam"]).OPTIMIZER == "adam"
    with pytest.raises(ConfigError, match="OPTIMIZER"):
        Config().apply_overrides(["OPTIMIZER=rmsprop"])

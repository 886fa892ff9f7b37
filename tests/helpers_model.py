"""Shared tiny model configs for tests: ResNet-18, 64 px images, a handful of ROIs.

ResNet-18 because most of a test's time is tracing the training graph, and its 21 convolutions trace in
half the time of ResNet-50's 53; tests about the ResNet-50/101 layouts (COCO weights, layer names) ask
for them by name.

    from helpers_model import tiny_config
    config = tiny_config(NUM_CLASSES=4, IMAGE_MAX_DIM=128)

Every override is a Config attribute; derived values (BATCH_SIZE, IMAGE_SHAPE, IMAGE_META_SIZE)
follow automatically.
"""
import numpy as np

from mrcnn_tf.config import Config

TINY = dict(
    NAME="tiny",
    BACKBONE="resnet18",
    GPU_COUNT=1,
    IMAGES_PER_GPU=1,
    NUM_CLASSES=3,
    IMAGE_RESIZE_MODE="square",
    IMAGE_MIN_DIM=64,
    IMAGE_MAX_DIM=64,
    RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128),
    RPN_TRAIN_ANCHORS_PER_IMAGE=32,
    PRE_NMS_LIMIT=300,
    POST_NMS_ROIS_TRAINING=40,
    POST_NMS_ROIS_INFERENCE=30,
    TRAIN_ROIS_PER_IMAGE=12,
    MAX_GT_INSTANCES=4,
    DETECTION_MAX_INSTANCES=6,
    MINI_MASK_SHAPE=(28, 28),
    FPN_CLASSIF_FC_LAYERS_SIZE=64,
    TOP_DOWN_PYRAMID_SIZE=64,
    STEPS_PER_EPOCH=2,
    VALIDATION_STEPS=1,
)


def tiny_config(**overrides):
    """A validated `Config` instance with the TINY settings, updated by `overrides`."""
    attributes = dict(TINY, **overrides)
    return type("TinyConfig", (Config,), attributes)()


def favour_foreground(mrcnn):
    """Random weights may call every ROI background; a very low BG bias guarantees detections."""
    dense = mrcnn.keras_model.get_layer("mrcnn_class_logits").layer
    bias = np.zeros(dense.bias.shape, np.float32)
    bias[0] = -20.0
    dense.bias.assign(bias)
    return mrcnn

"""Small LISC configs for data-pipeline tests: 128 px images, anchors and mini masks to match."""
from mrcnn_tf.lisc import LiscConfig


class SmallDataConfig(LiscConfig):
    """128 px images; each data test adds its own batch, instance and ROI counts."""

    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    MINI_MASK_SHAPE = (16, 16)


class MosaicConfig(SmallDataConfig):
    """Two images per batch, each a 2 x 2 mosaic of up to 16 cells."""

    MAX_GT_INSTANCES = 16
    IMAGES_PER_GPU = 2
    MOSAIC_TILES = 2

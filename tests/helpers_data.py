"""A small LISC config for data-pipeline tests: 128 px images, two per batch, up to 16 cells each."""
from mrcnn_tf.lisc import LiscConfig


class MosaicConfig(LiscConfig):
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    MINI_MASK_SHAPE = (16, 16)
    MAX_GT_INSTANCES = 16
    IMAGES_PER_GPU = 2
    MOSAIC_TILES = 2

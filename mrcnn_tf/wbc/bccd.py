"""Real smears from scratch on a CPU: the BCCD-WBC recipe (`mrcnn-tf train --config bccd`).

BCCD-WBC (shipped in mrcnn_tf/wbc/data/bccd_wbc, MIT) is 284 real 640x480 smear fields, red cells and platelets in
every one, with one hand-drawn mask and type per white cell, in COCO JSON. Finding the white cell is
easy; typing it is the task: Neutrophils are 59% of the cells, Basophils one training cell. Each value
below differs from `LiscConfig` for the reason beside it (measured: bench/RESULTS.md).
"""
import numpy as np

from mrcnn_tf.lisc import LiscConfig


class BccdConfig(LiscConfig):
    """From random weights on 2 CPU cores: ResNet-18 FPN at 320 px, narrow heads, class-balanced passes."""

    NAME = "bccd"
    BACKBONE = "resnet18"  # ResNet-50's C4/C5 stages cost most of a CPU step; 227 fields cannot feed it
    # 640x480 -> 320x240 (padded to 320x320): a white cell is 55-117 px, its lobes and granules still visible.
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 320
    IMAGE_MAX_DIM = 320
    MEAN_PIXEL = np.array([188.6, 177.7, 183.0])  # mean colour of the 284 BCCD fields
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)  # 64 and 128 bracket the 55-117 px cells
    TOP_DOWN_PYRAMID_SIZE = 64
    RPN_CONV_CHANNELS = 128
    MASK_HEAD_CHANNELS = 128
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8  # one white cell per field (three fields hold two), four fields per mosaic
    DETECTION_MAX_INSTANCES = 5
    # Batch statistics in training, exact moving statistics recomputed before each checkpoint (PreciseBN).
    TRAIN_BN = None
    BN_STATS_BATCHES = 4
    IMAGES_PER_GPU = 4
    # bfloat16 where the CPU runs it faster, float32 elsewhere: the same held-out figures in fewer minutes (measured
    # by cross-validation on both real sets' training splits: bench/RESULTS.md).
    MIXED_PRECISION = "auto"
    OPTIMIZER = "adam"
    LEARNING_RATE = 0.001
    # The recipe is 16 epochs of 50 steps (presets.SCRATCH_SCHEDULES: `--weights none` runs all:16), the rate
    # decaying to zero over them, so a run ends on a settled model, not on a swing of a constant rate. 800 steps
    # rather than 600: at 600 some seeds still missed a cell and drew looser masks.
    LEARNING_RATE_SCHEDULE = "cosine"
    LEARNING_RATE_WARMUP_STEPS = 50
    STEPS_PER_EPOCH = 50
    VALIDATION_STEPS = 1
    # One white cell per field: one type per detected cell, so the count and the typing see one answer.
    DETECTION_NMS_CLASS_AGNOSTIC = True
    # Report a found cell even when its type is uncertain: LiscConfig's 0.5 dropped many found cells whose best
    # type scored under it.
    DETECTION_MIN_CONFIDENCE = 0.1
    REPEAT_FACTOR_THRESHOLD = 0.3  # Monocytes (6% of fields) x2.3, Lymphocytes x1.8, the one Basophil x8
    # Each training image a 2 x 2 mosaic of four fields cropped around their cells: four times the cells per
    # step at the same cost.
    MOSAIC_TILES = 2
    AUGMENTATION = "bccd"  # flips, turns, brightness, contrast, focus; no tint: it hides Eosinophils (data/augment.py)
    # Types from the colour of the nucleus and the cytoplasm inside each predicted mask, fitted on the training cells'
    # own masks: they type cells far better than the class head, and better than the whole cell's colour
    # alone (mrcnn_tf/wbc/colour_typing.py).
    COLOUR_TYPING = True
    # BCCD-WBC has a nucleus per cell, but the numbers above were measured without the nucleus head: off until
    # it is measured on this recipe (`--set NUCLEUS_MASKS=true` trains it).
    NUCLEUS_MASKS = False

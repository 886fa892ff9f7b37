"""Mask R-CNN configuration: Matterport's `Config` with validation, overrides and JSON.

Subclass and override class attributes, exactly as with Matterport::

    class CellConfig(Config):
        NAME = "cells"
        NUM_CLASSES = 1 + 5

Derived values (BATCH_SIZE, IMAGE_SHAPE, IMAGE_META_SIZE) are computed in ``__init__`` and again
by ``refresh()`` after attributes change. ``validate()`` runs in ``__init__`` and raises a
one-line `ConfigError` that names the attribute, the value and the fix.
"""
import json
import math
import pathlib

import numpy as np

from mrcnn_tf.errors import ConfigError

# Attributes computed from the others; never read from JSON or --set.
# CPU_KERNELS: the backend's kernel choices when a model was built from this config (`backend.plan`), a record.
DERIVED = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE", "CPU_KERNELS")
RESIZE_MODES = ("none", "square", "pad64", "crop")
BACKBONES = ("resnet50", "resnet101", "resnet18", "resnet34")  # the last two: mrcnn_tf additions (CPU)
# Attributes whose type validate() checks itself (they mix types: None, bool, str, int, float).
LOOSE_TYPES = ("MIXED_PRECISION", "TRAIN_BN", "IMAGE_MIN_SCALE", "GRADIENT_CLIP_NORM", "NAME")
# The colour typer's feature sets (mrcnn_tf.wbc.colour_typing builds its features under these names).
COLOUR_TYPING_FEATURE_SETS = ("colour", "colour+compartments")
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")
# The sixth loss, only with NUCLEUS_MASKS: its LOSS_WEIGHTS entry is optional (1.0 when absent).
NUCLEUS_LOSS_NAME = "mrcnn_nucleus_mask_loss"


class Config:
    """Base configuration; every attribute keeps Matterport's name and default."""

    NAME = None  # Override in sub-classes
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    TOP_DOWN_PYRAMID_SIZE = 256
    NUM_CLASSES = 1
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    MAX_GT_INSTANCES = 100
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    OPTIMIZER = "sgd"  # mrcnn_tf addition: "sgd" (Matterport) or "adam" (faster from random weights)
    # mrcnn_tf additions: "constant" (Matterport) or "cosine" (to zero over the epochs of each train()
    # call), after a linear warm-up of this many steps (mrcnn_tf/engine/lr_schedule.py).
    LEARNING_RATE_SCHEDULE = "constant"
    LEARNING_RATE_WARMUP_STEPS = 0
    WEIGHT_DECAY = 0.0001
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
    }
    USE_RPN_ROIS = True
    # False: frozen BN (inference statistics), Matterport's default for fine-tuning. None or True:
    # BN trains. A network started from random weights needs it on: frozen, it would have no normalisation at all.
    TRAIN_BN = False
    GRADIENT_CLIP_NORM = 5.0
    # mrcnn_tf additions (not in Matterport).
    # "mixed_float16" / "mixed_bfloat16": compute in 16 bits with float32 weights, losses, deltas and box math; "auto":
    # bfloat16 on a CPU where it runs faster than float32 (AMX, AMD's AVX512-BF16: engine/distribute.py), float32
    # elsewhere.
    MIXED_PRECISION = False
    # > 0: before each checkpoint, recompute BatchNorm moving statistics on this many training
    # batches (detectron2's PreciseBN; see mrcnn_tf/engine/precise_bn.py). For TRAIN_BN None from scratch.
    BN_STATS_BATCHES = 0
    # In (0, 1): the checkpoints (and the model after training) hold an exponential moving average of the
    # trained weights with this decay, ramped up over the first steps (mrcnn_tf/engine/weight_average.py); 0: the
    # weights of the last step, as Matterport.
    WEIGHT_EMA_DECAY = 0.0
    # True: `mrcnn-tf train` also fits a colour typer on the training cells' masks, and an inference model's
    # `load_weights` takes it from beside the checkpoint: `detect` (and `evaluate`) take each cell's type and score from
    # the colour inside its predicted mask (mrcnn_tf/inference/colour_typer.py); False: the class head.
    COLOUR_TYPING = False
    # The colour typer's features (mrcnn_tf/inference/colour_typer.py FEATURE_SETS): "colour+compartments" (the whole cell,
    # its nucleus and its cytoplasm apart) or "colour" (the whole cell only, for stains whose nucleus the split misses).
    COLOUR_TYPING_FEATURES = "colour+compartments"
    # True: one NMS over all classes, so an object is never reported under two classes (one cell,
    # one type); False: NMS per class, as Matterport.
    DETECTION_NMS_CLASS_AGNOSTIC = False
    # > 0: repeat-factor sampling of training images (LVIS / detectron2): an image whose rarest class is in
    # a share f < t of the images is shown about sqrt(t / f) times per pass (mrcnn_tf/data/sampling.py).
    REPEAT_FACTOR_THRESHOLD = 0.0
    # > 1: every training image is a k x k mosaic of k * k training images, each cropped to 1/k of the
    # side around its cells (mrcnn_tf/data/mosaic.py): k * k times the cells per step at the same cost.
    MOSAIC_TILES = 1
    # Memory per generator for loaded and resized images kept between epochs (data/image_cache.py; the
    # training set's is shared with PreciseBN): decoding and resizing are most of a mosaic step's input
    # time. 0: load every time (a dataset whose load_image draws new content per call needs 0). Not used in
    # the random "crop" resize mode.
    IMAGE_CACHE_MB = 1024
    # Augmentation applied by `mrcnn-tf train`, the demo and the benchmarks: "lisc", "bccd" or "none"
    # (mrcnn_tf/data/augment.py). `MaskRCNN.train` takes its `augmentation` argument as Matterport's did.
    AUGMENTATION = "lisc"
    # Widths of the RPN's shared 3x3 conv and of the mask head's four 3x3 convs and deconv (Matterport:
    # 512 and 256, fixed; COCO weights need those). On a CPU these two heads are most of a small
    # model's training step: DemoConfig narrows them.
    RPN_CONV_CHANNELS = 512
    MASK_HEAD_CHANNELS = 256
    # True: the mask head also predicts each detection's nucleus (a one-channel, class-agnostic 28x28 mask,
    # layer `mrcnn_nucleus_mask`), trained with `mrcnn_nucleus_mask_loss` on datasets with nucleus masks
    # (`has_nucleus`), and `detect` results gain `nucleus_masks`. False: the graphs, weights and outputs of Matterport.
    NUCLEUS_MASKS = False
    XLA = False  # XLA auto-clustering during `train` (whole-graph jit_compile fails: NMS has no XLA kernel)
    # Set by MaskRCNN when it builds (the CPU backend's choices there); saved in the JSON, never read back.
    CPU_KERNELS = None
    # What `mrcnn-tf train` measured in the training data and chose from it when no --config was given.
    FINGERPRINT = None

    def __init__(self):
        self.refresh()

    # ------------------------------------------------------------------ derived values
    def refresh(self):
        """Validate and recompute the derived attributes; call after changing attributes."""
        # Validate first: the derived values multiply and add attributes that may not be numbers.
        self.validate()
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array([self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM, self.IMAGE_CHANNEL_COUNT])
        else:
            self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, self.IMAGE_CHANNEL_COUNT])
        # image_id(1) + original shape(3) + molded shape(3) + window(4) + scale(1) + active ids(NUM_CLASSES)
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES
        if self.NUCLEUS_MASKS and NUCLEUS_LOSS_NAME not in self.LOSS_WEIGHTS:
            # A new dict on the instance (never the class default): the run's JSON records the weight used.
            self.LOSS_WEIGHTS = {**self.LOSS_WEIGHTS, NUCLEUS_LOSS_NAME: 1.0}
        return self

    # ------------------------------------------------------------------ validation
    def validate(self):
        """Raise `ConfigError` (one line: attribute, value, fix) on the first invalid attribute."""

        def fail(name, fix):
            raise ConfigError(f"Config.{name} = {_show(getattr(self, name))} is invalid: {fix}")

        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                fail(name, "use a whole number >= 1")

        def fraction(name, low_open=False):
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not ok or not (0 < value <= 1 if low_open else 0 <= value <= 1):
                fail(name, "use a number between 0 and 1")

        for name in ("GPU_COUNT", "IMAGES_PER_GPU", "STEPS_PER_EPOCH", "VALIDATION_STEPS", "NUM_CLASSES",
                     "RPN_ANCHOR_STRIDE", "RPN_TRAIN_ANCHORS_PER_IMAGE", "PRE_NMS_LIMIT",
                     "POST_NMS_ROIS_TRAINING", "POST_NMS_ROIS_INFERENCE", "IMAGE_CHANNEL_COUNT",
                     "TRAIN_ROIS_PER_IMAGE", "POOL_SIZE", "MASK_POOL_SIZE", "MAX_GT_INSTANCES",
                     "DETECTION_MAX_INSTANCES", "FPN_CLASSIF_FC_LAYERS_SIZE", "TOP_DOWN_PYRAMID_SIZE",
                     "RPN_CONV_CHANNELS", "MASK_HEAD_CHANNELS", "MOSAIC_TILES"):
            positive_int(name)
        if self.AUGMENTATION not in ("lisc", "bccd", "none"):
            fail("AUGMENTATION", "use lisc, bccd or none")
        for name in ("RPN_NMS_THRESHOLD", "DETECTION_MIN_CONFIDENCE", "DETECTION_NMS_THRESHOLD",
                     "LEARNING_MOMENTUM", "REPEAT_FACTOR_THRESHOLD"):
            fraction(name)
        fraction("ROI_POSITIVE_RATIO", low_open=True)
        if self.NAME is not None and (not isinstance(self.NAME, str) or not self.NAME.strip()):
            fail("NAME", "use a short non-empty string such as 'lisc'")
        if not callable(self.BACKBONE) and self.BACKBONE not in BACKBONES:
            fail("BACKBONE", f"use one of {', '.join(BACKBONES)} or a callable")
        if callable(self.BACKBONE) and self.COMPUTE_BACKBONE_SHAPE is None:
            fail("COMPUTE_BACKBONE_SHAPE", "a callable BACKBONE needs COMPUTE_BACKBONE_SHAPE(image_shape)")
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            fail("IMAGE_RESIZE_MODE", f"use one of {', '.join(RESIZE_MODES)}")
        if not _numbers(self.BACKBONE_STRIDES) or not all(_is_number(s) and s > 0 for s in self.BACKBONE_STRIDES):
            fail("BACKBONE_STRIDES", "give one positive stride per pyramid level, e.g. [4, 8, 16, 32, 64]")
        levels = len(self.BACKBONE_STRIDES)
        if not _numbers(self.RPN_ANCHOR_SCALES) or len(self.RPN_ANCHOR_SCALES) != levels:
            fail("RPN_ANCHOR_SCALES", f"give one scale per pyramid level ({levels}, as BACKBONE_STRIDES)")
        if any(s <= 0 for s in self.RPN_ANCHOR_SCALES):
            fail("RPN_ANCHOR_SCALES", "anchor sizes are positive pixel lengths")
        if not _numbers(self.RPN_ANCHOR_RATIOS) or not len(self.RPN_ANCHOR_RATIOS) \
                or any(r <= 0 for r in self.RPN_ANCHOR_RATIOS):
            fail("RPN_ANCHOR_RATIOS", "use positive width/height ratios such as [0.5, 1, 2]")
        if self.IMAGE_RESIZE_MODE in ("square", "pad64", "crop"):
            positive_int("IMAGE_MIN_DIM")
        if self.IMAGE_RESIZE_MODE in ("square", "crop") or self.IMAGE_RESIZE_MODE == "none":
            positive_int("IMAGE_MAX_DIM")
        dims = {"square": ("IMAGE_MAX_DIM",), "crop": ("IMAGE_MIN_DIM",), "pad64": ("IMAGE_MIN_DIM",),
                "none": ()}[self.IMAGE_RESIZE_MODE]
        for name in dims:
            if getattr(self, name) % 64:
                fail(name, f"image sizes must be divisible by 64 (try {math.ceil(getattr(self, name) / 64) * 64})")
        if self.IMAGE_RESIZE_MODE in ("square",) and self.IMAGE_MIN_DIM > self.IMAGE_MAX_DIM:
            fail("IMAGE_MIN_DIM", f"must not exceed IMAGE_MAX_DIM ({self.IMAGE_MAX_DIM})")
        if not _numbers(self.MEAN_PIXEL) or len(np.asarray(self.MEAN_PIXEL).reshape(-1)) != self.IMAGE_CHANNEL_COUNT:
            fail("MEAN_PIXEL", f"give one mean per channel ({self.IMAGE_CHANNEL_COUNT})")
        for name in ("RPN_BBOX_STD_DEV", "BBOX_STD_DEV"):
            std = getattr(self, name)
            if not _numbers(std) or np.asarray(std).shape != (4,) or np.any(np.asarray(std) <= 0):
                fail(name, "give four positive numbers (dy, dx, dh, dw)")
        if not _numbers(self.MASK_SHAPE) or list(self.MASK_SHAPE) != [2 * self.MASK_POOL_SIZE] * 2:
            side = 2 * self.MASK_POOL_SIZE
            fail("MASK_SHAPE", f"the mask head upsamples once: use [{side}, {side}]")
        if not _numbers(self.MINI_MASK_SHAPE) or len(self.MINI_MASK_SHAPE) != 2 \
                or any(int(s) != s or s < 1 for s in self.MINI_MASK_SHAPE):
            fail("MINI_MASK_SHAPE", "use two positive sizes such as (56, 56)")
        if not isinstance(self.LOSS_WEIGHTS, dict) or set(self.LOSS_WEIGHTS) - {NUCLEUS_LOSS_NAME} != set(LOSS_NAMES):
            fail("LOSS_WEIGHTS", f"give a weight for exactly these losses: {', '.join(LOSS_NAMES)} "
                                 f"(and optionally {NUCLEUS_LOSS_NAME})")
        if any(not _is_number(w) or w < 0 for w in self.LOSS_WEIGHTS.values()):
            fail("LOSS_WEIGHTS", "weights are numbers >= 0")
        if not _is_number(self.LEARNING_RATE) or self.LEARNING_RATE <= 0:
            fail("LEARNING_RATE", "use a positive number such as 0.001")
        if not _is_number(self.WEIGHT_DECAY) or self.WEIGHT_DECAY < 0:
            fail("WEIGHT_DECAY", "use a number >= 0")
        if not isinstance(self.COLOUR_TYPING, (bool, np.bool_)):
            fail("COLOUR_TYPING", "use true or false")
        if self.COLOUR_TYPING_FEATURES not in COLOUR_TYPING_FEATURE_SETS:
            fail("COLOUR_TYPING_FEATURES", f"use {' or '.join(COLOUR_TYPING_FEATURE_SETS)}")
        if not _is_number(self.WEIGHT_EMA_DECAY) or not 0 <= self.WEIGHT_EMA_DECAY < 1:
            fail("WEIGHT_EMA_DECAY", "use 0 (no average) or a decay in (0, 1) such as 0.99")
        if not _is_number(self.IMAGE_CACHE_MB) or self.IMAGE_CACHE_MB < 0:
            fail("IMAGE_CACHE_MB", "use megabytes >= 0 (0: no cache of resized training images)")
        if self.GRADIENT_CLIP_NORM is not None and (
                not _is_number(self.GRADIENT_CLIP_NORM) or self.GRADIENT_CLIP_NORM <= 0):
            fail("GRADIENT_CLIP_NORM", "use a positive number, or None for no clipping")
        if not _is_number(self.IMAGE_MIN_SCALE) or self.IMAGE_MIN_SCALE < 0:
            fail("IMAGE_MIN_SCALE", "use a number >= 0 (0 means no minimum)")
        if self.LEARNING_RATE_SCHEDULE not in ("constant", "cosine"):
            fail("LEARNING_RATE_SCHEDULE", "use constant (Matterport) or cosine")
        warmup = self.LEARNING_RATE_WARMUP_STEPS
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            fail("LEARNING_RATE_WARMUP_STEPS", "use a whole number of steps >= 0 (0: no warm-up)")
        if not isinstance(self.OPTIMIZER, str) or self.OPTIMIZER.lower() not in ("sgd", "adam"):
            fail("OPTIMIZER", "use 'sgd' (Matterport's SGD with momentum) or 'adam'")
        if self.TRAIN_BN not in (True, False, None) or not isinstance(self.TRAIN_BN, (bool, type(None))):
            fail("TRAIN_BN", "use False (frozen), True or None (trainable)")
        if self.MIXED_PRECISION not in (False, True, "mixed_float16", "mixed_bfloat16", "auto") \
                or not isinstance(self.MIXED_PRECISION, (bool, str)):
            fail("MIXED_PRECISION", "use False, True (mixed_float16), 'mixed_float16', 'mixed_bfloat16' or 'auto' "
                                    "(bfloat16 where the CPU runs it faster)")
        for name in ("XLA", "DETECTION_NMS_CLASS_AGNOSTIC", "NUCLEUS_MASKS"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                fail(name, "use true or false")
        value = self.BN_STATS_BATCHES
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            fail("BN_STATS_BATCHES", "use a whole number >= 0 (0: keep the moving averages of training)")
        if self.ROI_POSITIVE_RATIO * self.TRAIN_ROIS_PER_IMAGE < 1:
            fail("TRAIN_ROIS_PER_IMAGE", "ROI_POSITIVE_RATIO * TRAIN_ROIS_PER_IMAGE must allow >= 1 positive ROI")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self):
        """Every upper-case, non-callable attribute as JSON-friendly Python values (derived included)."""
        result = {}
        for name in dir(self):
            if not name.isupper() or name.startswith("_"):
                continue
            value = getattr(self, name)
            if callable(value) and not isinstance(value, type):
                value = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
            result[name] = _plain(value)
        return result

    @classmethod
    def from_dict(cls, values):
        """A config of this class with `values` applied (unknown keys are an error, derived keys ignored)."""
        config = cls.__new__(cls)
        for name, value in values.items():
            if name in DERIVED:
                continue
            if not isinstance(name, str) or not name.isupper() or not hasattr(cls, name):
                raise ConfigError(f"Config key {name!r} is unknown to {cls.__name__}: remove it or check the spelling")
            if name in ("BACKBONE", "COMPUTE_BACKBONE_SHAPE") and isinstance(value, str) and value not in BACKBONES:
                raise ConfigError(f"Config.{name} = {value!r} names a callable that cannot be restored from JSON: "
                                  "set it in Python on a Config subclass")
            try:
                setattr(config, name, value if name in LOOSE_TYPES else _like(getattr(cls, name), value))
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(f"Config key {name} = {value!r}: expected {type(getattr(cls, name)).__name__} "
                                  f"({exc}); fix or remove it") from None
        return config.refresh()

    def save_json(self, path):
        """Write `to_dict()` to `path` (atomically: a temporary file renamed over the target)."""
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def load_json(cls, path):
        """Read a config written by `save_json`; errors name the file."""
        path = pathlib.Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a JSON config ({exc}); re-create it or remove it") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config JSON must hold an object of KEY: value pairs")
        try:
            return cls.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ overrides
    def apply_overrides(self, pairs):
        """Apply ``["KEY=VALUE", ...]`` (the CLI's ``--set``): values parsed as JSON, type-checked.

        A bare word is taken as a string (``--set BACKBONE=resnet50``); a tuple attribute accepts a JSON
        list. Returns self, refreshed and validated. All or nothing: when any pair is invalid the
        `ConfigError` leaves the config exactly as it was.
        """
        saved = dict(self.__dict__)
        try:
            names = self._set_pairs(pairs)
            try:
                return self.refresh()
            except ConfigError as exc:
                if any(name in str(exc) for name in names):
                    raise
                # Another attribute no longer fits (MASK_SHAPE after MASK_POOL_SIZE): say which --set did it.
                raise ConfigError(f"{exc} (after --set {', '.join(names)})") from None
        except ConfigError:
            # Instance attributes shadow the class defaults: restoring the dict undoes every setattr.
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _set_pairs(self, pairs):
        """Set each ``KEY=VALUE`` (type-checked, not yet validated); returns the names set."""
        names = []
        for pair in pairs:
            if "=" not in pair:
                raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. --set IMAGES_PER_GPU=1")
            name, text = (part.strip() for part in pair.split("=", 1))
            name = name.upper()
            if name == "CPU_KERNELS":
                raise ConfigError("--set CPU_KERNELS: a record of the backend's choices; choose them with "
                                  "MRCNN_TF_CONV_FILTER_GRAD=auto|matmul|native and MRCNN_TF_CONV_BANDS=auto|off")
            if name in DERIVED:
                raise ConfigError(f"--set {name}: derived from other settings; set "
                                  "IMAGES_PER_GPU/GPU_COUNT, IMAGE_MAX_DIM/IMAGE_MIN_DIM or NUM_CLASSES instead")
            if not hasattr(type(self), name) or not name.isupper():
                raise ConfigError(f"--set {name}: unknown config key; see `Config().display()` for the list")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            current = getattr(self, name)
            try:
                setattr(self, name, value if name in LOOSE_TYPES else _like(current, value))
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(f"--set {name}={text}: expected {type(current).__name__} ({exc})") from None
            names.append(name)
        return names

    def display(self):
        """Print every configuration value, Matterport style."""
        print("\nConfigurations:")
        for name, value in sorted(self.to_dict().items()):
            print(f"{name:30} {value}")
        print("\n")


def _show(value, limit=80):
    """A one-line repr for messages (numpy arrays print over several lines)."""
    text = " ".join(repr(value.tolist() if isinstance(value, np.ndarray) else value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_number(value):
    """A finite real number (bools and NaN/inf are not)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(value)


def _numbers(values):
    """True for a list/tuple/array whose items are all finite real numbers (so comparisons cannot raise)."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "iuf" and bool(np.all(np.isfinite(values)))
    return isinstance(values, (list, tuple)) and all(_is_number(v) for v in values)


def _plain(value):
    """A JSON-friendly copy of a config value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _like(current, value):
    """`value` converted to the type of the class default `current`, or TypeError/ValueError."""
    if current is None or value is None or callable(current):
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{value!r} is not true/false")
        return value
    if isinstance(current, np.ndarray):
        array = np.asarray(value, dtype=current.dtype)
        if array.ndim != current.ndim:
            raise ValueError(f"{value!r} does not have the shape of {current.tolist()!r}")
        return array
    if isinstance(current, (tuple, list)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{value!r} is not a list")
        return type(current)(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{value!r} is not an object")
        return {k: float(v) if isinstance(current.get(k), float) else v for k, v in value.items()}
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{value!r} is not a number")
        return float(value)
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise TypeError(f"{value!r} is not a whole number")
        return int(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise TypeError(f"{value!r} is not text")
        return value
    return value

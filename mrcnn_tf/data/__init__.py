"""Data side of mrcnn_tf: the `Dataset` base, LISC file format, training targets, augmentation, pipeline.

Names are imported on first use, so ``import mrcnn_tf.data`` stays light: `DataGenerator` pulls in
Keras/TensorFlow and the augmentation pulls in imgaug/OpenCV only when asked for.
"""
import importlib

_EXPORTS = {
    "Dataset": "mrcnn_tf.data.dataset",
    "load_image_gt": "mrcnn_tf.data.targets",
    "build_rpn_targets": "mrcnn_tf.data.targets",
    "generate_random_rois": "mrcnn_tf.data.roi_targets",
    "MASK_AUGMENTERS": "mrcnn_tf.data.augment",
    "augment_image_and_masks": "mrcnn_tf.data.augment",
    "lisc_augmentation": "mrcnn_tf.data.augment",
    "DataGenerator": "mrcnn_tf.data.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mrcnn_tf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

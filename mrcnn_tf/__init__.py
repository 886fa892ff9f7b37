"""mrcnn_tf: Matterport's Mask R-CNN rebuilt on Keras 3 / TensorFlow 2.21, applied to white blood cells.

A Matterport user changes one import::

    from mrcnn_tf.config import Config
    from mrcnn_tf import model as modellib, utils, visualize
"""
from mrcnn_tf.backend import runtime as _runtime

# Before TensorFlow is imported (it reads these once): oneDNN kernels on every x86 CPU, not only on
# AVX512-VNNI ones (5x faster training on AVX2-only CPUs), and TensorFlow's C++ start-up chatter kept
# to errors. A user's own settings win. See mrcnn_tf/backend/runtime.py.
_runtime.configure_environment()
_runtime.check_onednn()

__version__ = "0.1.0"

"""mrcnn_tf: Matterport's Mask R-CNN rebuilt on Keras 3 / TensorFlow 2.21, applied to white blood cells.

A Matterport user changes one import::

    from mrcnn_tf.config import Config
    from mrcnn_tf import model as modellib, utils, visualize
"""
import os as _os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) buries our own messages; keep errors only
# unless the user asked for something else.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

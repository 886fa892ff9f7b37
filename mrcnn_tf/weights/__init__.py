"""Weight files: Matterport's Keras-2 HDF5 (`mask_rcnn_coco.h5`) and ImageNet start points.

`matterport_h5` reads Matterport's layout (and our own checkpoints) by layer name and reports what it loaded;
`imagenet` maps today's `keras.applications` ResNets onto the backbone's Matterport names.
"""
from mrcnn_tf.weights.imagenet import get_imagenet_weights, load_imagenet_weights
from mrcnn_tf.weights.matterport_h5 import (LoadReport, check_weights_file, coco_exclude_for, get_coco_weights,
                                            load_coco_weights, load_weights)

__all__ = ["LoadReport", "check_weights_file", "coco_exclude_for", "get_coco_weights", "get_imagenet_weights",
           "load_coco_weights", "load_imagenet_weights", "load_weights"]

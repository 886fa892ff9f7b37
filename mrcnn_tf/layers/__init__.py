"""Mask R-CNN's custom Keras 3 layers (one per file); they run TensorFlow ops in `call`."""
from mrcnn_tf.layers.anchors import Anchors
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.layers.detection import DetectionLayer
from mrcnn_tf.layers.detection_target import DetectionTargetLayer
from mrcnn_tf.layers.norm_boxes import NormBoxes
from mrcnn_tf.layers.proposal import ProposalLayer
from mrcnn_tf.layers.roi_align import PyramidROIAlign

__all__ = ["Anchors", "BatchNorm", "DetectionLayer", "DetectionTargetLayer", "NormBoxes", "ProposalLayer",
           "PyramidROIAlign"]

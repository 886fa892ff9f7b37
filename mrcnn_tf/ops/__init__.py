"""Pure numpy operations: boxes, anchors, masks and image resizing (Matterport's ``utils`` maths).

The TensorFlow twins used inside layers live in `mrcnn_tf.ops.graph` and are not imported here,
so the numpy helpers load without TensorFlow.
"""
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_anchors, generate_pyramid_anchors
from mrcnn_tf.ops.boxes import (apply_box_deltas, box_refinement, compute_iou, compute_overlaps,
                                compute_overlaps_masks, denorm_boxes, extract_bboxes, non_max_suppression,
                                norm_boxes, trim_zeros)
from mrcnn_tf.ops.image import (compose_image_meta, mold_image, parse_image_meta, resize_image,
                                unmold_image)
from mrcnn_tf.ops.masks import MaskError, expand_mask, minimize_mask, resize, resize_mask, unmold_mask

__all__ = [
    "apply_box_deltas", "box_refinement", "compose_image_meta", "compute_backbone_shapes", "compute_iou",
    "compute_overlaps", "compute_overlaps_masks", "denorm_boxes", "expand_mask", "extract_bboxes",
    "generate_anchors", "generate_pyramid_anchors", "MaskError", "minimize_mask", "mold_image",
    "non_max_suppression", "norm_boxes", "parse_image_meta", "resize", "resize_image", "resize_mask",
    "trim_zeros", "unmold_image", "unmold_mask",
]

"""Matterport's ``mrcnn.utils`` names, so ``from mrcnn_tf import utils`` is a drop-in replacement.

Everything here is re-exported from where it lives: numpy box, anchor, mask and image operations
from `mrcnn_tf.ops` (`batch_slice` and `mold_mask` from `mrcnn_tf.ops.compat`; `box_refinement_graph`
from the tf twins, loaded with TensorFlow only when asked for), the `Dataset` base class from
`mrcnn_tf.data.dataset`, the per-image AP family from `mrcnn_tf.evaluation.matching`, and the COCO
weight download from `mrcnn_tf.weights.matterport_h5`.
"""
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.evaluation.matching import compute_ap, compute_ap_range, compute_matches, compute_recall
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_anchors, generate_pyramid_anchors
from mrcnn_tf.ops.boxes import (apply_box_deltas, box_refinement, compute_iou, compute_overlaps,
                                compute_overlaps_masks, denorm_boxes, extract_bboxes, non_max_suppression,
                                norm_boxes, trim_zeros)
from mrcnn_tf.ops.compat import batch_slice, mold_mask
from mrcnn_tf.ops.image import (compose_image_meta, mold_image, parse_image_meta, resize_image,
                                unmold_image)
from mrcnn_tf.ops.masks import expand_mask, minimize_mask, resize, resize_mask, unmold_mask
from mrcnn_tf.weights.matterport_h5 import COCO_MODEL_URL, download_trained_weights

__all__ = [
    "Dataset",
    "compute_ap", "compute_ap_range", "compute_matches", "compute_recall",
    "apply_box_deltas", "box_refinement", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "denorm_boxes", "extract_bboxes", "non_max_suppression", "norm_boxes", "trim_zeros",
    "compute_backbone_shapes", "generate_anchors", "generate_pyramid_anchors",
    "expand_mask", "minimize_mask", "mold_mask", "resize", "resize_mask", "unmold_mask",
    "batch_slice", "box_refinement_graph",
    "compose_image_meta", "mold_image", "parse_image_meta", "resize_image", "unmold_image",
    "COCO_MODEL_URL", "download_trained_weights",
]


def __getattr__(name):
    # PEP 562: the one TensorFlow function here loads TensorFlow on first use, not at import.
    if name == "box_refinement_graph":
        from mrcnn_tf.ops.graph import box_refinement_graph

        return box_refinement_graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

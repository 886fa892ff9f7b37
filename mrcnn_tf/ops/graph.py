"""TensorFlow twins of the numpy box / anchor / meta helpers, for use inside `Layer.call` only.

Every function here takes and returns `tf.Tensor`s (Keras 3 rejects raw `tf.*` calls on symbolic
Keras tensors, so call them from a layer's ``call`` or another tf function). Boxes are
``(y1, x1, y2, x2)`` in Matterport's *normalized* coordinates unless a docstring says pixels:
``norm_boxes_graph`` divides by ``(H - 1, W - 1)`` after shifting the exclusive pixel y2/x2 by -1.
"""
import math

import numpy as np
import tensorflow as tf

from mrcnn_tf.ops.boxes import BOX_SCALE_CLIP


def apply_box_deltas_graph(boxes, deltas):
    """Apply (dy, dx, log(dh), log(dw)) refinements to boxes (any coordinates, any leading dims).

    Args:
        boxes: [..., 4] (y1, x1, y2, x2).
        deltas: [..., 4] (dy, dx, log(dh), log(dw)), already multiplied by the std-dev.

    Returns:
        [..., 4] refined boxes, same coordinates as `boxes`; log(dh) and log(dw) are capped at `BOX_SCALE_CLIP`.
    """
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
    height = y2 - y1
    width = x2 - x1
    # Shift the centre in units of the box size, scale the size in log space.
    center_y = y1 + 0.5 * height + dy * height
    center_x = x1 + 0.5 * width + dx * width
    height = height * tf.exp(tf.minimum(dh, BOX_SCALE_CLIP))
    width = width * tf.exp(tf.minimum(dw, BOX_SCALE_CLIP))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return tf.stack([y1, x1, y1 + height, x1 + width], axis=-1)


def clip_boxes_graph(boxes, window):
    """Clip boxes to a window (same coordinates as the boxes).

    Args:
        boxes: [..., 4] (y1, x1, y2, x2).
        window: [4] (wy1, wx1, wy2, wx2), or [..., 4] broadcastable to `boxes`.

    Returns:
        [..., 4] boxes with every coordinate inside the window.
    """
    window = tf.cast(window, boxes.dtype)
    wy1, wx1, wy2, wx2 = tf.unstack(window, axis=-1)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    y1 = tf.maximum(tf.minimum(y1, wy2), wy1)
    x1 = tf.maximum(tf.minimum(x1, wx2), wx1)
    y2 = tf.maximum(tf.minimum(y2, wy2), wy1)
    x2 = tf.maximum(tf.minimum(x2, wx2), wx1)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def overlaps_graph(boxes1, boxes2):
    """IoU matrix between two sets of boxes (any coordinates, as long as both agree).

    Args:
        boxes1: [N, 4] (y1, x1, y2, x2).
        boxes2: [M, 4].

    Returns:
        [N, M] IoU; 0 where the union is empty (two degenerate boxes) instead of Matterport's NaN.
    """
    b1 = tf.expand_dims(boxes1, 1)
    b2 = tf.expand_dims(boxes2, 0)
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    intersection = tf.maximum(y2 - y1, 0.0) * tf.maximum(x2 - x1, 0.0)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = area1 + area2 - intersection
    return tf.math.divide_no_nan(intersection, union)


def box_refinement_graph(box, gt_box):
    """Deltas (dy, dx, log(dh), log(dw)) that turn `box` into `gt_box` (any coordinates).

    Args:
        box: [N, 4] (y1, x1, y2, x2).
        gt_box: [N, 4] targets, same coordinates.

    Returns:
        float32 [N, 4] deltas (not yet divided by the std-dev).
    """
    box = tf.cast(box, tf.float32)
    gt_box = tf.cast(gt_box, tf.float32)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    return tf.stack([(gt_center_y - center_y) / height, (gt_center_x - center_x) / width,
                     tf.math.log(gt_height / height), tf.math.log(gt_width / width)], axis=1)


def _norm_scale_shift(shape, dtype):
    # [..., 2] (height, width) -> [..., 4] scale, so per-image shapes [B, 2] work with [B, 4] boxes.
    shape = tf.cast(shape, dtype)[..., :2]
    scale = tf.concat([shape, shape], axis=-1) - 1.0
    shift = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=dtype)
    return scale, shift


def norm_boxes_graph(boxes, shape):
    """Pixel boxes -> normalized boxes (Matterport's convention).

    Args:
        boxes: [..., 4] pixel (y1, x1, y2, x2), y2/x2 exclusive.
        shape: [2] (height, width) of the image the boxes live in (tensor or sequence), or
            [..., 2] per-image shapes that broadcast with the leading dims of `boxes` (extra
            trailing entries such as channels are ignored).

    Returns:
        float32 [..., 4] normalized boxes: (y1, x1, y2 - 1, x2 - 1) / (H - 1, W - 1), y2/x2 inclusive.
    """
    boxes = tf.cast(boxes, tf.float32)
    scale, shift = _norm_scale_shift(shape, tf.float32)
    return (boxes - shift) / scale


def denorm_boxes_graph(boxes, shape):
    """Normalized boxes -> int32 pixel boxes (y2/x2 exclusive); inverse of `norm_boxes_graph`.

    Args:
        boxes: [..., 4] normalized (y1, x1, y2, x2).
        shape: [2] (height, width) of the target image, or [..., 2] as in `norm_boxes_graph`.

    Returns:
        int32 [..., 4] pixel boxes, rounded to the nearest pixel.
    """
    boxes = tf.cast(boxes, tf.float32)
    scale, shift = _norm_scale_shift(shape, tf.float32)
    return tf.cast(tf.round(boxes * scale + shift), tf.int32)


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Drop all-zero rows (the padding of fixed-size box tensors).

    Args:
        boxes: [N, 4] boxes (any coordinates).
        name: op name scope.

    Returns:
        (boxes [M, 4] without the zero rows, non_zeros [N] bool, True for kept rows).
    """
    with tf.name_scope(name):
        non_zeros = tf.reduce_sum(tf.abs(boxes), axis=1) > 0
        return tf.boolean_mask(boxes, non_zeros), non_zeros


def batch_pack_graph(x, counts, num_rows=None):
    """Concatenate the first counts[i] rows of every x[i] (vectorized Matterport helper).

    Args:
        x: [B, N, ...] tensor.
        counts: [B] integer row counts (each <= N).
        num_rows: optional Python int; only the first `num_rows` images are packed (Matterport
            passed the batch size here).

    Returns:
        [sum(counts), ...] rows of x in batch order.
    """
    if num_rows is not None:
        x = x[:num_rows]
        counts = counts[:num_rows]
    keep = tf.sequence_mask(tf.cast(counts, tf.int32), maxlen=tf.shape(x)[1])
    return tf.boolean_mask(x, keep)


def parse_image_meta_graph(meta):
    """Split image_meta rows into their named parts (layout of `compose_image_meta`).

    Args:
        meta: [B, 12 + NUM_CLASSES] image_id(1), original_image_shape(3), image_shape(3) of the
            molded image, window(4) in pixels of the molded image, scale(1), active_class_ids.

    Returns:
        dict of tensors: image_id [B], original_image_shape [B, 3], image_shape [B, 3],
        window [B, 4] (pixels), scale [B], active_class_ids [B, NUM_CLASSES].
    """
    return {
        "image_id": meta[:, 0],
        "original_image_shape": meta[:, 1:4],
        "image_shape": meta[:, 4:7],
        "window": meta[:, 7:11],
        "scale": meta[:, 11],
        "active_class_ids": meta[:, 12:],
    }


def log2_graph(x):
    """Base-2 logarithm (float)."""
    return tf.math.log(x) / math.log(2.0)


def pyramid_anchor_count(scales, ratios, image_shape, feature_strides, anchor_stride):
    """Number of anchors `generate_pyramid_anchors_graph` returns for a static (H, W).

    Args:
        scales, ratios, feature_strides, anchor_stride: as `generate_pyramid_anchors_graph`.
        image_shape: (height, width) Python ints.

    Returns:
        Python int.
    """
    total = 0
    for stride in feature_strides:
        rows = math.ceil(math.ceil(image_shape[0] / stride) / anchor_stride)
        cols = math.ceil(math.ceil(image_shape[1] / stride) / anchor_stride)
        total += rows * cols * len(ratios)
    return total


def generate_pyramid_anchors_graph(scales, ratios, image_shape, feature_strides, anchor_stride):
    """In-graph twin of numpy ``generate_pyramid_anchors`` followed by ``norm_boxes``.

    Feature map sizes are ``ceil(H / stride), ceil(W / stride)`` (Matterport's
    ``compute_backbone_shapes`` for the built-in ResNets). One scale per level; anchor centres at
    the top-left corner of each cell (no half-stride offset), as Matterport.

    Args:
        scales: one anchor side length in pixels per pyramid level, e.g. (32, 64, 128, 256, 512).
        ratios: width/height ratios, e.g. [0.5, 1, 2].
        image_shape: [2] (height, width) of the molded image (int tensor or sequence).
        feature_strides: stride of each level, e.g. [4, 8, 16, 32, 64].
        anchor_stride: place anchors on every `anchor_stride`-th cell.

    Returns:
        float32 [A, 4] normalized (y1, x1, y2, x2) anchors, level by level, then row, column, ratio.
    """
    image_shape = tf.cast(image_shape, tf.int32)
    height, width = image_shape[0], image_shape[1]
    sqrt_ratios = np.sqrt(np.asarray(ratios, dtype=np.float64))
    levels = []
    for scale, stride in zip(scales, feature_strides):
        rows = (height + stride - 1) // stride  # ceil(H / stride)
        cols = (width + stride - 1) // stride
        shifts_y = tf.cast(tf.range(0, rows, anchor_stride) * stride, tf.float32)
        shifts_x = tf.cast(tf.range(0, cols, anchor_stride) * stride, tf.float32)
        center_y, center_x = tf.meshgrid(shifts_y, shifts_x, indexing="ij")
        centers = tf.reshape(tf.stack([center_y, center_x], axis=-1), [-1, 1, 2])
        # Sizes are Python constants (float64 maths, as numpy) for this level's scale.
        sizes = np.stack([scale / sqrt_ratios, scale * sqrt_ratios], axis=-1)[np.newaxis]
        sizes = tf.constant(sizes, dtype=tf.float32)
        boxes = tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=-1)
        levels.append(tf.reshape(boxes, [-1, 4]))
    return norm_boxes_graph(tf.concat(levels, axis=0), image_shape)

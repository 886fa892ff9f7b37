"""Anchor boxes in numpy, laid out exactly as Matterport's (the RPN weights depend on the order).

Anchors are pixel boxes (y1, x1, y2, x2). Centres sit at each feature cell's top-left pixel
(``i * feature_stride``), not at the cell centre: Matterport's COCO weights were trained that way.
"""
import math

import numpy as np

from mrcnn_tf.config import BACKBONES
from mrcnn_tf.errors import ConfigError


def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one pyramid level.

    Args:
        scales: anchor side length(s) in pixels (a number or a 1-D list).
        ratios: width / height ratios, e.g. [0.5, 1, 2].
        shape: (rows, cols) of the feature map.
        feature_stride: pixels per feature cell.
        anchor_stride: place anchors on every `anchor_stride`-th cell.

    Returns:
        float [rows' * cols' * len(scales) * len(ratios), 4] pixel boxes (y1, x1, y2, x2); position-major
        (row by row, then column), then ratio, then scale.
    """
    # Ratio-major, scale-minor, as a meshgrid of (scales, ratios) flattened.
    scales, ratios = np.meshgrid(np.atleast_1d(np.asarray(scales, dtype=np.float64)),
                                 np.atleast_1d(np.asarray(ratios, dtype=np.float64)))
    scales = scales.ravel()
    ratios = ratios.ravel()
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)

    centers_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    centers_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    centers_x, centers_y = np.meshgrid(centers_x, centers_y)  # [rows, cols], row-major positions
    centers_y = centers_y.reshape(-1, 1)
    centers_x = centers_x.reshape(-1, 1)
    # [positions, shapes] -> flatten to position-major order.
    y1 = (centers_y - 0.5 * heights[None, :]).ravel()
    x1 = (centers_x - 0.5 * widths[None, :]).ravel()
    y2 = (centers_y + 0.5 * heights[None, :]).ravel()
    x2 = (centers_x + 0.5 * widths[None, :]).ravel()
    return np.stack([y1, x1, y2, x2], axis=1)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    """Anchors of every pyramid level, concatenated level by level (scale i goes with level i).

    Args:
        scales: one anchor size per level, e.g. (32, 64, 128, 256, 512).
        ratios: width / height ratios shared by all levels.
        feature_shapes: [levels, 2] feature-map (rows, cols), e.g. from `compute_backbone_shapes`.
        feature_strides: pixels per feature cell for each level, e.g. [4, 8, 16, 32, 64].
        anchor_stride: anchor every `anchor_stride`-th cell.

    Returns:
        float [A, 4] pixel boxes (y1, x1, y2, x2); 261,888 anchors for a 1024x1024 image with the
        default config.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ConfigError(f"RPN_ANCHOR_SCALES has {len(scales)} sizes but there are {len(feature_shapes)} "
                          f"feature maps and {len(feature_strides)} BACKBONE_STRIDES: give one per level")
    levels = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
              for i in range(len(scales))]
    return np.concatenate(levels, axis=0)


def compute_backbone_shapes(config, image_shape):
    """Feature-map (rows, cols) of every pyramid level for an image of `image_shape`.

    Args:
        config: a `Config`; a callable BACKBONE delegates to ``config.COMPUTE_BACKBONE_SHAPE``.
        image_shape: (height, width[, channels]) of the molded image.

    Returns:
        int [levels, 2] array, ``ceil(H / stride), ceil(W / stride)`` per BACKBONE_STRIDES.
    """
    if callable(config.BACKBONE):
        if config.COMPUTE_BACKBONE_SHAPE is None:
            raise ConfigError("Config.COMPUTE_BACKBONE_SHAPE is None: a callable BACKBONE needs "
                              "COMPUTE_BACKBONE_SHAPE(image_shape)")
        return config.COMPUTE_BACKBONE_SHAPE(image_shape)
    if config.BACKBONE not in BACKBONES:
        raise ConfigError(f"Config.BACKBONE = {config.BACKBONE!r} is invalid: use one of "
                          f"{', '.join(BACKBONES)} or a callable")
    return np.array([[int(math.ceil(image_shape[0] / stride)), int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])

"""mrcnn_tf.ops.anchors: Matterport's anchor layout (counts, order, exact corners)."""
import math

import numpy as np
import pytest

from mrcnn_tf.config import Config
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_anchors, generate_pyramid_anchors

R2 = math.sqrt(2.0)


def ref_anchors(scale, ratios, shape, feature_stride, anchor_stride):
    """Loop version: rows, then columns, then ratios; centre at the cell's top-left pixel."""
    out = []
    for row in range(0, shape[0], anchor_stride):
        for col in range(0, shape[1], anchor_stride):
            cy, cx = row * feature_stride, col * feature_stride
            for ratio in ratios:
                h, w = scale / math.sqrt(ratio), scale * math.sqrt(ratio)
                out.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    return np.array(out).reshape(-1, 4)


def test_generate_anchors_hand_corners():
    a = generate_anchors(32, [0.5, 1, 2], (2, 2), 4, 1)
    assert a.shape == (12, 4)
    # Position (0, 0): ratio 0.5 is tall (h = 32 * sqrt 2), ratio 2 is wide.
    np.testing.assert_allclose(a[0], [-16 * R2, -8 * R2, 16 * R2, 8 * R2])
    np.testing.assert_allclose(a[1], [-16, -16, 16, 16])
    np.testing.assert_allclose(a[2], [-8 * R2, -16 * R2, 8 * R2, 16 * R2])
    # Position (0, 1) -> centre x = 4; position (1, 0) -> centre y = 4 (row-major order).
    np.testing.assert_allclose(a[4], [-16, -12, 16, 20])
    np.testing.assert_allclose(a[7], [-12, -16, 20, 16])


@pytest.mark.parametrize("shape, feature_stride, anchor_stride", [((5, 7), 8, 1), ((6, 4), 16, 2), ((3, 3), 4, 3)])
def test_generate_anchors_matches_reference(shape, feature_stride, anchor_stride):
    ratios = [0.5, 1, 2, 3]
    got = generate_anchors(48, ratios, shape, feature_stride, anchor_stride)
    np.testing.assert_allclose(got, ref_anchors(48, ratios, shape, feature_stride, anchor_stride))


def test_generate_anchors_several_scales_are_ratio_major():
    got = generate_anchors([16, 32], [1, 4], (1, 1), 4, 1)
    # meshgrid(scales, ratios) order: (r=1,s=16), (r=1,s=32), (r=4,s=16), (r=4,s=32)
    np.testing.assert_allclose(got, [[-8, -8, 8, 8], [-16, -16, 16, 16], [-4, -16, 4, 16], [-8, -32, 8, 32]])


def test_generate_anchors_empty_feature_map():
    assert generate_anchors(32, [1], (0, 5), 4, 1).shape == (0, 4)


def test_default_config_1024_gives_261888_anchors_with_exact_corners():
    config = Config()
    shapes = compute_backbone_shapes(config, (1024, 1024, 3))
    np.testing.assert_array_equal(shapes, [[256, 256], [128, 128], [64, 64], [32, 32], [16, 16]])
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, shapes,
                                       config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    assert anchors.shape == (261888, 4)
    # First anchor: level P2, cell (0, 0), ratio 0.5, size 32.
    np.testing.assert_allclose(anchors[0], [-16 * R2, -8 * R2, 16 * R2, 8 * R2])
    # P2, cell (0, 1), ratio 1: centre (0, 4).
    np.testing.assert_allclose(anchors[4], [-16, -12, 16, 20])
    # First anchor of P3 comes after 256 * 256 * 3 P2 anchors: size 64, ratio 0.5.
    np.testing.assert_allclose(anchors[196608], [-32 * R2, -16 * R2, 32 * R2, 16 * R2])
    # Last anchor: P6, cell (15, 15) -> centre (960, 960), size 512, ratio 2.
    np.testing.assert_allclose(anchors[-1], [960 - 128 * R2, 960 - 256 * R2, 960 + 128 * R2, 960 + 256 * R2])


def test_pyramid_matches_per_level_reference():
    shapes = [[4, 6], [2, 3]]
    got = generate_pyramid_anchors((8, 16), [0.5, 1, 2], shapes, [4, 8], 1)
    expected = np.concatenate([ref_anchors(8, [0.5, 1, 2], shapes[0], 4, 1),
                               ref_anchors(16, [0.5, 1, 2], shapes[1], 8, 1)])
    np.testing.assert_allclose(got, expected)


def test_pyramid_level_count_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="RPN_ANCHOR_SCALES"):
        generate_pyramid_anchors((8, 16, 32), [1], [[4, 4], [2, 2]], [4, 8], 1)


def test_backbone_shapes_round_up():
    shapes = compute_backbone_shapes(Config(), (100, 130))
    np.testing.assert_array_equal(shapes, [[25, 33], [13, 17], [7, 9], [4, 5], [2, 3]])


def test_backbone_shapes_callable_backbone_uses_compute_backbone_shape():
    config = Config()
    config.BACKBONE = lambda image, stage5=False, train_bn=False: image
    config.COMPUTE_BACKBONE_SHAPE = lambda image_shape: np.array([[image_shape[0] // 2, image_shape[1] // 2]])
    np.testing.assert_array_equal(compute_backbone_shapes(config, (64, 32, 3)), [[32, 16]])
    config.COMPUTE_BACKBONE_SHAPE = None
    with pytest.raises(ConfigError, match="COMPUTE_BACKBONE_SHAPE"):
        compute_backbone_shapes(config, (64, 32, 3))

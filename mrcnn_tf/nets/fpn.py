"""Feature Pyramid Network top-down path with Matterport's layer names.

`fpn_c5p5 … fpn_c2p2` (1x1 lateral convolutions) and `fpn_p2 … fpn_p5` (3x3 smoothing) carry weights
in `mask_rcnn_coco.h5`; the add / upsample layers keep Matterport's names too so notebooks that
ask `run_graph` for `fpn_p4add` still find them.
"""
from keras import layers

from mrcnn_tf.layers.conv2d import Conv2D


def fpn_graph(c2, c3, c4, c5, pyramid_size=256):
    """Top-down FPN over ResNet stages 2-5.

    Args:
        c2, c3, c4, c5: backbone feature maps at strides 4, 8, 16, 32.
        pyramid_size: channels of every pyramid level (config.TOP_DOWN_PYRAMID_SIZE).

    Returns:
        [P2, P3, P4, P5, P6] with `pyramid_size` channels at strides 4, 8, 16, 32, 64. P6 is P5
        subsampled by a 1x1 max-pool of stride 2 (it only feeds the RPN).
    """
    p5 = Conv2D(pyramid_size, (1, 1), name="fpn_c5p5")(c5)
    p4 = layers.Add(name="fpn_p4add")([
        layers.UpSampling2D(size=(2, 2), name="fpn_p5upsampled")(p5),
        Conv2D(pyramid_size, (1, 1), name="fpn_c4p4")(c4)])
    p3 = layers.Add(name="fpn_p3add")([
        layers.UpSampling2D(size=(2, 2), name="fpn_p4upsampled")(p4),
        Conv2D(pyramid_size, (1, 1), name="fpn_c3p3")(c3)])
    p2 = layers.Add(name="fpn_p2add")([
        layers.UpSampling2D(size=(2, 2), name="fpn_p3upsampled")(p3),
        Conv2D(pyramid_size, (1, 1), name="fpn_c2p2")(c2)])
    # 3x3 convolutions on every level reduce the aliasing of the upsampling.
    p2 = Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p2")(p2)
    p3 = Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p3")(p3)
    p4 = Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p4")(p4)
    p5 = Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p5")(p5)
    p6 = layers.MaxPooling2D(pool_size=(1, 1), strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]

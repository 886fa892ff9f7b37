"""ResNet-50 / ResNet-101 backbone with Matterport's exact layer names.

Layer names are part of the weight format: `mask_rcnn_coco.h5` (and Keras' old ImageNet ResNet50 h5)
is loaded by name, so every conv / BatchNorm keeps Matterport's `res{stage}{block}_branch{2a,2b,2c,1}`
/ `bn{stage}{block}_branch…` names, and every convolution keeps its bias (the COCO file stores one).
"""
from keras import layers

from mrcnn_tf.errors import ConfigError
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.layers.conv2d import Conv2D

# Identity blocks after block "a" in stage 4: 5 (b-f) for ResNet-50, 22 (b-w) for ResNet-101.
STAGE4_IDENTITY_BLOCKS = {"resnet50": 5, "resnet101": 22}


def _names(stage, block):
    """(conv name base, BatchNorm name base) of one bottleneck block."""
    return f"res{stage}{block}_branch", f"bn{stage}{block}_branch"


def _bottleneck_branch(input_tensor, kernel_size, filters, stage, block, strides, use_bias, train_bn):
    """The 1x1 -> kxk -> 1x1 main branch shared by both block kinds (no final activation)."""
    f1, f2, f3 = filters
    conv, bn = _names(stage, block)
    x = Conv2D(f1, (1, 1), strides=strides, name=conv + "2a", use_bias=use_bias)(input_tensor)
    x = BatchNorm(name=bn + "2a")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    x = Conv2D(f2, (kernel_size, kernel_size), padding="same", name=conv + "2b", use_bias=use_bias)(x)
    x = BatchNorm(name=bn + "2b")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    x = Conv2D(f3, (1, 1), name=conv + "2c", use_bias=use_bias)(x)
    return BatchNorm(name=bn + "2c")(x, training=train_bn)


def identity_block(input_tensor, kernel_size, filters, stage, block, use_bias=True, train_bn=True):
    """Bottleneck block whose shortcut is the input itself.

    Args:
        input_tensor: [B, H, W, C] feature map with C == filters[2].
        kernel_size: side of the middle convolution.
        filters: (f1, f2, f3) output channels of the 1x1, kxk and 1x1 convolutions.
        stage: stage number (2..5), used in layer names.
        block: block letter ('b', 'c', ...), used in layer names.
        use_bias: give the convolutions a bias (Matterport: True).
        train_bn: the `training` argument passed to every BatchNorm (False freezes it).

    Returns:
        [B, H, W, f3] tensor named `res{stage}{block}_out`.
    """
    x = _bottleneck_branch(input_tensor, kernel_size, filters, stage, block, (1, 1), use_bias, train_bn)
    x = layers.Add()([x, input_tensor])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def conv_block(input_tensor, kernel_size, filters, stage, block, strides=(2, 2), use_bias=True, train_bn=True):
    """Bottleneck block with a 1x1 projection shortcut (`_branch1`); first block of each stage.

    Args:
        input_tensor: [B, H, W, C] feature map.
        kernel_size, filters, stage, block, use_bias, train_bn: as `identity_block`.
        strides: stride of the first 1x1 convolution and of the shortcut ((1, 1) in stage 2).

    Returns:
        [B, H / s, W / s, f3] tensor named `res{stage}{block}_out`.
    """
    x = _bottleneck_branch(input_tensor, kernel_size, filters, stage, block, strides, use_bias, train_bn)
    conv, bn = _names(stage, block)
    shortcut = Conv2D(filters[2], (1, 1), strides=strides, name=conv + "1", use_bias=use_bias)(input_tensor)
    shortcut = BatchNorm(name=bn + "1")(shortcut, training=train_bn)
    x = layers.Add()([x, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def resnet_graph(input_image, architecture, stage5=True, train_bn=True):
    """ResNet backbone as in Matterport (conv biases on, ZeroPadding 3 before `conv1`).

    Args:
        input_image: [B, H, W, C] molded image tensor (H, W divisible by 64).
        architecture: "resnet50" or "resnet101".
        stage5: build stage 5 (C5); otherwise C5 is None.
        train_bn: the `training` argument passed to every BatchNorm (config.TRAIN_BN).

    Returns:
        [C1, C2, C3, C4, C5] feature maps at strides 4 (C1 after the max-pool), 4, 8, 16, 32 with
        64, 256, 512, 1024, 2048 channels.
    """
    if architecture not in STAGE4_IDENTITY_BLOCKS:
        raise ConfigError(f"BACKBONE = {architecture!r} is unknown: use one of "
                          f"{', '.join(STAGE4_IDENTITY_BLOCKS)} or a callable")
    # Stage 1
    x = layers.ZeroPadding2D((3, 3))(input_image)
    x = Conv2D(64, (7, 7), strides=(2, 2), name="conv1", use_bias=True)(x)
    x = BatchNorm(name="bn_conv1")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    c1 = x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
    # Stage 2
    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1), train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b", train_bn=train_bn)
    c2 = x = identity_block(x, 3, [64, 64, 256], stage=2, block="c", train_bn=train_bn)
    # Stage 3
    x = conv_block(x, 3, [128, 128, 512], stage=3, block="a", train_bn=train_bn)
    for block in "bcd":
        x = identity_block(x, 3, [128, 128, 512], stage=3, block=block, train_bn=train_bn)
    c3 = x
    # Stage 4
    x = conv_block(x, 3, [256, 256, 1024], stage=4, block="a", train_bn=train_bn)
    for i in range(STAGE4_IDENTITY_BLOCKS[architecture]):
        x = identity_block(x, 3, [256, 256, 1024], stage=4, block=chr(ord("b") + i), train_bn=train_bn)
    c4 = x
    # Stage 5
    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], stage=5, block="a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], stage=5, block="b", train_bn=train_bn)
        c5 = identity_block(x, 3, [512, 512, 2048], stage=5, block="c", train_bn=train_bn)
    else:
        c5 = None
    return [c1, c2, c3, c4, c5]

"""ResNet-18 / ResNet-34 (basic blocks) backbone, for CPU-sized training such as the demo.

Not in Matterport: its backbones are ResNet-50/101 bottleneck nets whose 2048-channel C5 is most of
the cost of a CPU step. The basic-block nets keep the same strides (C2..C5 at 4, 8, 16, 32) and the
same naming scheme (`res{stage}{block}_branch2a/2b`, `bn...`, `_branch1` shortcut, `res{stage}{block}_out`)
so `layers="3+"`-style regexes and the weight report work on them, with 64/128/256/512 channels.
No published weights map onto them: they train from scratch with TRAIN_BN on.
"""
from keras import layers

from mrcnn_tf.errors import ConfigError
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.layers.conv2d import Conv2D

# Basic blocks per stage (2, 3, 4, 5).
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STAGE_FILTERS = (64, 128, 256, 512)


def basic_block(input_tensor, filters, stage, block, strides=(1, 1), train_bn=True):
    """Two 3x3 convolutions with a shortcut (a 1x1 projection when the shape changes).

    Args:
        input_tensor: [B, H, W, C] feature map.
        filters: output channels of both convolutions.
        stage: stage number (2..5), used in layer names.
        block: block letter ('a', 'b', ...), used in layer names.
        strides: stride of the first convolution and of the projection.
        train_bn: the `training` argument given to every BatchNorm.

    Returns:
        [B, H / s, W / s, filters] tensor named `res{stage}{block}_out`.
    """
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    x = Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=conv + "2a")(input_tensor)
    x = BatchNorm(name=bn + "2a")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    x = Conv2D(filters, 3, padding="same", use_bias=False, name=conv + "2b")(x)
    x = BatchNorm(name=bn + "2b")(x, training=train_bn)
    shortcut = input_tensor
    if strides != (1, 1) or input_tensor.shape[-1] != filters:
        shortcut = Conv2D(filters, 1, strides=strides, use_bias=False, name=conv + "1")(input_tensor)
        shortcut = BatchNorm(name=bn + "1")(shortcut, training=train_bn)
    x = layers.Add()([x, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def resnet_basic_graph(input_image, architecture, stage5=True, train_bn=True):
    """ResNet-18/34 backbone returning Matterport's [C1, C2, C3, C4, C5].

    Args:
        input_image: [B, H, W, C] molded image (H, W divisible by 64).
        architecture: "resnet18" or "resnet34".
        stage5: build stage 5; otherwise C5 is None.
        train_bn: the `training` argument given to every BatchNorm (config.TRAIN_BN).

    Returns:
        [C1, C2, C3, C4, C5] at strides 4, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels.
    """
    if architecture not in BLOCKS:
        raise ConfigError(f"BACKBONE = {architecture!r} is not a basic-block ResNet: use one of {', '.join(BLOCKS)}")
    x = layers.ZeroPadding2D((3, 3))(input_image)
    x = Conv2D(64, (7, 7), strides=(2, 2), use_bias=False, name="conv1")(x)
    x = BatchNorm(name="bn_conv1")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    c1 = x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
    outputs = [c1]
    for stage, (count, filters) in enumerate(zip(BLOCKS[architecture], STAGE_FILTERS), start=2):
        if stage == 5 and not stage5:
            outputs.append(None)
            break
        for i in range(count):
            strides = (2, 2) if (i == 0 and stage > 2) else (1, 1)
            x = basic_block(x, filters, stage, chr(ord("a") + i), strides=strides, train_bn=train_bn)
        outputs.append(x)
    return outputs

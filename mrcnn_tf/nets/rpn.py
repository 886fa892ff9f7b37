"""Region Proposal Network head, shared across pyramid levels as the nested model `rpn_model`.

`mask_rcnn_coco.h5` stores the RPN as ONE group named `rpn_model` holding six arrays in the order
rpn_conv_shared (kernel, bias), rpn_class_raw (kernel, bias), rpn_bbox_pred (kernel, bias); the
nested model's name and the creation order of its three convolutions are therefore fixed.
"""
import keras
from keras import layers

from mrcnn_tf.layers.conv2d import Conv2D


def rpn_graph(feature_map, anchors_per_location, anchor_stride, channels=512):
    """RPN head on one feature map.

    Args:
        feature_map: [B, H, W, depth] pyramid level.
        anchors_per_location: anchors per feature cell (len(RPN_ANCHOR_RATIOS)).
        anchor_stride: cells between anchors (1 = an anchor set at every cell).
        channels: width of the shared 3x3 conv (Matterport: 512; config.RPN_CONV_CHANNELS).

    Returns:
        rpn_class_logits [B, H*W*A, 2] (BG/FG logits), rpn_probs [B, H*W*A, 2] (softmax),
        rpn_bbox [B, H*W*A, 4] deltas (dy, dx, log(dh), log(dw)) still divided by RPN_BBOX_STD_DEV;
        anchors ordered position-major then anchor (the order of `generate_pyramid_anchors`).
    """
    shared = Conv2D(channels, (3, 3), padding="same", activation="relu", strides=anchor_stride,
                           name="rpn_conv_shared")(feature_map)
    # The 1x1 outputs in float32 under mixed precision: logits feed the losses, deltas the box maths (cheap: 1x1).
    x = Conv2D(2 * anchors_per_location, (1, 1), padding="valid", activation="linear",
                      name="rpn_class_raw", dtype="float32")(shared)
    # [B, H, W, A*2] -> [B, H*W*A, 2]: row-major flattening keeps the anchors' order.
    rpn_class_logits = layers.Reshape((-1, 2), name="rpn_class_logits_reshape", dtype="float32")(x)
    # float32 under mixed precision: probabilities feed the proposal scores and the losses.
    rpn_probs = layers.Activation("softmax", name="rpn_class_xxx", dtype="float32")(rpn_class_logits)
    x = Conv2D(anchors_per_location * 4, (1, 1), padding="valid", activation="linear",
                      name="rpn_bbox_pred", dtype="float32")(shared)
    rpn_bbox = layers.Reshape((-1, 4), name="rpn_bbox_reshape", dtype="float32")(x)
    return [rpn_class_logits, rpn_probs, rpn_bbox]


def build_rpn_model(anchor_stride, anchors_per_location, depth, channels=512):
    """The RPN as a Keras model so one set of weights serves every pyramid level.

    Args:
        anchor_stride: cells between anchors (config.RPN_ANCHOR_STRIDE).
        anchors_per_location: len(config.RPN_ANCHOR_RATIOS).
        depth: channels of the feature maps (config.TOP_DOWN_PYRAMID_SIZE).
        channels: width of the shared conv (config.RPN_CONV_CHANNELS).

    Returns:
        keras.Model "rpn_model": input `input_rpn_feature_map` [B, H, W, depth] -> [rpn_class_logits
        [B, A, 2], rpn_probs [B, A, 2], rpn_bbox [B, A, 4]] with A = H * W * anchors_per_location
        (for anchor_stride 1).
    """
    feature_map = keras.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    outputs = rpn_graph(feature_map, anchors_per_location, anchor_stride, channels)
    return keras.Model([feature_map], outputs, name="rpn_model")

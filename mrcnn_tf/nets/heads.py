"""Box/class head and mask head on pooled ROIs (FPN variant), with Matterport's layer names.

Both heads wrap their per-ROI layers in `TimeDistributed`; the wrapper carries the weight name
(`mrcnn_class_conv1`, `mrcnn_mask_bn2`, ...) exactly as in `mask_rcnn_coco.h5`. The wrapped
BatchNorms get TRAIN_BN in their constructor: a wrapper's symbolic call never reaches the inner
layer, so BatchNorm could not record the build-time `training` value by itself.
"""
import keras
from keras import layers, ops

from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.layers.conv2d import Conv2D
from mrcnn_tf.layers.conv2d_transpose import Conv2DTranspose
from mrcnn_tf.layers.full_window_conv import FullWindowConv2D
from mrcnn_tf.layers.roi_align import PyramidROIAlign


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class TimeDistributed(layers.TimeDistributed):
    """`keras.layers.TimeDistributed` that folds the ROI axis into the batch axis.

    Keras 3's own wrapper unrolls a Python loop over a static time axis (one convolution per ROI,
    2000 of them in training) or falls back to `vectorized_map`; Keras 2 reshaped instead. This
    subclass reshapes [B, N, ...] -> [B*N, ...], applies the layer once and reshapes back, which is
    both fast and what Matterport's weights were trained with (BatchNorm statistics over B*N ROIs).

    Args:
        layer: the `keras.layers.Layer` applied to every ROI; its weights are saved under this
            wrapper's name.

    Call arguments:
        inputs: [B, N, ...] tensor; the per-ROI dimensions must be static.
        training: forwarded to the wrapped layer when it takes one (BatchNorm).

    Returns:
        [B, N, ...layer output...].
    """

    def call(self, inputs, training=None, mask=None):
        # Static batch / ROI sizes where known, so later layers keep them in their shapes.
        batch, rois = (static if static is not None else dynamic
                       for static, dynamic in zip(inputs.shape[:2], ops.shape(inputs)[:2]))
        flat = ops.reshape(inputs, (-1, *inputs.shape[2:]))
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        outputs = self.layer(flat, **kwargs)
        return ops.reshape(outputs, (batch, rois, *outputs.shape[1:]))


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         fc_layers_size=1024):
    """Classifier and box-regression head of the FPN.

    Args:
        rois: [B, N, 4] normalized proposal boxes (y1, x1, y2, x2), zero-padded.
        feature_maps: [P2, P3, P4, P5] pyramid levels.
        image_meta: [B, IMAGE_META_SIZE] image metadata (see compose_image_meta).
        pool_size: side of the ROI-aligned square (config.POOL_SIZE).
        num_classes: classes including background (config.NUM_CLASSES).
        train_bn: `training` for the head's BatchNorm layers (config.TRAIN_BN).
        fc_layers_size: width of the two "fully connected" 1024 layers.

    Returns:
        logits [B, N, NC] (before softmax), probs [B, N, NC], bbox deltas [B, N, NC, 4]
        (dy, dx, log(dh), log(dw)) per class, still divided by BBOX_STD_DEV.
    """
    x = PyramidROIAlign(pool_shape=[pool_size, pool_size], name="roi_align_classifier")(
        [rois, image_meta] + list(feature_maps))
    # Two 1024-wide layers as convolutions: a valid pool_size x pool_size conv is a dense layer.
    # Dense layers in conv form (Matterport's weight layout), computed as matrix products (FullWindowConv2D).
    x = TimeDistributed(FullWindowConv2D(fc_layers_size, (pool_size, pool_size), padding="valid"),
                        name="mrcnn_class_conv1")(x)
    x = TimeDistributed(BatchNorm(train_bn=train_bn), name="mrcnn_class_bn1")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    x = TimeDistributed(FullWindowConv2D(fc_layers_size, (1, 1)), name="mrcnn_class_conv2")(x)
    x = TimeDistributed(BatchNorm(train_bn=train_bn), name="mrcnn_class_bn2")(x, training=train_bn)
    x = layers.Activation("relu")(x)
    # [B, N, 1, 1, fc] -> [B, N, fc]
    shared = layers.Reshape((-1, fc_layers_size), name="pool_squeeze")(x)

    # Logits and deltas in float32 under mixed precision (the losses and box maths read them; the layers are small).
    mrcnn_class_logits = TimeDistributed(layers.Dense(num_classes, dtype="float32"), name="mrcnn_class_logits",
                                         dtype="float32")(shared)
    # Softmax in float32 under mixed precision (float16 probabilities round small scores to 0).
    mrcnn_probs = TimeDistributed(layers.Activation("softmax", dtype="float32"), name="mrcnn_class",
                                  dtype="float32")(mrcnn_class_logits)

    x = TimeDistributed(layers.Dense(num_classes * 4, activation="linear", dtype="float32"), name="mrcnn_bbox_fc",
                        dtype="float32")(shared)
    # -1 keeps the ROI count dynamic (training T, inference POST_NMS_ROIS_INFERENCE or detections).
    mrcnn_bbox = layers.Reshape((-1, num_classes, 4), name="mrcnn_bbox", dtype="float32")(x)
    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True, channels=256,
                         nucleus=False):
    """Mask head of the FPN (and, with `nucleus`, its nucleus mask).

    Args:
        rois: [B, N, 4] normalized boxes (y1, x1, y2, x2), zero-padded.
        feature_maps: [P2, P3, P4, P5] pyramid levels.
        image_meta: [B, IMAGE_META_SIZE] image metadata.
        pool_size: side of the ROI-aligned square (config.MASK_POOL_SIZE).
        num_classes: classes including background.
        train_bn: `training` for the head's BatchNorm layers.
        channels: width of the four 3x3 convs and the deconv (Matterport: 256; config.MASK_HEAD_CHANNELS).
        nucleus: also predict the nucleus inside each ROI (config.NUCLEUS_MASKS): a second 1x1 conv +
            sigmoid on the deconv features, one channel (a nucleus does not depend on the cell type),
            layer `mrcnn_nucleus_mask` (absent from Matterport's weights: it starts untrained).

    Returns:
        [B, N, 2*pool_size, 2*pool_size, NC] per-class mask probabilities (sigmoid); with `nucleus` a
        pair (that, [B, N, 2*pool_size, 2*pool_size, 1] nucleus probabilities).
    """
    x = PyramidROIAlign(pool_shape=[pool_size, pool_size], name="roi_align_mask")(
        [rois, image_meta] + list(feature_maps))
    for i in range(1, 5):
        x = TimeDistributed(Conv2D(channels, (3, 3), padding="same"), name=f"mrcnn_mask_conv{i}")(x)
        x = TimeDistributed(BatchNorm(train_bn=train_bn), name=f"mrcnn_mask_bn{i}")(x, training=train_bn)
        x = layers.Activation("relu")(x)
    x = TimeDistributed(Conv2DTranspose(channels, (2, 2), strides=2, activation="relu"),
                        name="mrcnn_mask_deconv")(x)
    # The last 1x1 conv and its sigmoid in float32: mask probabilities go into log() in the loss.
    mrcnn_mask = TimeDistributed(Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid", dtype="float32"),
                                 name="mrcnn_mask", dtype="float32")(x)
    if not nucleus:
        return mrcnn_mask
    nucleus_mask = TimeDistributed(Conv2D(1, (1, 1), strides=1, activation="sigmoid", dtype="float32"),
                                   name="mrcnn_nucleus_mask", dtype="float32")(x)
    return mrcnn_mask, nucleus_mask

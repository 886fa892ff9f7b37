"""Multi-level ROI Align over the FPN pyramid (P2..P5)."""
import keras
import tensorflow as tf

from mrcnn_tf.ops.graph import log2_graph, parse_image_meta_graph

MIN_LEVEL, MAX_LEVEL = 2, 5


def roi_levels_graph(boxes, image_shape):
    """FPN level of each box: 4 + round(log2(sqrt(h*w) / (224 / sqrt(image_area)))), in [2, 5].

    Args:
        boxes: [B, N, 4] normalized (y1, x1, y2, x2).
        image_shape: [B, 2+] molded image (height, width, ...) in pixels, per image.

    Returns:
        int32 [B, N] levels; zero / degenerate boxes (area <= 0) go to level 2.
    """
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    image_shape = tf.cast(image_shape, tf.float32)
    image_area = (image_shape[:, 0] * image_shape[:, 1])[:, tf.newaxis]
    # A box of 224x224 pixels maps to P4 (the ImageNet pre-training size), Matterport / FPN eq. 1.
    area = tf.maximum((y2 - y1) * (x2 - x1), 0.0)
    level = 4.0 + tf.round(log2_graph(tf.sqrt(area) / (224.0 / tf.sqrt(image_area))))
    # Clip before the int cast: log2(0) = -inf would otherwise overflow int32.
    level = tf.clip_by_value(level, MIN_LEVEL, MAX_LEVEL)
    return tf.cast(level, tf.int32)


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class PyramidROIAlign(keras.layers.Layer):
    """ROI Align on the pyramid level that suits each box's size (Matterport's PyramidROIAlign).

    Each box goes to one level of [P2..P5] by `roi_levels_graph`, is cropped there with
    `tf.image.crop_and_resize` (bilinear, one sample per output cell, no gradient through the
    box coordinates) and the pooled features come back in the boxes' original order. The image
    area comes from each image's molded shape in `image_meta` (Matterport used the first image's;
    they are equal in a batch). Inputs are not auto-cast: boxes stay float32 and the output has
    the feature maps' dtype (float16 under mixed precision).

    Args:
        pool_shape: (height, width) of the pooled output, e.g. (7, 7) or (14, 14).
        **kwargs: Layer arguments (name, dtype...).

    Call arguments:
        inputs: [boxes, image_meta, P2, P3, P4, P5]: boxes [B, N, 4] normalized (y1, x1, y2, x2)
            (zero rows allowed; rows with NaN or inf are pooled as zero rows), image_meta [B, META],
            Pk [B, Hk, Wk, C].

    Returns:
        [B, N, pool_height, pool_width, C] pooled features.
    """

    def __init__(self, pool_shape, **kwargs):
        # Autocast would turn the normalized boxes into float16; the features keep their dtype anyway.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.pool_shape = tuple(int(v) for v in pool_shape)

    def call(self, inputs):
        boxes, image_meta, *feature_maps = inputs
        boxes = tf.cast(boxes, tf.float32)
        # A box with a non-finite coordinate has no level and crop_and_resize refuses it: pool it as a zero box,
        # like the padding rows. DetectionLayer no longer emits such boxes; ROIs from other sources may.
        finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1, keepdims=True)
        boxes = tf.where(finite, boxes, tf.zeros_like(boxes))
        image_shape = parse_image_meta_graph(tf.cast(image_meta, tf.float32))["image_shape"]
        levels = tf.reshape(roi_levels_graph(boxes, image_shape), [-1])
        batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
        flat_boxes = tf.stop_gradient(tf.reshape(boxes, [-1, 4]))
        image_index = tf.repeat(tf.range(batch), count)
        pooled, order = [], []
        for level, feature_map in zip(range(MIN_LEVEL, MAX_LEVEL + 1), feature_maps):
            ix = tf.where(tf.equal(levels, level))[:, 0]
            # crop_and_resize has no bfloat16 kernel (mixed_bfloat16): crop such maps in float32.
            source = tf.cast(feature_map, tf.float32) if feature_map.dtype == tf.bfloat16 else feature_map
            crops = tf.image.crop_and_resize(source, tf.gather(flat_boxes, ix),
                                             tf.gather(image_index, ix), self.pool_shape, method="bilinear")
            pooled.append(tf.cast(crops, feature_map.dtype))
            order.append(ix)
        # Every flat box index appears exactly once across the levels: invert that permutation.
        order = tf.math.invert_permutation(tf.cast(tf.concat(order, axis=0), tf.int32))
        pooled = tf.gather(tf.concat(pooled, axis=0), order)
        channels = feature_maps[0].shape[-1]
        pooled = tf.reshape(pooled, tf.concat([[batch, count], self.pool_shape, tf.shape(pooled)[-1:]], 0))
        pooled.set_shape([boxes.shape[0], boxes.shape[1], *self.pool_shape, channels])
        return pooled

    def compute_output_shape(self, input_shape):
        boxes_shape, feature_shape = input_shape[0], input_shape[2]
        return (boxes_shape[0], boxes_shape[1], *self.pool_shape, feature_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["pool_shape"] = list(self.pool_shape)
        return config

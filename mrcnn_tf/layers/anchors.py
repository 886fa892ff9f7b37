"""Anchors as a layer: the normalized pyramid anchors for the size of the input image."""
import keras
import tensorflow as tf

from mrcnn_tf.ops.graph import generate_pyramid_anchors_graph, pyramid_anchor_count


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class Anchors(keras.layers.Layer):
    """Pyramid anchors for the image size, repeated over the batch (no weights).

    Replaces Matterport's Lambda that returned a `tf.Variable` of anchors baked for
    IMAGE_SHAPE: the anchors are computed in the graph from the image's (H, W), so the layer
    saves no state and works for any molded size. Equal to numpy ``generate_pyramid_anchors``
    (feature maps ``ceil(H / stride)``) followed by ``norm_boxes``.

    Args:
        scales: anchor side length in pixels, one per pyramid level (RPN_ANCHOR_SCALES).
        ratios: width/height ratios (RPN_ANCHOR_RATIOS).
        feature_strides: stride of each pyramid level (BACKBONE_STRIDES).
        anchor_stride: anchors on every n-th feature cell (RPN_ANCHOR_STRIDE).
        **kwargs: Layer arguments (name, dtype...); dtype defaults to float32.

    Call arguments:
        image: [B, H, W, C] molded image; only its shape is used.

    Returns:
        float32 [B, A, 4] normalized (y1, x1, y2, x2) anchors; A is static when H and W are.
    """

    def __init__(self, scales, ratios, feature_strides, anchor_stride, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if len(scales) != len(feature_strides):
            raise ValueError(f"Anchors: {len(scales)} scales for {len(feature_strides)} feature strides; "
                             "give one scale per pyramid level")
        self.scales = [float(s) for s in scales]
        self.ratios = [float(r) for r in ratios]
        self.feature_strides = [int(s) for s in feature_strides]
        self.anchor_stride = int(anchor_stride)

    def _count(self, image_shape):
        height, width = image_shape[1], image_shape[2]
        if height is None or width is None:
            return None
        return pyramid_anchor_count(self.scales, self.ratios, (height, width), self.feature_strides,
                                    self.anchor_stride)

    def call(self, image):
        anchors = generate_pyramid_anchors_graph(self.scales, self.ratios, tf.shape(image)[1:3],
                                                 self.feature_strides, self.anchor_stride)
        batch = tf.shape(image)[0]
        anchors = tf.broadcast_to(anchors[tf.newaxis], tf.stack([batch, tf.shape(anchors)[0], 4]))
        anchors.set_shape([image.shape[0], self._count(image.shape), 4])
        return anchors

    def compute_output_shape(self, image_shape):
        return (image_shape[0], self._count(image_shape), 4)

    def get_config(self):
        config = super().get_config()
        config.update(scales=self.scales, ratios=self.ratios, feature_strides=self.feature_strides,
                      anchor_stride=self.anchor_stride)
        return config

"""Pixel GT boxes -> normalized boxes, inside the graph."""
import keras
import tensorflow as tf

from mrcnn_tf.ops.graph import norm_boxes_graph


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class NormBoxes(keras.layers.Layer):
    """Normalize pixel boxes by the size of the image tensor (Matterport's gt_boxes Lambda).

    Zero padding rows do not stay zero (they become (0, 0, -1/(H-1), -1/(W-1))); as in
    Matterport, padding is recognised downstream by its class id 0.

    Args:
        **kwargs: Layer arguments (name, dtype...); dtype defaults to float32.

    Call arguments:
        inputs: [boxes, image]: boxes [B, G, 4] pixel (y1, x1, y2, x2) with y2/x2 exclusive;
            image [B, H, W, C] whose (H, W) defines the normalization.

    Returns:
        float32 [B, G, 4] normalized (y1, x1, y2, x2).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        boxes, image = inputs
        return norm_boxes_graph(boxes, tf.shape(image)[1:3])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

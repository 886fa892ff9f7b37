"""A convolution whose kernel covers its whole input, computed as one matrix product."""
import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class FullWindowConv2D(layers.Conv2D):
    """`Conv2D` with "valid" padding on inputs exactly the kernel's size: a dense layer in conv form.

    Matterport's box head is a 7x7 valid convolution on 7x7 pooled ROIs (`mrcnn_class_conv1`) and a 1x1
    convolution on the 1x1 result (`mrcnn_class_conv2`): each output is one dot product over the whole
    window. oneDNN runs that shape through its convolution kernels at a small fraction of its matrix
    speed (1.2 s of a 2.9 s inference on AVX2 for 1000 ROIs); as ``reshape + matmul`` it runs at the
    matrix speed. The kernel keeps Conv2D's shape [kh, kw, C, F] and name, so `mask_rcnn_coco.h5` and
    earlier checkpoints load unchanged; row-major flattening of a [kh, kw, C] window matches the
    kernel's own [kh * kw * C, F] layout.

    Args:
        filters, kernel_size, **kwargs: as `keras.layers.Conv2D` (strides 1, padding "valid",
            dilation 1 and groups 1 only: anything else is not a full-window product).

    Call arguments:
        inputs: [N, kh, kw, C] (the kernel's spatial size).

    Returns:
        [N, 1, 1, filters].
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if (tuple(self.strides) != (1, 1) or self.padding != "valid" or tuple(self.dilation_rate) != (1, 1)
                or self.groups != 1 or self.data_format != "channels_last"):
            raise ValueError("FullWindowConv2D takes strides 1, padding 'valid', no dilation or groups, channels_last")

    def build(self, input_shape):
        if tuple(input_shape[1:3]) != tuple(self.kernel_size):
            raise ValueError(f"FullWindowConv2D: input window {tuple(input_shape[1:3])} must equal the kernel size "
                             f"{tuple(self.kernel_size)}")
        super().build(input_shape)

    def call(self, inputs):
        window = self.kernel_size[0] * self.kernel_size[1] * inputs.shape[-1]
        flat = tf.reshape(inputs, [-1, window])
        kernel = tf.cast(tf.reshape(self.kernel, [window, self.filters]), flat.dtype)
        outputs = tf.matmul(flat, kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return tf.reshape(outputs, [-1, 1, 1, self.filters])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.filters)

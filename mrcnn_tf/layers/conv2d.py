"""keras Conv2D whose kernel gradient comes from matrix products on a CPU (same weights, same outputs).

The class is named `Conv2D` on purpose: Keras 3 weight files key the layers of a nested model (the RPN's
`rpn_model`) by their class name in snake case (`layers/conv2d`, `layers/conv2d_1`, ...), so a class of
another name would change those keys and every earlier checkpoint would stop loading.
"""
import keras
from keras import layers

from mrcnn_tf.backend.band_conv import band_count, bands_enabled, conv2d_in_bands
from mrcnn_tf.backend.conv_filter_grad import (conv2d_matmul_filter_grad, gradients_recorded, policy, supports,
                                               use_matmul_filter_grad)


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class Conv2D(layers.Conv2D):
    """`keras.layers.Conv2D`, training faster on CPUs: the kernel gradient of a stride-1 convolution is
    computed by `conv2d_matmul_filter_grad` (a sum of tap products) instead of oneDNN's AVX2 kernel, which
    runs far slower than the forward pass (measured: bench/RESULTS.md). Forward values, the input gradient,
    the weights (names, shapes) and `get_config` are Conv2D's: COCO and ImageNet files load unchanged.

    The matrix form is used for stride 1, no dilation, one group, channels_last and a kernel larger than
    1x1, when the layer is traced on a machine where TensorFlow sees no GPU and oneDNN runs no AVX-512 (its
    AVX-512 kernel gradients are fast) and the shapes are ones where it was measured faster (`prefers_matmul`),
    or always with MRCNN_TF_CONV_FILTER_GRAD=matmul, and only while a GradientTape records (training steps):
    inference and PreciseBN's passes are exactly Conv2D, as is every other case.

    On a CPU without AVX-512, a stride-1 convolution over a large map (ResNet-50's P2 and P3 at 512 px) runs as
    a batch of overlapping row bands (`backend/band_conv.py`): oneDNN's AVX2 kernels convolve one large image far
    slower than a batch of smaller ones. Same values; MRCNN_TF_CONV_BANDS=off runs every convolution whole.

    Args:
        filters, kernel_size, **kwargs: as `keras.layers.Conv2D`.

    Call arguments:
        inputs: [N, H, W, C_in].

    Returns:
        [N, H_out, W_out, filters], as Conv2D.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        policy()  # a bad MRCNN_TF_CONV_FILTER_GRAD or MRCNN_TF_CONV_BANDS fails here, in one line, before
        bands_enabled()  # any graph is traced

    def convolution_op(self, inputs, kernel):
        if (keras.backend.backend() != "tensorflow"
                or not supports(self.kernel_size, self.strides, self.dilation_rate, self.data_format, self.groups)):
            return super().convolution_op(inputs, kernel)
        matmul_grad = use_matmul_filter_grad(inputs.shape, kernel.shape) and gradients_recorded()
        bands = band_count(inputs.shape, kernel.shape)
        if bands > 1:
            convolve = conv2d_matmul_filter_grad if matmul_grad else None
            return conv2d_in_bands(inputs, kernel, self.padding, bands, convolve)
        if matmul_grad:
            return conv2d_matmul_filter_grad(inputs, kernel, self.padding)
        return super().convolution_op(inputs, kernel)

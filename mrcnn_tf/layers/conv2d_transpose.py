"""keras' Conv2DTranspose with a bias gradient that stays right under 16-bit compute (Matterport's mask upsampler)."""
import keras
from keras import layers, ops

from mrcnn_tf.ops.bias import SIXTEEN_BIT, add_bias


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class Conv2DTranspose(layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, same weights and results; under mixed precision its bias gradient is summed in
    float32 (`ops.bias.add_bias`) rather than in bfloat16/float16, which loses most of it on a mask head's maps.

    Args:
        filters, kernel_size, **kwargs: as `keras.layers.Conv2DTranspose` (channels-last).

    Call arguments:
        inputs: [N, H, W, C].

    Returns:
        [N, H', W', filters], H' = H * stride for "valid" with kernel = stride (the mask head's 2x2, stride 2).
    """

    def call(self, inputs):
        if not (self.use_bias and self.compute_dtype in SIXTEEN_BIT and self.data_format == "channels_last"
                and keras.backend.backend() == "tensorflow"):
            return super().call(inputs)
        outputs = ops.conv_transpose(inputs, self.kernel, strides=list(self.strides), padding=self.padding,
                                     output_padding=self.output_padding, data_format=self.data_format,
                                     dilation_rate=self.dilation_rate)
        outputs = add_bias(outputs, ops.cast(self.bias, outputs.dtype))
        return outputs if self.activation is None else self.activation(outputs)

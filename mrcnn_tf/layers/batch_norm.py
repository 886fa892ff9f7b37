"""BatchNorm that keeps the `training` value the model was built with (Matterport's TRAIN_BN)."""
import keras

from mrcnn_tf.backend.compat import private

in_symbolic_scope = private("in_symbolic_scope")


def _is_symbolic(args):
    return in_symbolic_scope() or any(isinstance(a, keras.KerasTensor) for a in keras.tree.flatten(args))


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose `training` mode can be fixed when the graph is built.

    Matterport calls every BatchNorm with ``training=config.TRAIN_BN``. With Keras 2 that value
    stuck to the graph; a Keras 3 functional model instead overrides it with the `training` flag
    of the model call (``fit`` passes True), which would silently un-freeze frozen BatchNorm. This
    layer therefore remembers a non-None `training` passed while the graph is being built
    (symbolic call, also from inside a wrapper layer's call) and uses it on every later call.
    It can also be fixed in the constructor with `train_bn`.

    With ``False`` the layer normalizes with its moving statistics and never updates them, while
    gamma and beta still receive gradients (Matterport's default for fine-tuning). With ``True``
    it always uses batch statistics, at inference too (Keras 2 / Matterport behaviour of an
    explicit ``training=True``). ``None`` follows the model's `training` flag.

    Args:
        train_bn: None, True or False (see above); set automatically by the first symbolic call
            with an explicit `training`.
        **kwargs: any `keras.layers.BatchNormalization` argument (axis, momentum, epsilon, name...).

    Call arguments:
        inputs: tensor of any rank; normalized along `axis`.
        training: bool or None, used only while `train_bn` is None (and recorded when the call is
            symbolic).
        mask: optional mask, as BatchNormalization.

    Returns:
        Tensor of the same shape as `inputs`.
    """

    def __init__(self, train_bn=None, **kwargs):
        super().__init__(**kwargs)
        if train_bn not in (None, True, False):
            raise ValueError(f"BatchNorm train_bn={train_bn!r}: use None, True or False")
        self.train_bn = train_bn

    def __call__(self, *args, **kwargs):
        training = kwargs.get("training")
        # Record the build-time value only; eager / fit calls pass the model's flag instead.
        if self.train_bn is None and training is not None and isinstance(training, bool) and _is_symbolic(args):
            self.train_bn = training
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if self.train_bn is not None:
            training = self.train_bn
        if self._fusable(inputs, training, mask):
            return self._fused_call(inputs, bool(training) and self.trainable)
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs, training, mask):
        """TensorFlow's fused kernel applies: 4-D channels-last input, plain BN, a Python `training`."""
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and self.scale and self.center and not self.renorm
                and not self.synchronized and (training is None or isinstance(training, bool)))

    def _fused_call(self, inputs, use_batch_statistics):
        """Keras' BatchNormalization through one ``FusedBatchNormV3`` kernel (and its one gradient kernel).

        Keras 3 writes BatchNorm as separate elementwise ops (about ten graph nodes, three passes over
        the activations forward and more backward); the fused kernel is one pass. Moving statistics (frozen
        BatchNorm, inference) are a scale and a shift instead (see below). Same results as Keras' path
        (tests/layers/test_batch_norm.py): float32 arithmetic, and the moving statistics updated with the
        biased batch variance as Keras does (the kernel returns the n/(n-1)-corrected one).
        """
        import tensorflow as tf

        x = tf.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        gamma, beta = tf.cast(self.gamma, x.dtype), tf.cast(self.beta, x.dtype)
        if not use_batch_statistics:
            # With moving statistics BatchNorm is one per-channel scale and shift. Written as a multiply
            # and a bias add, not FusedBatchNormV3: Grappler's remapper folds the fused kernel into the
            # convolution before it, and oneDNN then runs that convolution with four binary post-ops,
            # which on AVX2 CPUs takes its slow gemm path, many times slower than the plain convolution; the
            # two elementwise passes cost far less (measured: bench/RESULTS.md).
            scale = gamma * tf.math.rsqrt(tf.cast(self.moving_variance, x.dtype) + self.epsilon)
            shift = beta - tf.cast(self.moving_mean, x.dtype) * scale
            return tf.cast(tf.nn.bias_add(x * scale, shift), self.compute_dtype)
        y, mean, corrected = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        variance = corrected * (tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0))
        momentum = self.momentum  # a Python float read at trace time (PreciseBN sets 0 for its passes)
        self.moving_mean.assign(tf.cast(self.moving_mean, x.dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, x.dtype) * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["train_bn"] = self.train_bn
        return config

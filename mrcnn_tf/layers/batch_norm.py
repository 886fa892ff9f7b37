"""BatchNorm that keeps the `training` value the model was built with (Matterport's TRAIN_BN)."""
import keras
from keras.src.backend.common.symbolic_scope import in_symbolic_scope


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
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["train_bn"] = self.train_bn
        return config

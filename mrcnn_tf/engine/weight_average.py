"""An exponential moving average of the trained weights, held by the checkpoints (Config.WEIGHT_EMA_DECAY).

From random weights on a few hundred steps, the weights of one step are a noisy sample: on BCCD-WBC the held-out
typing of successive checkpoints swung widely (measured: bench/RESULTS.md). The average of the recent weights is a
better model than any one of them (Polyak averaging; detectron2's MODEL_EMA, YOLOv5's ModelEMA, timm's ModelEma).
Training steps keep updating the raw weights; each epoch end swaps the average in for what reads the model
there (PreciseBN, the checkpoint, a held-out scorer) and the next epoch swaps the raw weights back.
"""
import keras
import tensorflow as tf


def ema_decay(decay, updates):
    """The decay of update number `updates` (1-based): min(decay, (1 + n) / (10 + n)).

    The ramp (timm's and TensorFlow's `num_updates` rule) keeps the random weights of the first steps from
    dominating the average of a short run: after n updates it weighs about the last (10 + n) / 9 steps, up to
    the 1 / (1 - decay) steps of the full decay.
    """
    n = float(updates)
    return min(float(decay), (1.0 + n) / (10.0 + n))


class WeightAverage(keras.callbacks.Callback):
    """Keeps an exponential moving average of the model's trainable weights; the model holds it at epoch ends.

    After every training step: ``average <- d * average + (1 - d) * weight`` with ``d = ema_decay(decay, n)``.
    At each epoch end the model's trainable weights are replaced by the average (put this callback before
    PreciseBN and the checkpoint, so that both see it) and at the next epoch begin the raw weights come back.
    Training ends with the average in the model, as in its last checkpoint. Non-trainable weights (frozen
    layers, BatchNorm statistics) are not averaged. The validation loss `fit` reports at an epoch end is the
    raw weights'; a resumed run starts its average from the checkpoint's weights.

    Args:
        decay: float in (0, 1), e.g. 0.99 (an average over about the last 100 steps).

    Attributes:
        updates: training steps averaged since training began.
    """

    def __init__(self, decay):
        super().__init__()
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightAverage decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._variables = []
        self._averages = []
        self._raw = []
        self._swapped = False
        self._update_fn = None

    def on_train_begin(self, logs=None):
        self._variables = list(self.model.trainable_variables)
        with tf.init_scope():  # plain variables on the host side of any strategy; read and written whole
            self._averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in self._variables]
            self._raw = [tf.Variable(tf.zeros_like(a), trainable=False) for a in self._averages]
        self.updates = 0
        self._swapped = False
        averages, variables = self._averages, self._variables

        @tf.function
        def update(decay):
            for average, variable in zip(averages, variables):
                weight = tf.cast(tf.convert_to_tensor(variable), average.dtype)
                average.assign_sub((1.0 - decay) * (average - weight))

        self._update_fn = update

    def on_train_batch_end(self, batch, logs=None):
        self.updates += 1
        self._update_fn(tf.constant(ema_decay(self.decay, self.updates), tf.float32))

    def on_epoch_end(self, epoch, logs=None):
        self.swap_in_average()

    def on_epoch_begin(self, epoch, logs=None):
        self.restore_raw()

    def swap_in_average(self):
        """Put the average into the model (the raw weights kept aside); a no-op if it is there already."""
        if self._swapped or not self._averages:
            return
        for raw, average, variable in zip(self._raw, self._averages, self._variables):
            raw.assign(tf.convert_to_tensor(variable))
            variable.assign(tf.cast(average, variable.dtype))
        self._swapped = True

    def restore_raw(self):
        """Put the raw weights of the last training step back into the model (a no-op if they are there)."""
        if not self._swapped:
            return
        for raw, variable in zip(self._raw, self._variables):
            variable.assign(tf.cast(raw, variable.dtype))
        self._swapped = False

"""Exact BatchNorm statistics for inference, recomputed on training batches (detectron2's PreciseBN).

A network trained from random weights with BatchNorm on (TRAIN_BN None) normalizes with batch
statistics while it trains and with the moving averages at inference. Those averages (momentum
0.99, a memory of ~100 steps) trail a network that changes quickly, so a short run scores poorly
with them. Normalizing each image by its own batch statistics at inference (TRAIN_BN True) avoids
the lag but makes a cell's type depend on the other proposals of its image; statistics recomputed
here on a few training batches score far higher than either (measured: bench/RESULTS.md).

`recompute_batch_norm_statistics` runs the model in training mode on a few batches and sets every
updating BatchNorm's moving mean and variance to the mean over those batches of its batch mean
and variance; `PreciseBatchNorm` does it at each epoch end, before the checkpoint is written.

Under a tf.distribute strategy the passes run on one device outside the replicas, and each new value
is assigned to every replica's copy: the statistics equal a single device's on the same batches
(tests/test_distribute.py). `train` feeds batches of IMAGES_PER_GPU images (the batch one replica
normalizes over in training), the same ones on every worker, so all workers agree without talking.
"""
import keras
import numpy as np


def batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` in `model`, nested models and wrappers included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batch_norm_statistics(model, batches, forward=None):
    """Set BatchNorm moving statistics to their mean over `batches` (training-mode forward passes).

    Only the layers that update their statistics in training (trainable and not fixed to
    inference mode) change; the others keep theirs, as they would in training. Weights do not
    change.

    Args:
        model: a Keras model whose call accepts each batch.
        batches: iterable of model inputs (e.g. a `DataGenerator`'s input tuples as lists).
        forward: optional callable running ``model(inputs, training=True)`` (e.g. a tf.function of
            it, traced once: `PreciseBatchNorm` keeps one); default: the eager call.

    Returns:
        Number of batches used (0 leaves every statistic as it was).
    """
    layers = batch_norm_layers(model)
    forward = forward or (lambda inputs: model(inputs, training=True))
    momenta = [layer.momentum for layer in layers]
    sums, count = None, 0
    try:
        # Momentum 0: after each pass a layer's moving statistics are that batch's (Keras updates
        # moving <- moving * momentum + batch * (1 - momentum)); a layer that does not update keeps its
        # own, whose mean is itself. One constant momentum also lets a traced `forward` be reused.
        for layer in layers:
            layer.momentum = 0.0
        for count, inputs in enumerate(batches, start=1):
            forward(inputs)
            stats = [(np.array(layer.moving_mean, np.float64), np.array(layer.moving_variance, np.float64))
                     for layer in layers]
            sums = stats if sums is None else [(a + m, b + v) for (a, b), (m, v) in zip(sums, stats)]
        for layer, (mean_sum, variance_sum) in zip(layers, sums or []):
            layer.moving_mean.assign((mean_sum / count).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((variance_sum / count).astype(layer.moving_variance.dtype))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count


class PreciseBatchNorm(keras.callbacks.Callback):
    """At each epoch end, recompute BatchNorm statistics on `batch_count` training batches.

    Put it before the checkpoint callback so that checkpoints hold the recomputed statistics.

    Args:
        generator: a `DataGenerator` over training data (any indexable of ``(inputs,)`` batches
            works); its `set_epoch` is called with the epoch, so each epoch uses other images.
        batch_count: batches per recomputation (at most ``len(generator)``).
    """

    def __init__(self, generator, batch_count):
        super().__init__()
        self.generator = generator
        self.batch_count = int(batch_count)
        self._forward = None

    def set_model(self, model):
        super().set_model(model)
        self._forward = None

    def forward(self, inputs):
        """The model's training-mode forward pass as a tf.function, traced on first use: eager passes of
        Mask R-CNN are slow on a CPU and would add seconds to every epoch."""
        if self._forward is None:
            import tensorflow as tf

            model = self.model
            self._forward = tf.function(lambda batch: model(batch, training=True))
        return self._forward(inputs)

    def on_epoch_end(self, epoch, logs=None):
        if hasattr(self.generator, "set_epoch"):
            self.generator.set_epoch(epoch)
        count = min(self.batch_count, len(self.generator))
        batches = (list(self.generator[i][0]) for i in range(count))
        recompute_batch_norm_statistics(self.model, batches, forward=self.forward)

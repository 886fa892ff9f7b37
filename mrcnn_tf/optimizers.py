"""Matterport's optimizer on Keras 3: SGD with momentum (or Adam) and global-norm gradient clipping.

Matterport used Keras 2.0.8's ``SGD(clipnorm=GRADIENT_CLIP_NORM)``, which scaled all gradients together
by their global norm; Keras 3's equivalent is ``global_clipnorm``. Under tf.distribute (GPU_COUNT > 1,
several workers) the clipping is moved after the sum over replicas (`_ReplicaSumClip`).
"""
import keras


def _replicas():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class _ReplicaSumClip:
    """Mixin: `global_clipnorm` clips the gradient summed over replicas (GPU_COUNT > 1).

    Keras 3.15 clips each replica's gradients before the all-reduce, so with N replicas a clipped
    step is up to N times longer than on one device. Matterport's ParallelModel had one optimizer on
    the merged towers; this keeps its meaning: clip after the sum. One device: the plain optimizer.
    """

    def _clip_gradients(self, grads):
        if self.global_clipnorm and _replicas() > 1:
            return grads  # clipped in _all_reduce_sum_gradients, after the sum
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self.global_clipnorm or _replicas() <= 1:
            return reduced
        import tensorflow as tf

        present = [i for i, (g, _) in enumerate(reduced) if g is not None]
        clipped, _ = tf.clip_by_global_norm([reduced[i][0] for i in present], self.global_clipnorm)
        reduced = list(reduced)
        for i, g in zip(present, clipped):
            reduced[i] = (g, reduced[i][1])
        return reduced


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class ReplicaSumClipSGD(_ReplicaSumClip, keras.optimizers.SGD):
    """keras.optimizers.SGD with `_ReplicaSumClip` (Matterport's optimizer)."""


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class ReplicaSumClipAdam(_ReplicaSumClip, keras.optimizers.Adam):
    """keras.optimizers.Adam with `_ReplicaSumClip` (Config.OPTIMIZER = "adam")."""


def build_optimizer(learning_rate, momentum, clip_norm, name="sgd"):
    """The training optimizer; `clip_norm` scales all gradients by their global norm (Matterport's
    Keras-2.0.8 ``clipnorm``; over all replicas together), None or 0 disables clipping.

    Args:
        name: "sgd" (Matterport: SGD with `momentum`) or "adam" (Adam, beta_1 0.9; `momentum` unused),
            which trains a network from random weights several times faster (bench/RESULTS.md).
    """
    clip = clip_norm if clip_norm else None
    if str(name).lower() == "adam":
        return ReplicaSumClipAdam(learning_rate=learning_rate, global_clipnorm=clip)
    return ReplicaSumClipSGD(learning_rate=learning_rate, momentum=momentum, global_clipnorm=clip)

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

    def apply(self, grads, trainable_variables=None):
        # The scalars every variable's fused update needs (learning rate, betas and their powers, in the
        # variable's dtype) are built once per call instead of once per variable: ~1,000 graph nodes fewer.
        self._step_scalars = {}
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None

    def _scalar(self, name, dtype, make):
        """`make()` cast to `dtype`, shared by all variables of one `apply` call."""
        import tensorflow as tf

        cache = getattr(self, "_step_scalars", None)
        if cache is None:
            return tf.cast(make(), dtype)
        if (name, dtype) not in cache:
            cache[name, dtype] = tf.cast(make(), dtype)
        return cache[name, dtype]

    def _fusable(self, gradient, variable):
        """TensorFlow's one-kernel updates apply: TensorFlow backend, a dense gradient of the variable's dtype."""
        import tensorflow as tf

        return (keras.backend.backend() == "tensorflow" and not isinstance(gradient, tf.IndexedSlices)
                and gradient.dtype == variable.dtype)

    def _clip_gradients(self, grads):
        if not self.global_clipnorm or self.clipnorm or self.clipvalue or keras.backend.backend() != "tensorflow":
            return super()._clip_gradients(grads)
        if _replicas() > 1:
            return grads  # clipped in _all_reduce_sum_gradients, after the sum
        return _clip_by_global_norm(grads, self.global_clipnorm)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self.global_clipnorm or _replicas() <= 1:
            return reduced
        clipped = _clip_by_global_norm([g for g, _ in reduced], self.global_clipnorm)
        return [(g, v) for g, (_, v) in zip(clipped, reduced)]


def _clip_by_global_norm(grads, clip_norm):
    """`tf.clip_by_global_norm` over the gradients present (None stays None).

    Keras' own clipping computes the norm as square, constant and sum per tensor; TensorFlow's takes
    one L2Loss kernel per tensor: the same scale, fewer graph nodes to trace in every training step.
    """
    import tensorflow as tf

    present = [i for i, g in enumerate(grads) if g is not None]
    clipped, _ = tf.clip_by_global_norm([grads[i] for i in present], clip_norm)
    grads = list(grads)
    for i, g in zip(present, clipped):
        grads[i] = g
    return grads


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class ReplicaSumClipSGD(_ReplicaSumClip, keras.optimizers.SGD):
    """keras.optimizers.SGD with `_ReplicaSumClip` (Matterport's optimizer), one fused op per variable.

    Keras 3 writes the momentum update as five graph ops per variable (two multiplies, a subtract,
    two assigns), each a pass over the weights; TensorFlow's ``ResourceApplyKerasMomentum`` is the
    same update, ``m = m * momentum - lr * g; w += m`` (``w += m * momentum - lr * g`` with Nesterov),
    in one kernel. For ResNet-50 FPN that is ~1,000 graph nodes fewer to trace and optimise, and
    one pass over 45M weights instead of five per step. Sparse gradients, mixed dtypes and the other
    backends keep Keras' own update.
    """

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if self.momentum == 0 or not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        accumulator = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(accumulator), lr=self._scalar("lr", dtype, lambda: learning_rate),
            grad=gradient, momentum=self._scalar("momentum", dtype, lambda: self.momentum),
            use_nesterov=bool(self.nesterov))


def _handle(variable):
    """The resource handle of a Keras or tf.Variable (inside tf.distribute's update: this device's copy)."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return value.handle


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class ReplicaSumClipAdam(_ReplicaSumClip, keras.optimizers.Adam):
    """keras.optimizers.Adam with `_ReplicaSumClip` (Config.OPTIMIZER = "adam"), one fused op per variable.

    Keras 3 writes Adam as about twenty graph ops per variable, ten of them passes over the weight
    or its two slots; TensorFlow's ``ResourceApplyAdam`` computes the same update in one kernel:
    ``alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``, ``m += (g - m) * (1 - beta_1)``,
    ``v += (g^2 - v) * (1 - beta_2)``, ``w -= alpha * m / (sqrt(v) + epsilon)`` with t the step
    counted from 1. AMSGrad, sparse gradients, mixed dtypes and the other backends keep Keras' update.
    """

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if self.amsgrad or not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = self._scalar("step", dtype, lambda: self.iterations + 1)
        beta_1 = self._scalar("beta_1", dtype, lambda: self.beta_1)
        beta_2 = self._scalar("beta_2", dtype, lambda: self.beta_2)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=self._scalar("beta_1_power", dtype, lambda: tf.pow(beta_1, step)),
            beta2_power=self._scalar("beta_2_power", dtype, lambda: tf.pow(beta_2, step)),
            lr=self._scalar("lr", dtype, lambda: learning_rate), beta1=beta_1, beta2=beta_2,
            epsilon=self._scalar("epsilon", dtype, lambda: self.epsilon), grad=gradient, use_nesterov=False)


def build_optimizer(learning_rate, momentum, clip_norm, name="sgd"):
    """The training optimizer; `clip_norm` scales all gradients by their global norm (Matterport's
    Keras-2.0.8 ``clipnorm``; over all replicas together), None or 0 disables clipping.

    Args:
        name: "sgd" (Matterport: SGD with `momentum`) or "adam" (Adam, beta_1 0.9; `momentum` unused),
            which trains a network from random weights several times faster (measured: bench/RESULTS.md).
    """
    clip = clip_norm if clip_norm else None
    if str(name).lower() == "adam":
        return ReplicaSumClipAdam(learning_rate=learning_rate, global_clipnorm=clip)
    return ReplicaSumClipSGD(learning_rate=learning_rate, momentum=momentum, global_clipnorm=clip)

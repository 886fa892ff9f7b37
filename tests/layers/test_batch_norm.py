"""BatchNorm: numerics against numpy, and the build-time `training` surviving Keras 3's functional override."""
import keras
import numpy as np
import pytest

from mrcnn_tf.layers import BatchNorm

EPS = 1e-3


def ref_inference(x, layer):
    gamma, beta, mean, var = (np.asarray(w) for w in (layer.gamma, layer.beta, layer.moving_mean,
                                                       layer.moving_variance))
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta


def ref_batch_stats(x, layer):
    axes = tuple(range(x.ndim - 1))
    gamma, beta = np.asarray(layer.gamma), np.asarray(layer.beta)
    return gamma * (x - x.mean(axes)) / np.sqrt(x.var(axes) + EPS) + beta


def set_weights(layer, rng, channels):
    layer.set_weights([rng.uniform(0.5, 2, channels), rng.normal(size=channels), rng.normal(size=channels),
                       rng.uniform(0.5, 2, channels)])


def build(train_bn_call=None, channels=3, **kwargs):
    inputs = keras.Input((4, 4, channels))
    bn = BatchNorm(name="bn_conv1", epsilon=EPS, **kwargs)
    outputs = bn(inputs, training=train_bn_call) if train_bn_call is not None else bn(inputs)
    return keras.Model(inputs, outputs), bn


def test_frozen_bn_ignores_model_training_flag(rng):
    model, bn = build(train_bn_call=False)
    set_weights(bn, rng, 3)
    x = rng.normal(2.0, 3.0, size=(4, 4, 4, 3)).astype(np.float32)
    moving = [np.asarray(bn.moving_mean).copy(), np.asarray(bn.moving_variance).copy()]
    assert bn.train_bn is False
    for training in (True, False, None):
        np.testing.assert_allclose(np.asarray(model(x, training=training)), ref_inference(x, bn), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), moving[0])


def test_frozen_bn_trains_gamma_beta_but_not_statistics(rng):
    model, bn = build(train_bn_call=False)
    set_weights(bn, rng, 3)
    moving = [np.asarray(bn.moving_mean).copy(), np.asarray(bn.moving_variance).copy()]
    gamma = np.asarray(bn.gamma).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
    model.fit(x, np.zeros_like(x), epochs=1, batch_size=4, verbose=0)
    assert not np.allclose(np.asarray(bn.gamma), gamma)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), moving[0])
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), moving[1])


def test_follow_mode_uses_batch_statistics_when_training(rng):
    model, bn = build()
    set_weights(bn, rng, 3)
    x = rng.normal(1.0, 2.0, size=(6, 4, 4, 3)).astype(np.float32)
    assert bn.train_bn is None
    np.testing.assert_allclose(np.asarray(model(x, training=True)), ref_batch_stats(x, bn), atol=1e-4)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), ref_inference(x, bn), atol=1e-4)


def test_train_bn_true_uses_batch_statistics_at_inference(rng):
    model, bn = build(train_bn_call=True)
    set_weights(bn, rng, 3)
    x = rng.normal(size=(5, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), ref_batch_stats(x, bn), atol=1e-4)


class Wrapper(keras.layers.Layer):
    """Calls its inner layer from `call`, as nets/heads.py's TimeDistributed does."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)


def test_build_time_flag_recorded_through_a_wrapper(rng):
    inputs = keras.Input((4, 3))
    bn = BatchNorm(epsilon=EPS)
    model = keras.Model(inputs, Wrapper(bn)(inputs, training=False))
    set_weights(bn, rng, 3)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    assert bn.train_bn is False
    np.testing.assert_allclose(np.asarray(model(x, training=True)), ref_inference(x, bn), atol=1e-4)


def test_constructor_flag_and_config_round_trip(rng):
    bn = BatchNorm(train_bn=False, epsilon=EPS, momentum=0.9, name="bn2a_branch2a")
    config = bn.get_config()
    assert config["train_bn"] is False and config["momentum"] == 0.9
    clone = bn.__class__.from_config(config)
    assert clone.get_config() == config
    x = rng.normal(size=(3, 5)).astype(np.float32)
    clone.build(x.shape)
    set_weights(clone, rng, 5)
    np.testing.assert_allclose(np.asarray(clone(x, training=True)), ref_inference(x, clone), atol=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bn))
    assert isinstance(restored, BatchNorm) and restored.train_bn is False
    with pytest.raises(ValueError, match="train_bn"):
        BatchNorm(train_bn="yes")


def test_eager_calls_do_not_fix_the_mode(rng):
    bn = BatchNorm(epsilon=EPS)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    bn(x, training=True)
    assert bn.train_bn is None


def test_functional_model_shapes_with_batch_none():
    model, _ = build(train_bn_call=False, channels=5)
    assert tuple(model.output.shape) == (None, 4, 4, 5)
    assert [w.name for w in model.layers[1].weights] == ["gamma", "beta", "moving_mean", "moving_variance"]


def keras_reference_step(layer, x, training):
    """Output, gradients (x, gamma, beta) and updated moving statistics through Keras' own BatchNorm code."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = keras.layers.BatchNormalization.call(layer, x, training=training)
        loss = tf.reduce_sum(y * tf.cos(y))
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y, *grads, layer.moving_mean.value, layer.moving_variance.value]


def fused_step(layer, x, training):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer.call(x, training=training)
        loss = tf.reduce_sum(y * tf.cos(y))
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y, *grads, layer.moving_mean.value, layer.moving_variance.value]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (1, 1, 1, 6), (8, 1, 1, 6)])
def test_fused_kernel_matches_keras_batch_norm(rng, training, shape):
    """The one-kernel path (scale and shift with moving statistics): outputs, gradients and moving statistics
    as Keras' elementwise BatchNorm."""
    import tensorflow as tf

    results = []
    for step in (keras_reference_step, fused_step):
        layer = BatchNorm(epsilon=EPS, momentum=0.9)
        layer.build(shape)
        set_weights(layer, np.random.default_rng(5), shape[-1])
        x = tf.constant(np.random.default_rng(6).normal(1.5, 2.0, size=shape).astype(np.float32))
        results.append([np.asarray(t) for t in tf.function(lambda v: step(layer, v, training))(x)])
    names = ["output", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"]
    for name, want, got in zip(names, *results):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=name)
    layer = BatchNorm(epsilon=EPS)
    layer.build(shape)
    graph = tf.function(lambda v: layer(v, training=training)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph
    ops = [op.type for op in graph.get_operations()]
    if training:
        assert "FusedBatchNormV3" in ops
    else:
        # Moving statistics: a scale and a shift, never the fused kernel (Grappler would fold it into the
        # convolution before, which oneDNN runs on a slow path on AVX2 CPUs).
        assert "FusedBatchNormV3" not in ops and ops.count("BiasAdd") == 1


def test_fused_kernel_on_an_empty_batch_and_half_precision(rng):
    layer = BatchNorm(epsilon=EPS)
    layer.build((None, 4, 4, 3))
    set_weights(layer, rng, 3)
    assert tuple(layer(np.zeros((0, 4, 4, 3), np.float32), training=False).shape) == (0, 4, 4, 3)
    half = BatchNorm(epsilon=EPS, dtype="mixed_float16")
    half.build((2, 4, 4, 3))
    set_weights(half, rng, 3)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float16)
    y = half(x, training=False)
    assert y.dtype == "float16"
    np.testing.assert_allclose(np.asarray(y, np.float32), ref_inference(x.astype(np.float32), half), atol=2e-2)

"""FullWindowConv2D equals keras Conv2D (valid, kernel = input window) in values, gradients and weight layout."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.layers.full_window_conv import FullWindowConv2D


@pytest.mark.parametrize("window, channels, filters, n", [(7, 5, 6, 9), (1, 8, 4, 3), (3, 2, 1, 0)])
def test_matches_conv2d_and_a_numpy_dot_product(rng, window, channels, filters, n):
    x = rng.normal(size=(n, window, window, channels)).astype(np.float32)
    ours = FullWindowConv2D(filters, (window, window), activation="relu")
    ref = keras.layers.Conv2D(filters, (window, window), padding="valid", activation="relu")
    ours.build(x.shape)
    ref.build(x.shape)
    kernel = rng.normal(size=(window, window, channels, filters)).astype(np.float32)
    bias = rng.normal(size=filters).astype(np.float32)
    ours.set_weights([kernel, bias])
    ref.set_weights([kernel, bias])
    out = np.asarray(ours(x))
    assert out.shape == (n, 1, 1, filters)
    if n:  # (keras' own Conv2D returns a wrongly shaped result for an empty batch)
        np.testing.assert_allclose(out, np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    plain = np.maximum(np.einsum("nhwc,hwcf->nf", x, kernel) + bias, 0)  # the slow reference
    np.testing.assert_allclose(out.reshape(n, filters), plain, rtol=1e-4, atol=1e-4)
    if n:
        grads = []
        for layer in (ours, ref):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x) ** 2)
            grads.append([np.asarray(g) for g in tape.gradient(loss, layer.trainable_weights)])
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_refuses_what_is_not_a_full_window_product():
    with pytest.raises(ValueError, match="must equal the kernel size"):
        FullWindowConv2D(4, (7, 7)).build((None, 9, 9, 3))
    with pytest.raises(ValueError, match="strides 1, padding 'valid'"):
        FullWindowConv2D(4, (3, 3), padding="same")


def test_config_round_trip_keeps_the_conv2d_kernel_shape():
    layer = FullWindowConv2D(16, (7, 7), name="mrcnn_class_conv1")
    clone = FullWindowConv2D.from_config(layer.get_config())
    clone.build((None, 7, 7, 8))
    assert tuple(clone.kernel.shape) == (7, 7, 8, 16) and clone.name == "mrcnn_class_conv1"

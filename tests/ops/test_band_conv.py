"""Convolution in row bands (ops/band_conv.py): values against a plain numpy convolution, both gradients
against tf.nn.conv2d, the choice of band counts, and mrcnn_tf's Conv2D layer taking the path."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.layers.conv2d import Conv2D
from mrcnn_tf.backend import band_conv
from mrcnn_tf.backend.band_conv import ConvBandsError, band_count, conv2d_in_bands
from mrcnn_tf.backend.conv_filter_grad import conv2d_matmul_filter_grad


def reference_conv(x, kernel, padding):
    """y[n, r, c, o] = sum over i, j, ch of x_pad[n, r + i, c + j, ch] * kernel[i, j, ch, o], by loops."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + out.shape[1], j:j + out.shape[2]].astype(np.float64),
                             kernel[i, j].astype(np.float64))
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("bands", [1, 2, 4])
def test_values_match_the_numpy_reference(seed, padding, bands):
    rng = np.random.default_rng(seed)
    kh, kw = int(rng.choice([2, 3, 5])), int(rng.choice([1, 3, 4]))  # even (asymmetric SAME) and odd kernels
    h_out = 4 * int(rng.integers(2, 5))
    h = h_out if padding == "SAME" else h_out + kh - 1
    x = rng.standard_normal((int(rng.integers(1, 3)), h, int(rng.integers(5, 11)), 3)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, 3, 4)).astype(np.float32)
    got = conv2d_in_bands(tf.constant(x), tf.constant(kernel), padding, bands)
    np.testing.assert_allclose(got.numpy(), reference_conv(x, kernel, padding), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("matmul_grad", [False, True])
def test_both_gradients_equal_tensorflow_conv2d(matmul_grad):
    rng = np.random.default_rng(11)
    x = tf.constant(rng.standard_normal((2, 16, 9, 5)).astype(np.float32))
    kernel = tf.Variable(rng.standard_normal((3, 3, 5, 6)).astype(np.float32))
    weights = tf.constant(rng.standard_normal((2, 16, 9, 6)).astype(np.float32))
    convolve = conv2d_matmul_filter_grad if matmul_grad else None
    results = []
    for conv in (lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"), lambda a, k: conv2d_in_bands(a, k, "SAME", 4, convolve)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(conv(x, kernel) * weights)
        results.append(tape.gradient(loss, [x, kernel]))
    for native, ours in zip(*results):
        np.testing.assert_allclose(ours.numpy(), native.numpy(), rtol=1e-4, atol=1e-4)


def test_empty_batch_and_rows_that_do_not_divide():
    kernel = tf.ones([3, 3, 2, 3])
    assert conv2d_in_bands(tf.zeros([0, 8, 8, 2]), kernel, "SAME", 4).shape == (0, 8, 8, 3)
    # 10 output rows do not split into 4 bands: the convolution runs whole, same values.
    x = np.random.default_rng(2).standard_normal((1, 10, 6, 2)).astype(np.float32)
    got = conv2d_in_bands(tf.constant(x), kernel, "SAME", 4)
    np.testing.assert_allclose(got.numpy(), reference_conv(x, np.ones((3, 3, 2, 3), np.float32), "SAME"),
                               rtol=1e-4, atol=1e-4)


def test_band_count_splits_only_large_wide_maps_on_a_cpu(monkeypatch):
    from mrcnn_tf.backend import runtime

    monkeypatch.delenv(band_conv.BANDS_VARIABLE, raising=False)
    assert band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=False, avx512=True) == 1  # fast whole
    monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: True)
    assert band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=False) == 1
    monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: False)  # AVX2 (or no flags to tell): bands
    assert band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=False) == 4  # ResNet-50 P2 at 512 px
    assert band_count((1, 64, 64, 256), (3, 3, 256, 512), on_gpu=False) == 4
    assert band_count((1, 40, 128, 256), (3, 3, 256, 256), on_gpu=False) == 2  # 10-row bands are too thin
    assert band_count((4, 64, 64, 64), (3, 3, 64, 64), on_gpu=False) == 1  # narrow: no gain (measured)
    assert band_count((100, 14, 14, 256), (3, 3, 256, 256), on_gpu=False) == 1  # the mask head's ROIs
    assert band_count((1, None, None, 256), (3, 3, 256, 256), on_gpu=False) == 1
    assert band_count((1, 128, 128, 256), (1, 1, 256, 256), on_gpu=False) == 1
    assert band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=True) == 1  # cuDNN needs none
    monkeypatch.setenv(band_conv.BANDS_VARIABLE, "off")
    assert band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=False) == 1
    monkeypatch.setenv(band_conv.BANDS_VARIABLE, "fast")
    with pytest.raises(ConvBandsError) as info:
        band_count((1, 128, 128, 256), (3, 3, 256, 256), on_gpu=False)
    assert "MRCNN_TF_CONV_BANDS='fast'" in str(info.value) and "\n" not in str(info.value)


def test_layer_runs_large_maps_in_bands_with_keras_values(monkeypatch):
    from mrcnn_tf.backend import runtime

    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: [])
    monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: False)  # an AVX2 CPU's choice, on any CPU
    calls = []
    real = band_conv.conv2d_in_bands
    monkeypatch.setattr("mrcnn_tf.layers.conv2d.conv2d_in_bands", lambda *a: calls.append(a[3]) or real(*a))
    x = np.random.default_rng(4).standard_normal((1, 64, 64, 128)).astype(np.float32)
    ours = Conv2D(8, 3, padding="same", activation="relu", name="fpn_p3")
    theirs = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    outputs, grads = [], []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            out = layer(x)
            loss = tf.reduce_sum(out * out)
        outputs.append(out.numpy())
        grads.append(tape.gradient(loss, layer.trainable_weights))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-3)
    assert calls == [4]
    calls.clear()
    np.testing.assert_allclose(tf.function(ours)(x).numpy(), outputs[1], rtol=1e-4, atol=1e-4)  # inference too
    assert calls == [4]

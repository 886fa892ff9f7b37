"""The matrix-product kernel gradient (ops/conv_filter_grad.py) and mrcnn_tf's Conv2D layer, against a
plain numpy reference and against keras' own Conv2D."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.layers.conv2d import Conv2D
from mrcnn_tf.backend import conv_filter_grad
from mrcnn_tf.backend.conv_filter_grad import ConvFilterGradError, conv2d_matmul_filter_grad, filter_gradient


def reference_filter_gradient(x, dy, kh, kw, padding):
    """dW[i, j, c, o] = sum over n, y, x of x_pad[n, y + i, x + j, c] * dy[n, y, x, o], by loops over taps."""
    if padding == "SAME":
        x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    n, h_out, w_out, c_out = dy.shape
    grad = np.zeros((kh, kw, x.shape[-1], c_out), np.float64)
    for i in range(kh):
        for j in range(kw):
            window = x[:, i:i + h_out, j:j + w_out, :].reshape(-1, x.shape[-1]).astype(np.float64)
            grad[i, j] = window.T @ dy.reshape(-1, c_out).astype(np.float64)
    return grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["taps", "im2col", None])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_filter_gradient_matches_reference(seed, method, padding):
    rng = np.random.default_rng(seed)
    kh, kw = int(rng.choice([2, 3, 5])), int(rng.choice([1, 3, 4]))  # even, odd and non-square kernels
    n, h, w, c_in, c_out = 2, int(rng.integers(5, 12)), int(rng.integers(5, 12)), 3, 4
    x = rng.standard_normal((n, h, w, c_in)).astype(np.float32)
    out_h, out_w = (h, w) if padding == "SAME" else (h - kh + 1, w - kw + 1)
    dy = rng.standard_normal((n, out_h, out_w, c_out)).astype(np.float32)
    got = filter_gradient(tf.constant(x), tf.constant(dy), (kh, kw, c_in, c_out), padding, method)
    np.testing.assert_allclose(got.numpy(), reference_filter_gradient(x, dy, kh, kw, padding), rtol=1e-4, atol=1e-4)


def test_filter_gradient_of_an_empty_batch_is_zero():
    got = filter_gradient(tf.zeros([0, 6, 6, 3]), tf.zeros([0, 6, 6, 5]), (3, 3, 3, 5), "SAME")
    assert got.shape == (3, 3, 3, 5) and not np.any(got.numpy())


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_values_and_both_gradients_equal_tensorflow_conv2d(padding):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal((3, 9, 8, 5)).astype(np.float32))
    kernel = tf.Variable(rng.standard_normal((3, 3, 5, 6)).astype(np.float32))
    weights = tf.constant(rng.standard_normal((3, 9, 8, 6) if padding == "SAME" else (3, 7, 6, 6)).astype(np.float32))
    results = []
    for conv in (lambda a, k: tf.nn.conv2d(a, k, 1, padding), lambda a, k: conv2d_matmul_filter_grad(a, k, padding)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = conv(x, kernel)
            loss = tf.reduce_sum(out * weights)
        results.append([out, *tape.gradient(loss, [x, kernel])])
    for native, ours in zip(*results):
        np.testing.assert_allclose(ours.numpy(), native.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides, policy, used", [(1, "matmul", True), (2, "matmul", False), (1, "native", False)])
def test_layer_equals_keras_conv2d_and_takes_the_matmul_path_only_where_it_applies(monkeypatch, strides, policy, used):
    monkeypatch.setenv(conv_filter_grad.POLICY_VARIABLE, policy)
    calls = []
    real = conv_filter_grad.conv2d_matmul_filter_grad
    monkeypatch.setattr("mrcnn_tf.layers.conv2d.conv2d_matmul_filter_grad", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 10, 10, 4)).astype(np.float32)
    ours = Conv2D(6, 3, strides=strides, padding="same", activation="relu", name="res2a_branch2b")
    theirs = keras.layers.Conv2D(6, 3, strides=strides, padding="same", activation="relu")
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    grads = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            out = layer(x)
            loss = tf.reduce_sum(out * out)
        grads.append((out, tape.gradient(loss, layer.trainable_weights)))
    np.testing.assert_allclose(grads[0][0].numpy(), grads[1][0].numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    assert bool(calls) == used
    # Without a tape (detect, predict) no kernel gradient is needed: the plain convolution runs.
    calls.clear()
    np.testing.assert_allclose(tf.function(ours)(x).numpy(), grads[1][0].numpy(), rtol=1e-5, atol=1e-5)
    assert not calls
    # Same config and weight names as Keras' Conv2D (checkpoints key nested layers by class name).
    assert type(ours).__name__ == "Conv2D" and ours.get_config()["filters"] == 6
    assert [w.path.split("/")[-1] for w in ours.weights] == ["kernel", "bias"]


def test_unknown_policy_is_one_line(monkeypatch):
    monkeypatch.setenv(conv_filter_grad.POLICY_VARIABLE, "fast")
    with pytest.raises(ConvFilterGradError) as info:
        conv_filter_grad.use_matmul_filter_grad()
    assert "MRCNN_TF_CONV_FILTER_GRAD='fast'" in str(info.value) and "\n" not in str(info.value)


def test_auto_policy_uses_matmul_only_on_a_cpu_without_avx512(monkeypatch):
    from mrcnn_tf.backend import runtime

    monkeypatch.setenv(conv_filter_grad.POLICY_VARIABLE, "auto")
    assert conv_filter_grad.use_matmul_filter_grad() == (not tf.config.list_logical_devices("GPU")
                                                         and not runtime.cpu_runs_avx512())
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: [])
    monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: True)  # oneDNN's AVX-512 kernel gradients: its own
    assert conv_filter_grad.use_matmul_filter_grad((4, 80, 80, 64), (3, 3, 64, 64)) is False
    monkeypatch.setenv(conv_filter_grad.POLICY_VARIABLE, "matmul")  # ... unless asked for
    assert conv_filter_grad.use_matmul_filter_grad((4, 80, 80, 64), (3, 3, 64, 64)) is True
    monkeypatch.setenv(conv_filter_grad.POLICY_VARIABLE, "auto")
    monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: False)
    # On a CPU: large maps or wide inputs take the matrix products, the mask head's small ROIs do not.
    assert conv_filter_grad.use_matmul_filter_grad((4, 80, 80, 64), (3, 3, 64, 64)) is True
    assert conv_filter_grad.use_matmul_filter_grad((4, 10, 10, 512), (3, 3, 512, 512)) is True
    assert conv_filter_grad.use_matmul_filter_grad((64, 14, 14, 128), (3, 3, 128, 128)) is False
    assert conv_filter_grad.use_matmul_filter_grad((None, None, None, 64), (3, 3, 64, 64)) is True
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: ["/GPU:0"])
    assert conv_filter_grad.use_matmul_filter_grad() is False
    assert conv_filter_grad.use_matmul_filter_grad((4, 80, 80, 64), (3, 3, 64, 64)) is False

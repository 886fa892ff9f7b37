"""A 2-D convolution whose kernel gradient is computed as matrix products (CPU training speed).

On an AVX2 CPU, oneDNN's kernel-gradient primitive for 3x3 convolutions (`jit:avx2 backward_weights`)
runs at a fraction of a plain matrix product's speed, and was the largest share of a training step's op time,
notably for ResNet-50's 512-wide RPN conv on the stride-4 map (measured: bench/RESULTS.md). The kernel gradient
of a stride-1 convolution is a sum over its k*k taps of (shifted input)^T @ (output gradient):

    dW[i, j, :, :] = X_pad[:, i:i+H_out, j:j+W_out, :]^T  @  dY          ([C_in, N*H*W] @ [N*H*W, C_out])

which this module computes either tap by tap (`taps`: nine products, one shifted copy of the input at a
time) or as one product of the im2col matrix (`im2col`: one [N*H*W, k*k*C_in] matrix, faster for wide
inputs, used while it stays under `IM2COL_LIMIT_BYTES`). The forward pass and the input gradient stay
TensorFlow's own convolution kernels.

Only stride-1, undilated, channels-last convolutions take this path (`supports`): the strided ones and
the 7x7 stem with 3 input channels are faster on oneDNN's own kernel (measured).
"""
import os

import tensorflow as tf

from mrcnn_tf.backend import compat, runtime
from mrcnn_tf.errors import MrcnnError

# MRCNN_TF_CONV_FILTER_GRAD: "auto" (matrix products on a CPU without AVX-512), "matmul" or "native".
POLICY_VARIABLE = "MRCNN_TF_CONV_FILTER_GRAD"
POLICIES = ("auto", "matmul", "native")
# Above this the im2col matrix (N*H*W x k*k*C_in floats) is not worth its memory: go tap by tap
# (ResNet-50's P2 at 512 px, 151 MB, still fits; at 1024 px, 604 MB, it does not).
IM2COL_LIMIT_BYTES = 256 * 2 ** 20
# From C_in = 256 the single im2col product beats nine tap products; below, taps win.
IM2COL_MIN_CHANNELS = 256
# On small maps with fewer input channels (the mask head's 14x14 ROIs at 128 channels) TensorFlow's own
# kernel is faster: "auto" keeps it there.
SMALL_MAP_PIXELS = 32 * 32


class ConvFilterGradError(MrcnnError, ValueError):
    """MRCNN_TF_CONV_FILTER_GRAD holds an unknown value."""


def policy():
    """The active policy, from MRCNN_TF_CONV_FILTER_GRAD (default "auto")."""
    value = os.environ.get(POLICY_VARIABLE, "auto").strip().lower() or "auto"
    if value not in POLICIES:
        raise ConvFilterGradError(f"{POLICY_VARIABLE}={value!r} is not a known setting: use auto, matmul or native")
    return value


def prefers_matmul(input_shape, kernel_shape):
    """Whether the matrix-product kernel gradient beats TensorFlow's kernel for this convolution (measured:
    it does on maps of at least SMALL_MAP_PIXELS and for inputs of at least IM2COL_MIN_CHANNELS channels)."""
    height, width, c_in = input_shape[1], input_shape[2], int(kernel_shape[2])
    return c_in >= IM2COL_MIN_CHANNELS or height is None or width is None or height * width >= SMALL_MAP_PIXELS


def use_matmul_filter_grad(input_shape=None, kernel_shape=None):
    """Whether a convolution traced now uses `conv2d_matmul_filter_grad`.

    "matmul" always does and "native" never; "auto" does on machines where TensorFlow sees no GPU (cuDNN's
    kernel gradients are fast) and oneDNN runs no AVX-512 (its AVX-512 kernel gradients are as fast as the
    products: bench/conv_filter_grad.py), and, given the shapes, where `prefers_matmul` says it pays.
    """
    chosen = policy()
    if chosen != "auto":
        return chosen == "matmul"
    if tf.config.list_logical_devices("GPU") or runtime.cpu_runs_avx512():
        return False
    return input_shape is None or kernel_shape is None or prefers_matmul(input_shape, kernel_shape)


def gradients_recorded():
    """Whether a GradientTape is recording now (a training step traces under one). Without one (detect,
    predict, PreciseBN's passes) no kernel gradient is needed, and the plain convolution keeps TensorFlow's
    conv + bias + relu fusion, which the custom-gradient wrapper would break up."""
    could_possibly_record = compat.private_or_none(
        "could_possibly_record", "every stride-1 convolution takes the matmul kernel gradient (same values)")
    return True if could_possibly_record is None else bool(could_possibly_record())


def supports(kernel_size, strides, dilation_rate, data_format, groups=1):
    """Whether a convolution of these settings can take the matrix-product kernel gradient."""
    return (tuple(strides) == (1, 1) and tuple(dilation_rate) == (1, 1) and data_format == "channels_last"
            and groups == 1 and max(kernel_size) > 1)


def _same_padding(kernel_size):
    """(before, after) zero padding of a stride-1 'same' convolution along one axis (TensorFlow's rule)."""
    total = kernel_size - 1
    return total // 2, total - total // 2


def filter_gradient(x, dy, kernel_shape, padding, method=None):
    """The kernel gradient of a stride-1 convolution, by matrix products.

    Args:
        x: [N, H, W, C_in] the convolution's input.
        dy: [N, H_out, W_out, C_out] the gradient of its output.
        kernel_shape: (kh, kw, C_in, C_out) static ints.
        padding: "SAME" or "VALID".
        method: "taps", "im2col" or None (choose by C_in and the im2col matrix's size).

    Returns:
        [kh, kw, C_in, C_out] in x's dtype.
    """
    kh, kw, c_in, c_out = (int(d) for d in kernel_shape)
    if padding.upper() == "SAME":
        x = tf.pad(x, [[0, 0], list(_same_padding(kh)), list(_same_padding(kw)), [0, 0]])
    h_out, w_out = tf.shape(dy)[1], tf.shape(dy)[2]
    dy_rows = tf.reshape(dy, [-1, c_out])
    shifted = [tf.reshape(x[:, i:i + h_out, j:j + w_out, :], [-1, c_in]) for i in range(kh) for j in range(kw)]
    if method is None:
        rows = 1
        for d in dy.shape[:3]:
            rows = None if d is None or rows is None else rows * int(d)
        fits = rows is not None and rows * kh * kw * c_in * x.dtype.size <= IM2COL_LIMIT_BYTES
        method = "im2col" if c_in >= IM2COL_MIN_CHANNELS and fits else "taps"
    if method == "im2col":
        # Column t * C_in + c of the im2col matrix is tap t, channel c: the kernel's (kh, kw, C_in) order.
        grad = tf.matmul(tf.concat(shifted, axis=1), dy_rows, transpose_a=True)
    else:
        grad = tf.stack([tf.matmul(s, dy_rows, transpose_a=True) for s in shifted])
    return tf.reshape(grad, [kh, kw, c_in, c_out])


def conv2d_matmul_filter_grad(x, kernel, padding):
    """`tf.nn.conv2d(x, kernel, 1, padding)` whose kernel gradient is `filter_gradient`.

    Args:
        x: [N, H, W, C_in]; kernel: [kh, kw, C_in, C_out] (static shape); padding: "SAME" or "VALID".

    Returns:
        [N, H_out, W_out, C_out], the same values as tf.nn.conv2d.
    """
    padding = padding.upper()
    kernel_shape = tuple(int(d) for d in kernel.shape)
    # A variable read here (eager calls) is a tensor to custom_gradient; its gradient still reaches the variable.
    kernel = tf.convert_to_tensor(kernel)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), strides=1, padding=padding)
            return dx, filter_gradient(x, dy, kernel_shape, padding)

        return tf.nn.conv2d(x, kernel, strides=1, padding=padding), grad

    return conv(x, kernel)

"""A stride-1 convolution over a large map run as a batch of row bands (CPU speed at batch 1).

On an AVX2 CPU, TensorFlow's oneDNN convolution of one large image runs its im2col + matrix-product
path far slower than on a batch of smaller images, so a large map (e.g. ResNet-50's 3x3 FPN conv on the
P2 map of a 512 px image) runs faster as row bands stacked on the batch axis (measured: bench/RESULTS.md).
The bands overlap by the kernel's reach (its halo), so each output row is computed from exactly the inputs it
always was: the values equal `tf.nn.conv2d`'s, and the gradients follow through the slices and the concatenation.

`band_count` decides; `conv2d_in_bands` computes. Only stride-1, undilated, channels-last convolutions
whose map height divides into bands qualify, and only where TensorFlow sees no GPU and oneDNN runs no AVX-512.
"""
import os

import tensorflow as tf

from mrcnn_tf.backend import runtime
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.backend.conv_filter_grad import _same_padding

# MRCNN_TF_CONV_BANDS: "auto" (bands where `band_count` says they pay) or "off" (every convolution whole).
BANDS_VARIABLE = "MRCNN_TF_CONV_BANDS"

# Maps of at least this many pixels per image are split (ResNet-50's P2 and P3 at 512 px: 128x128, 64x64).
BAND_MIN_PIXELS = 64 * 64
# Narrow inputs gain nothing: with 64 channels a map ran slower in bands than whole.
BAND_MIN_CHANNELS = 128
# Rows per band at least: below it the halo rows are too large a share of the work.
BAND_MIN_ROWS = 16
BANDS = (4, 2)


class ConvBandsError(MrcnnError, ValueError):
    """MRCNN_TF_CONV_BANDS holds an unknown value."""


def bands_enabled():
    """Whether MRCNN_TF_CONV_BANDS allows bands (default "auto": yes)."""
    value = os.environ.get(BANDS_VARIABLE, "auto").strip().lower() or "auto"
    if value not in ("auto", "off"):
        raise ConvBandsError(f"{BANDS_VARIABLE}={value!r} is not a known setting: use auto or off")
    return value == "auto"


def band_count(input_shape, kernel_shape, on_gpu=None, avx512=None):
    """Bands to split a stride-1 convolution's input into (1: run it whole).

    Args:
        input_shape: static [N, H, W, C_in] (entries may be None).
        kernel_shape: (kh, kw, C_in, C_out).
        on_gpu: whether TensorFlow sees a GPU (default: asks TensorFlow); cuDNN needs no bands.
        avx512: whether oneDNN runs AVX-512 kernels (default: `runtime.cpu_runs_avx512`); they convolve one large
            map fast enough that bands only add their halo.
    """
    if not bands_enabled():
        return 1
    height, width, c_in = input_shape[1], input_shape[2], int(kernel_shape[2])
    if height is None or width is None or c_in < BAND_MIN_CHANNELS or int(kernel_shape[0]) < 2:
        return 1
    if height * width < BAND_MIN_PIXELS:
        return 1
    if on_gpu is None:
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
    if on_gpu or (runtime.cpu_runs_avx512() if avx512 is None else avx512):
        return 1
    for bands in BANDS:
        if height % bands == 0 and height // bands >= BAND_MIN_ROWS:
            return bands
    return 1


def conv2d_in_bands(x, kernel, padding, bands, convolve=None):
    """`tf.nn.conv2d(x, kernel, 1, padding)` computed on `bands` overlapping row bands at once.

    Args:
        x: [N, H, W, C_in] with a static H divisible by `bands` (SAME) or H - kh + 1 divisible (VALID).
        kernel: [kh, kw, C_in, C_out] with a static shape.
        padding: "SAME" or "VALID".
        bands: number of bands (>= 1).
        convolve: fn(x, kernel, "VALID") doing the convolution of the stacked bands (default
            tf.nn.conv2d at stride 1), e.g. the matrix-product kernel gradient's convolution.

    Returns:
        [N, H_out, W_out, C_out], the values of tf.nn.conv2d.
    """
    convolve = convolve or (lambda inputs, k, pad: tf.nn.conv2d(inputs, k, strides=1, padding=pad))
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    if padding.upper() == "SAME":
        x = tf.pad(x, [[0, 0], list(_same_padding(kh)), list(_same_padding(kw)), [0, 0]])
    h_out = int(x.shape[1]) - kh + 1
    if bands <= 1 or h_out % bands:
        return convolve(x, kernel, "VALID")
    rows = h_out // bands
    # Band b computes output rows [b*rows, (b+1)*rows): it reads padded input rows [b*rows, (b+1)*rows + kh - 1).
    stacked = tf.concat([x[:, b * rows:(b + 1) * rows + kh - 1] for b in range(bands)], axis=0)
    y = convolve(stacked, kernel, "VALID")  # [bands * N, rows, W_out, C_out], band-major
    # The output's sizes come from the input and the kernel, not from y: on an empty batch TensorFlow's oneDNN
    # convolution can hand back its (empty) input, whose shape is not the output's.
    c_out = int(kernel.shape[3])
    w_out = int(x.shape[2]) - kw + 1 if x.shape[2] is not None else tf.shape(y)[2]
    y = tf.reshape(y, [bands, -1, rows, w_out, c_out])
    return tf.reshape(tf.transpose(y, [1, 0, 2, 3, 4]), [-1, h_out, w_out, c_out])

"""What the CPU backend runs in this process, recorded in every run's config (`Config.CPU_KERNELS`).

The convolution layer's choices (matrix-product kernel gradients, row bands) depend on the machine (GPU,
oneDNN's instruction set) and on MRCNN_TF_CONV_FILTER_GRAD / MRCNN_TF_CONV_BANDS; a checkpoint's config JSON
says which were taken, so a run's speed can be read back and compared on the same terms.
"""
from mrcnn_tf.backend import band_conv, conv_filter_grad, runtime


def kernel_plan():
    """The backend's choices here, as JSON-friendly values.

    Returns:
        dict: device ("cpu" or "gpu"), onednn (bool, or None where TensorFlow cannot say), isa ("avx512" where
        oneDNN runs AVX-512 kernels, else "below-avx512"), conv_filter_grad ("matmul-where-faster", "matmul" or
        "native"), conv_bands ("where-faster" or "off"), bf16_units (oneDNN runs bfloat16 on the CPU's own
        units) and bf16_faster (faster than float32 there, too: what MIXED_PRECISION "auto" looks at).
    """
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    avx512 = runtime.cpu_runs_avx512()
    policy = conv_filter_grad.policy()
    if policy == "auto":
        policy = "matmul-where-faster" if conv_filter_grad.use_matmul_filter_grad() else "native"
    try:
        onednn = runtime.onednn_enabled()
    except ImportError:  # the private check moved (backend/compat.py): say nothing rather than guess
        onednn = None
    return {"device": "gpu" if gpu else "cpu", "onednn": onednn, "isa": "avx512" if avx512 else "below-avx512",
            "conv_filter_grad": policy,
            "conv_bands": "where-faster" if band_conv.bands_enabled() and not gpu and not avx512 else "off",
            "bf16_units": runtime.cpu_runs_bf16(), "bf16_faster": runtime.cpu_bf16_faster()}

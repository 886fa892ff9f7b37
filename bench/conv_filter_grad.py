"""Kernel gradient of 3x3 convolutions: TensorFlow's own kernel against mrcnn_tf's matrix products.

    python bench/conv_filter_grad.py            # 2 threads, median of 5 calls per case

For each convolution shape of the ResNet-18/50 FPN models (backbone stages, FPN, RPN, mask head) it times
`Conv2DBackpropFilter` (oneDNN's kernel when oneDNN is on) and `mrcnn_tf.backend.conv_filter_grad.filter_gradient`
tap by tap and as one im2col product, checks that all three agree, and prints GFLOP/s. This is what
`MRCNN_TF_CONV_FILTER_GRAD=auto` chooses from on a CPU (ops/conv_filter_grad.py).
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time


CASES = [  # name, input [N, H, W, C_in], kernel [kh, kw, C_in, C_out]
    ("R18 res2 64->64, 80x80, batch 4", (4, 80, 80, 64), (3, 3, 64, 64)),
    ("R18 RPN conv 64->128 on P2, 80x80, batch 4", (4, 80, 80, 64), (3, 3, 64, 128)),
    ("R18 res3 128->128, 40x40, batch 4", (4, 40, 40, 128), (3, 3, 128, 128)),
    ("R18 res5 512->512, 10x10, batch 4", (4, 10, 10, 512), (3, 3, 512, 512)),
    ("mask head 128->128, 14x14, 64 ROIs", (64, 14, 14, 128), (3, 3, 128, 128)),
    ("R50 fpn_p2 256->256, 128x128, batch 1", (1, 128, 128, 256), (3, 3, 256, 256)),
    ("R50 RPN conv 256->512 on P2, 128x128, batch 1", (1, 128, 128, 256), (3, 3, 256, 512)),
    ("R50 res2 64->64, 128x128, batch 1", (1, 128, 128, 64), (3, 3, 64, 64)),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    import mrcnn_tf  # noqa: F401  (oneDNN on before TensorFlow loads)
    import tensorflow as tf
    from mrcnn_tf.backend.conv_filter_grad import filter_gradient, prefers_matmul

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"bench/conv_filter_grad.py {datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, {args.threads} threads, load {os.getloadavg()[0]:.1f}")
    methods = {
        "native": lambda x, dy, k: tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=k, out_backprop=dy,
                                                                  strides=[1, 1, 1, 1], padding="SAME"),
        "taps": lambda x, dy, k: filter_gradient(x, dy, k, "SAME", "taps"),
        "im2col": lambda x, dy, k: filter_gradient(x, dy, k, "SAME", "im2col"),
    }
    # What MRCNN_TF_CONV_FILTER_GRAD=auto does on a CPU: TensorFlow's kernel where `prefers_matmul` says no.
    methods["auto"] = lambda x, dy, k: (filter_gradient(x, dy, k, "SAME") if prefers_matmul(x.shape, k)
                                        else methods["native"](x, dy, k))
    rng = np.random.default_rng(0)
    print("| convolution | GFLOP | TensorFlow kernel ms | taps ms | im2col ms | auto ms | auto / TensorFlow |")
    print("|---|---|---|---|---|---|---|")
    speedups = []
    for name, x_shape, k_shape in CASES:
        x = tf.constant(rng.standard_normal(x_shape, dtype=np.float32))
        dy = tf.constant(rng.standard_normal(x_shape[:3] + (k_shape[3],), dtype=np.float32))
        gflop = 2 * np.prod(x_shape[:3]) * np.prod(k_shape) / 1e9
        times, reference = {}, None
        for label, method in methods.items():
            fn = tf.function(lambda x, dy, method=method: method(x, dy, k_shape))
            result = fn(x, dy)
            reference = result if reference is None else reference
            error = float(tf.reduce_max(tf.abs(result - reference)) / tf.reduce_max(tf.abs(reference)))
            if error > 1e-4:
                sys.exit(f"{label} disagrees with TensorFlow's kernel on {name}: relative error {error:.1e}")
            samples = []
            for _ in range(args.runs):
                began = time.perf_counter()
                fn(x, dy).numpy()
                samples.append(time.perf_counter() - began)
            times[label] = statistics.median(samples) * 1e3
        speedups.append(times["native"] / times["auto"])
        print(f"| {name} | {gflop:.1f} | {times['native']:.1f} | {times['taps']:.1f} | {times['im2col']:.1f} | "
              f"{times['auto']:.1f} | {times['auto'] / times['native']:.2f}x |")
    print(f"\nSUMMARY conv_filter_grad {datetime.date.today()}: auto is {min(speedups):.2f}-{max(speedups):.2f}x "
          f"faster than TensorFlow's kernel gradient over {len(CASES)} shapes, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

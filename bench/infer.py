"""Inference latency, peak memory and achieved GFLOP/s of Mask R-CNN (ResNet-50 FPN, 512x512, batch 1).

    python bench/infer.py                      # 2 threads, 7 timed runs, eager + tf.function + detect
    python bench/infer.py --threads 2 --runs 15 --xla
    python bench/infer.py --mixed-precision mixed_bfloat16

The work matches the torchvision reference of the "Scale and speed" issue (maskrcnn_resnet50_fpn:
1000 RPN proposals, 100 detections forced through the mask head with score threshold 0): here
POST_NMS_ROIS_INFERENCE=1000, DETECTION_MIN_CONFIDENCE=0, DETECTION_MAX_INSTANCES=100, 81 classes,
random weights (the cost does not depend on the weights; COCO weights are not available offline).

Timed variants (median of --runs after two warm-up calls):
  graph   MaskRCNN.predict_molded, the tf.function detect() uses (one trace for every image size)
  detect  MaskRCNN.detect([image]): molding + graph + unmolding 100 full-size masks
  eager   keras_model(inputs) op by op, without tf.function
  xla     the graph under tf.function(jit_compile=True) (--xla; reports the error when XLA cannot)
The machine's float32 peak is the best of five 4096^3 matmuls (TF and XLA kernels) on the same threads; model FLOPs are
counted by the TF profiler on the traced graph. The last line is a one-line summary for RESULTS.md.
"""
import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import mrcnn_tf  # noqa: E402,F401  (before TensorFlow: its process settings, oneDNN on every x86 CPU)

# Ratios against torchvision come only from bench/compare_torchvision.py, which times both in one run.


# ---------------------------------------------------------------------- shared helpers (train_step.py, memory.py)
def set_threads(threads):
    """Pin TensorFlow to `threads` intra- and inter-op threads (call before any TF op runs)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def bench_config(mixed_precision=False, xla=False, size=512, images=1):
    """The benchmark Config: ResNet-50 FPN, size x size, the issue's detection settings."""
    from mrcnn_tf.config import Config

    attributes = dict(NAME="bench", BACKBONE="resnet50", GPU_COUNT=1, IMAGES_PER_GPU=images, NUM_CLASSES=81,
                      IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
                      POST_NMS_ROIS_INFERENCE=1000, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=100,
                      MIXED_PRECISION=mixed_precision, XLA=xla)
    return type("BenchConfig", (Config,), attributes)()


def rss_mb():
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb():
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load():
    """The 1-minute load average (the machine is shared: every timing is printed next to it)."""
    return os.getloadavg()[0]


def timed(fn, runs, warmup=3):
    """(median seconds, all times, load averages) of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times, loads = [], []
    for _ in range(runs):
        loads.append(load())
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, loads


def peak_gflops(n=4096, runs=5):
    """Best achieved float32 matmul GFLOP/s on this machine with the current TF thread settings.

    The best run, not the median: it is the machine's ceiling, and on a shared machine every other
    run is slowed by the neighbours.
    """
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    best = {}
    # TF's own MatMul kernel and XLA's differ by 2x on some CPUs: the faster one is the ceiling.
    for name, jit in (("tf", False), ("xla", True)):
        matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)), jit_compile=jit)
        _, times, _ = timed(lambda: matmul().numpy(), runs, warmup=1)
        best[name] = 2 * n ** 3 / min(times) / 1e9
    print(f"float32 matmul {n}^3: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in best.items()))
    return max(best.values())


def graph_flops(fn, *specs):
    """Float operations of one call of tf.function `fn` at the given TensorSpecs (TF profiler)."""
    import tensorflow as tf

    graph = fn.get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=options)
    return info.total_float_ops


def header(name, args):
    """Date, command, machine and TF version lines for RESULTS.md."""
    import tensorflow as tf

    return (f"{name}  date={datetime.datetime.now():%Y-%m-%d %H:%M}  cmd=python {' '.join(sys.argv)}\n"
            f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()} threads={args.threads} "
            f"tf={tf.__version__} python={platform.python_version()}")


def fmt(seconds, loads):
    return f"{seconds:.3f} s (load {min(loads):.1f}-{max(loads):.1f})"


# ---------------------------------------------------------------------- inference
def print_timings(results, flops, peak, width):
    """One line per variant: median (with load), GFLOP/s and share of `peak`, or the failure text."""
    for name, value in results.items():
        if isinstance(value, str):
            print(f"  {name:{width}s} {value}")
            continue
        median, times, loads = value
        print(f"  {name:{width}s} median {fmt(median, loads)}  {flops / median / 1e9:.1f} GFLOP/s = "
              f"{flops / median / 1e9 / peak:.0%} of peak  runs={len(times)} "
              f"[{', '.join(f'{t:.2f}' for t in times)}]")


def synthetic_image(size, seed=0):
    """A 512x512 RGB smear-like image: bright discs on a noisy background (uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(150, 230, size=(size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):
        cy, cx, r = rng.integers(30, size - 30), rng.integers(30, size - 30), rng.integers(10, 40)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(40, 140, size=3)
    return image


def run(args):
    set_threads(args.threads)
    import numpy as np
    import tensorflow as tf

    from mrcnn_tf import model as modellib

    print(header("bench/infer.py", args))
    rss_start = rss_mb()
    config = bench_config(mixed_precision=args.mixed_precision or False, size=args.size)
    with tempfile.TemporaryDirectory() as logs:
        mrcnn = modellib.MaskRCNN(mode="inference", config=config, model_dir=logs)
    rss_built = rss_mb()
    image = synthetic_image(args.size)
    molded, metas, _ = mrcnn.mold_inputs([image])
    anchors = mrcnn.get_anchors(molded[0].shape)[np.newaxis]
    inputs = [tf.constant(molded, tf.float32), tf.constant(metas, tf.float32), tf.constant(anchors, tf.float32)]
    results = {}

    results["graph"] = timed(lambda: mrcnn.predict_molded(molded, metas, anchors), args.runs)
    traces = mrcnn.trace_count()
    detections = mrcnn.detect([image])[0]
    results["detect"] = timed(lambda: mrcnn.detect([image]), args.runs)
    rss_peak_infer = peak_rss_mb()
    results["eager"] = timed(lambda: [o.numpy() for o in mrcnn.keras_model(inputs, training=False)],
                             max(2, args.runs // 3), warmup=1)
    if args.xla:
        model = mrcnn.keras_model
        xla_fn = tf.function(lambda a, b, c: model([a, b, c], training=False), jit_compile=True)
        try:
            results["xla"] = timed(lambda: [o.numpy() for o in xla_fn(*inputs)], args.runs)
        except Exception as exc:  # XLA refuses some ops (NMS with dynamic output, map_fn): report it
            results["xla"] = f"not compilable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    model = mrcnn.keras_model
    forward = tf.function(lambda a, b, c: model([a, b, c], training=False))
    flops = graph_flops(forward, *[tf.TensorSpec(t.shape, t.dtype) for t in inputs])
    peak = peak_gflops()

    print(f"detections: {len(detections['class_ids'])}  traces of the detect function: {traces}")
    print(f"RSS MiB: start {rss_start:.0f}, after build {rss_built:.0f}, peak through detect {rss_peak_infer:.0f}")
    print(f"model: {flops / 1e9:.1f} GFLOP per image (TF profiler); machine float32 matmul peak "
          f"{peak:.1f} GFLOP/s")
    print_timings(results, flops, peak, width=7)
    graph_s, detect_s = results["graph"][0], results["detect"][0]
    print(f"SUMMARY infer {datetime.date.today()} threads={args.threads} size={args.size} "
          f"mp={args.mixed_precision or 'float32'}: graph {graph_s:.3f} s, detect {detect_s:.3f} s "
          f"eager {results['eager'][0]:.3f} s, {flops / graph_s / 1e9:.1f} GFLOP/s of {peak:.1f} peak "
          f"({flops / graph_s / 1e9 / peak:.0%}), peak RSS {rss_peak_infer:.0f} MiB, "
          f"load {load():.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--xla", action="store_true", help="also try the whole graph under jit_compile")
    parser.add_argument("--mixed-precision", default=None, choices=["mixed_float16", "mixed_bfloat16"])
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

"""Memory over many consecutive `detect` calls (Matterport issues #1981 / #2372: RSS grows per call).

    python bench/memory.py                   # 200 calls, 512x512, ResNet-50, 2 threads
    python bench/memory.py --calls 500 --size 256

Prints the RSS after building the model, after 10 warm-up calls, every --every calls, and at the end,
plus the growth per call after warm-up (a leak shows as a steady positive slope; allocator noise as a
few MiB that do not grow with the call count) and the number of traces of the detect function.
"""
import argparse
import datetime
import gc
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from infer import bench_config, header, load, peak_rss_mb, rss_mb, set_threads, synthetic_image  # noqa: E402


def run(args):
    set_threads(args.threads)
    import numpy as np

    from mrcnn_tf import model as modellib

    print(header("bench/memory.py", args))
    config = bench_config(size=args.size)
    with tempfile.TemporaryDirectory() as logs:
        mrcnn = modellib.MaskRCNN(mode="inference", config=config, model_dir=logs)
    images = [synthetic_image(args.size, seed) for seed in range(4)]
    built = rss_mb()
    for i in range(10):
        mrcnn.detect([images[i % 4]])
    gc.collect()
    start = rss_mb()
    print(f"RSS MiB: after build {built:.0f}, after 10 warm-up calls {start:.0f}")
    samples = []
    for i in range(args.calls):
        mrcnn.detect([images[i % 4]])
        if (i + 1) % args.every == 0:
            gc.collect()
            samples.append((i + 1, rss_mb()))
            print(f"  call {i + 1:4d}: RSS {samples[-1][1]:.0f} MiB  load {load():.1f}")
    end = samples[-1][1] if samples else rss_mb()
    calls = np.array([c for c, _ in samples], float)
    values = np.array([v for _, v in samples], float)
    slope = float(np.polyfit(calls, values, 1)[0]) if len(samples) > 1 else 0.0
    traces = mrcnn.trace_count()
    print(f"SUMMARY memory {datetime.date.today()} threads={args.threads} size={args.size}: {args.calls} detect calls, "
          f"RSS {start:.0f} -> {end:.0f} MiB after warm-up ({end - start:+.0f} MiB, slope {slope * 1024:+.1f} KiB/call), "
          f"peak RSS {peak_rss_mb():.0f} MiB, traces {traces}, load {load():.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

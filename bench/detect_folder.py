"""`detect` at folder scale: images/s over N synthetic LISC-size fields, with and without overlays, and RAM.

    python bench/detect_folder.py                       # 500 fields, 720x576, batch 4, 2 threads
    python bench/detect_folder.py --images 100 --batch-size 1 --baseline 50

The model is `mrcnn_tf.wbc.demo.DemoConfig` (ResNet-18 FPN, 256 px) with RANDOM weights and
DETECTION_MIN_CONFIDENCE 0, DETECTION_MAX_INSTANCES 3, so every field gets 3 detections to draw (a LISC
field holds 1-4 cells); the cost does not depend on the weights. Fields are drawn by
`mrcnn_tf.wbc.synth.render_smear` and written as 24-bit BMPs like LISC's.

Timed, each into a fresh output folder, after one untimed warm-up call (the graph trace):
  serial     the loop `detect` ran before this change (read, detect, overlay, one image at a time) over the
             first --baseline fields, for comparison
  overlays   `run_detect` over all fields: batches, read-ahead and write-behind threads, journal, counts
  plain      the same with overlays=False (`detect --no-overlays`)
RSS is sampled after every batch; the last line is a one-line summary for RESULTS.md, with the load average
(the machine is shared).
"""
import argparse
import datetime
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from infer import load, peak_rss_mb, rss_mb, set_threads  # noqa: E402


def write_fields(folder, count, seed=0):
    """`count` synthetic smears (720x576 BMP, 1-3 leukocytes each) in `folder`."""
    import numpy as np
    from PIL import Image

    from mrcnn_tf.wbc.synth import render_smear

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        image, _, _ = render_smear(rng, [int(c) for c in rng.integers(1, 6, size=rng.integers(1, 4))])
        path = folder / f"field_{k:04d}.bmp"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def build_model(batch_size, logs):
    import numpy as np

    from mrcnn_tf.wbc.demo import DemoConfig
    from mrcnn_tf.model import MaskRCNN

    config = type("BenchDetectConfig", (DemoConfig,), {"IMAGES_PER_GPU": batch_size, "DETECTION_MIN_CONFIDENCE": 0.0,
                                                       "DETECTION_MAX_INSTANCES": 3})()
    model = MaskRCNN(mode="inference", config=config, model_dir=logs)
    model.detect([np.full((576, 720, 3), 200, np.uint8)] * batch_size)  # trace once, untimed
    return model


def serial(model, inputs, output, class_names):
    """The former `detect` loop: one image read, detected and drawn at a time."""
    from mrcnn_tf import visualize
    from mrcnn_tf.data.dataset import Dataset

    output.mkdir(parents=True)
    reader = Dataset()
    for i, path in enumerate(inputs):
        reader.add_image("input", i, str(path))
    started = time.perf_counter()
    for i, path in enumerate(inputs):
        image = reader.load_image(i)
        r = model.detect([image])[0]
        visualize.save_instances(output / f"{path.stem}_overlay.png", image, r["rois"], r["masks"], r["class_ids"],
                                 class_names, r["scores"])
    return len(inputs) / (time.perf_counter() - started)


def folder_run(model, inputs, output, class_names, overlays):
    """(images/s, RSS samples MiB, load averages) of one `run_detect` over `inputs`."""
    from mrcnn_tf.inference.detect_folder import run_detect

    samples, loads = [rss_mb()], [load()]

    def progress(done, todo):
        samples.append(rss_mb())
        if done % 100 < model.config.BATCH_SIZE:
            loads.append(load())
            print(f"  {'overlays' if overlays else 'plain':8s} {done:4d}/{todo}: RSS {samples[-1]:.0f} MiB, "
                  f"load {loads[-1]:.1f}", flush=True)

    summary = run_detect(model, inputs, output, class_names, overlays=overlays, progress=progress, echo=print)
    return summary["detected"] / summary["seconds"], samples, loads


def run(args):
    set_threads(args.threads)
    from mrcnn_tf.inference.detect_folder import class_names_for

    print(f"bench/detect_folder.py {datetime.datetime.now():%Y-%m-%d %H:%M} images={args.images} "
          f"batch={args.batch_size} threads={args.threads} load={load():.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        started = time.perf_counter()
        inputs = write_fields(tmp / "fields", args.images)
        print(f"wrote {len(inputs)} fields in {time.perf_counter() - started:.0f} s")
        model = build_model(args.batch_size, str(tmp / "logs"))
        names = class_names_for(model.config)
        built = rss_mb()
        print(f"RSS after model build and warm-up: {built:.0f} MiB")
        serial_rate = serial(model, inputs[:args.baseline], tmp / "serial", names) if args.baseline else None
        if serial_rate:
            print(f"serial loop ({args.baseline} fields): {serial_rate:.2f} images/s, load {load():.1f}")
        rate_overlays, rss_overlays, load_overlays = folder_run(model, inputs, tmp / "overlays", names, True)
        print(f"run_detect with overlays: {rate_overlays:.2f} images/s")
        rate_plain, rss_plain, load_plain = folder_run(model, inputs, tmp / "plain", names, False)
        print(f"run_detect --no-overlays: {rate_plain:.2f} images/s")
    samples = rss_overlays + rss_plain
    loads = load_overlays + load_plain
    baseline = f"serial loop {serial_rate:.2f} images/s ({args.baseline} fields), " if serial_rate else ""
    print(f"SUMMARY detect_folder {datetime.date.today()} {args.images} fields 720x576, DemoConfig random weights, "
          f"batch {args.batch_size}, threads {args.threads}: {baseline}with overlays {rate_overlays:.2f} images/s, "
          f"--no-overlays {rate_plain:.2f} images/s; RSS {built:.0f} MiB after build, {min(samples):.0f}-"
          f"{max(samples):.0f} MiB over the runs (with overlays {rss_overlays[0]:.0f} -> {rss_overlays[-1]:.0f}, "
          f"plain {rss_plain[0]:.0f} -> {rss_plain[-1]:.0f}), peak {peak_rss_mb():.0f} MiB; load "
          f"{min(loads):.1f}-{max(loads):.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", type=int, default=100, help="fields for the serial loop (0: skip it)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

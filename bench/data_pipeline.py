"""Input-pipeline throughput at the LISC config, and (optionally) the rate a training step consumes.

    python bench/data_pipeline.py                      # synthetic LISC set, 1 and 2 workers
    python bench/data_pipeline.py --workers 4 --multiprocessing --batches 40
    python bench/data_pipeline.py --dataset "/data/LISC" --train-step

Images go through `DataGenerator` exactly as `fit` pulls them: Keras' `PyDatasetAdapter` with the
given workers and prefetch queue, LISC default augmentation, LiscConfig (512x512, ResNet-50 targets).
With --train-step it also times `train_on_batch` of the LISC training model on the same machine
(after a warm-up) and prints the ratio; the pipeline must deliver at least 3x that rate.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pipeline_rate(dataset, config, workers, multiprocessing, batches, seed=0):
    """Images per second through Keras' adapter (first batch, which warms caches, excluded)."""
    from mrcnn_tf.backend.compat import private

    PyDatasetAdapter = private("PyDatasetAdapter")

    from mrcnn_tf.data.augment import lisc_augmentation
    from mrcnn_tf.data.pipeline import DataGenerator

    gen = DataGenerator(dataset, config, shuffle=True, augmentation=lisc_augmentation(), steps=batches + 1,
                        seed=seed, workers=workers, use_multiprocessing=multiprocessing,
                        max_queue_size=max(2 * workers, 4))
    adapter = PyDatasetAdapter(gen, shuffle=False)
    adapter.on_epoch_begin()
    iterator = iter(adapter.get_numpy_iterator())
    next(iterator)
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    elapsed = time.perf_counter() - start
    adapter.on_epoch_end()
    return count * gen.batch_size / elapsed


def train_step_rate(dataset, config, steps=3):
    """Images per second consumed by `train_on_batch` of the LISC training model (heads + backbone)."""
    from mrcnn_tf import model as modellib
    from mrcnn_tf.data.pipeline import DataGenerator

    config.TRAIN_BN = None  # random weights: BN must train (DESIGN §7); cost is the same either way
    config.refresh()
    with tempfile.TemporaryDirectory() as logs:
        mrcnn = modellib.MaskRCNN(mode="training", config=config, model_dir=logs)
        mrcnn.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
        gen = DataGenerator(dataset, config, seed=0)
        batches = [gen[i][0] for i in range(min(steps + 1, len(gen)))]
        mrcnn.keras_model.train_on_batch(batches[0])  # trace and compile
        start = time.perf_counter()
        for x in batches[1:]:
            mrcnn.keras_model.train_on_batch(x)
        elapsed = time.perf_counter() - start
    return (len(batches) - 1) * config.BATCH_SIZE / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="LISC or WBC folder (default: a synthetic LISC set in a temp folder)")
    parser.add_argument("--per-class", type=int, default=8, help="synthetic images per type (default 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--multiprocessing", action="store_true", help="worker processes instead of threads")
    parser.add_argument("--batches", type=int, default=12, help="batches timed per measurement")
    parser.add_argument("--train-step", action="store_true", help="also time a training step (builds the model)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from mrcnn_tf.wbc import synth
    from mrcnn_tf.lisc import LiscConfig, LiscDataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dataset
        if root is None:
            root = pathlib.Path(tmp)
            synth.write_lisc(root, per_class=args.per_class, mixt=2, seed=0)
        dataset = LiscDataset()
        dataset.load_lisc(root, "all")
        dataset.prepare()
        config = LiscConfig()
        print(f"LISC config: {config.IMAGE_MAX_DIM}x{config.IMAGE_MAX_DIM}, batch {config.BATCH_SIZE}, "
              f"{dataset.num_images} images, {os.cpu_count()} CPUs, augmentation on")
        best = 0.0
        for workers in args.workers:
            rate = pipeline_rate(dataset, config, workers, args.multiprocessing, args.batches)
            best = max(best, rate)
            kind = "processes" if args.multiprocessing else "threads"
            print(f"pipeline  workers={workers} ({kind}): {rate:7.2f} images/s")
        if args.train_step:
            step_rate = train_step_rate(dataset, config)
            print(f"training step consumes:          {step_rate:7.2f} images/s")
            print(f"pipeline / training step:        {best / step_rate:7.1f}x (must be >= 3x)")


if __name__ == "__main__":
    main()

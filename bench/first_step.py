"""Start-up cost of training: building the model, tracing and optimising the training step, then a step.

    python bench/first_step.py                         # the tests' tiny config (ResNet-18, 64 px)
    python bench/first_step.py --backbone resnet50 --size 256 --rois 200
    python bench/first_step.py --config demo          # the demo's own step (batch 4, BatchNorm trained, Adam)

Every `mrcnn-tf train` pays the first step once per traced graph (training, validation, PreciseBN),
and the test suite pays it in every training test: it is TensorFlow tracing the Python code into a
graph, Grappler rewriting that graph, and oneDNN building its kernels. The first step's time minus a
steady step is that cost. Also printed: the training graph's node count (traced, before Grappler).
"""
import argparse
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from infer import header, load, set_threads, timed  # noqa: E402
from train_step import synthetic_batch  # noqa: E402


def tiny_config(backbone, size, rois, optimizer="sgd"):
    """The tests' tiny training config (tests/helpers_model.py TINY) at `size` px."""
    from mrcnn_tf.config import Config

    attributes = dict(NAME="first_step", BACKBONE=backbone, GPU_COUNT=1, IMAGES_PER_GPU=1, NUM_CLASSES=6,
                      IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
                      RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), RPN_TRAIN_ANCHORS_PER_IMAGE=32, PRE_NMS_LIMIT=300,
                      POST_NMS_ROIS_TRAINING=max(40, 2 * rois), TRAIN_ROIS_PER_IMAGE=rois, MAX_GT_INSTANCES=4,
                      MINI_MASK_SHAPE=(28, 28), FPN_CLASSIF_FC_LAYERS_SIZE=32, TOP_DOWN_PYRAMID_SIZE=32,
                      OPTIMIZER=optimizer)
    return type("FirstStepConfig", (Config,), attributes)()


def node_count(keras_model, batch):
    """Nodes of the training step's graph as traced (before Grappler); traces it once more."""
    import tensorflow as tf

    specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in batch]
    graph = tf.function(keras_model.train_step).get_concrete_function((specs, None, None)).graph
    return len(graph.as_graph_def().node)


def run(args):
    import numpy as np

    set_threads(args.threads)
    if args.grappler:
        import tensorflow as tf

        # "remapping=off", "disable_meta_optimizer=on", ...: what one Grappler pass costs and buys.
        tf.config.optimizer.set_experimental_options(
            {k: v == "on" for k, v in (pair.split("=") for pair in args.grappler)})
    from mrcnn_tf import model as modellib

    print(header("bench/first_step.py", args))
    if args.config:
        from mrcnn_tf.wbc.presets import make_config

        config = make_config(args.config)  # a preset's own step: its backbone, size, batch, BatchNorm, optimizer
    else:
        config = tiny_config(args.backbone, args.size, args.rois, args.optimizer)
    images = [synthetic_batch(config, seed) for seed in range(config.BATCH_SIZE)]
    batch = [np.concatenate(parts) for parts in zip(*images)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
        mrcnn = modellib.MaskRCNN(mode="training", config=config, model_dir=logs)
    mrcnn.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    built = time.perf_counter() - start
    start = time.perf_counter()
    mrcnn.keras_model.train_on_batch(batch)
    first = time.perf_counter() - start
    step, _, _ = timed(lambda: mrcnn.keras_model.train_on_batch(batch), args.runs, warmup=1)
    nodes = node_count(mrcnn.keras_model, batch) if args.nodes else None
    print(f"model build + compile {built:.1f} s; first step {first:.1f} s; steady step {step:.3f} s; "
          f"graph nodes {nodes}")
    grappler = f" grappler={','.join(args.grappler)}" if args.grappler else ""
    work = (f"config={args.config}" if args.config else
            f"{args.backbone} size={args.size} rois={args.rois} {args.optimizer}")
    print(f"SUMMARY first_step {datetime.date.today()} {work}{grappler}: "
          f"build {built:.1f} s, first step {first:.1f} s (trace and optimise {first - step:.1f} s), "
          f"step {step:.3f} s, load {load():.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rois", type=int, default=12, help="TRAIN_ROIS_PER_IMAGE")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--config", help="time a preset's step instead (demo, bccd, lisc); the options above "
                        "then do not apply")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="Config.OPTIMIZER")
    parser.add_argument("--nodes", action="store_true", help="also count the traced graph's nodes")
    parser.add_argument("--grappler", action="append", default=[], metavar="OPTION=on|off",
                        help="a tf.config.optimizer experimental option (repeatable), e.g. layout_optimizer=off")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

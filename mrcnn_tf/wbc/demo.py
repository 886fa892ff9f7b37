"""`mrcnn-tf demo`: train on real smears from scratch, score held-out fields, detect, count.

By default the demo trains the BCCD-WBC recipe (`BccdConfig` from random weights, 350 seeded steps) on the
BCCD-WBC fields shipped with the package (`DEMO_DATA`, MIT), scores its `val` fields, and writes overlays,
the differential count and the metrics. ``--synthetic`` trains the CPU-sized `DemoConfig` on synthetic LISC
smears instead (`run_synthetic_demo`). Both train through `mrcnn_tf.wbc.training_run.train_run`, a fixed
amount of seeded work, so they reach the same model on a fast or a slow CPU; only the minutes differ.
"""
import json
import pathlib
import time

import numpy as np

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.lisc import LiscConfig, LiscDataset

DEMO_DATA = pathlib.Path(__file__).parent / "data" / "bccd_wbc"
DEMO_DATASET_NAME = "bccd-wbc"
# The BCCD recipe shortened to 7 epochs of 50 steps (its cosine rate decays over them): a newcomer's first run
# fits in ten minutes on two CPU cores; `mrcnn-tf train --config bccd` runs the full 16.
REAL_DEMO_EPOCHS = 7


class DemoConfig(LiscConfig):
    """LISC, sized to learn on a 2-core CPU in minutes (the full LISC setup is `LiscConfig`).

    Each value differs from LiscConfig for the reason beside it (measured: bench/RESULTS.md).
    """

    NAME = "demo"
    BACKBONE = "resnet18"  # the C5/C4 stages of ResNet-50 cost most of a CPU step; 18 layers suffice here
    # Trained from scratch, BatchNorm must train (frozen would mean no normalisation at all). None:
    # batch statistics in training, moving statistics at inference, recomputed on 4 training
    # batches before each checkpoint (PreciseBN). Both alternatives score far lower:
    # True (each image normalized by its own statistics at inference) and the lagging moving averages.
    TRAIN_BN = None
    BN_STATS_BATCHES = 4
    IMAGES_PER_GPU = 4
    # 720x576 -> 256x205 (scale 0.36): cells become 21-48 px, still showing lobes and granules.
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)  # 16-64 bracket the 21-48 px cells (IoU >= 0.5 each)
    TOP_DOWN_PYRAMID_SIZE = 64  # a 256-channel pyramid under the RPN conv is a large share of each CPU step
    FPN_CLASSIF_FC_LAYERS_SIZE = 256  # five types need far less than COCO's 1024
    # The RPN's 512-wide conv and the mask head's 256-wide convs are most of each CPU step; at 128 the step
    # is far cheaper and the heads learn as well per step.
    RPN_CONV_CHANNELS = 128
    MASK_HEAD_CHANNELS = 128
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32  # ~10 positive slots per image for 1-4 cells
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 10
    # From random weights Adam learns several times faster than SGD (Matterport's).
    OPTIMIZER = "adam"
    LEARNING_RATE = 0.001
    STEPS_PER_EPOCH = 50  # long enough that the BatchNorm recomputation at each epoch end costs little
    VALIDATION_STEPS = 1  # the held-out set is scored separately; one batch keeps val_loss for the curve


# The demo's work: 8 epochs of 50 steps of 4 images, scored on the held-out set every 4 epochs.
DEMO_EPOCHS = 8
DEMO_SCORE_EVERY = 4


def load_subset(dataset_dir, subset="all"):
    """A prepared `LiscDataset` of `dataset_dir`."""
    dataset = LiscDataset()
    dataset.load_lisc(str(dataset_dir), subset)
    dataset.prepare()
    return dataset


def save_curve(curve, path):
    """Write the held-out metric curve (per scored epoch) as JSON."""
    pathlib.Path(path).write_text(json.dumps(curve, indent=1, default=_json_default))
    return path


def plot_losses(csv_path, png_path):
    """Training and validation losses per epoch (from the CSV log) as a PNG."""
    import csv

    from mrcnn_tf.visualize import _pyplot

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(8, 5))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for key in ("loss", "val_loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
                "mrcnn_mask_loss", "mrcnn_nucleus_mask_loss"):
        if rows and key in rows[0]:
            ax.plot(epochs, [float(r[key]) for r in rows], label=key, linewidth=2 if "loss" == key[-4:] and
                    key in ("loss", "val_loss") else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def _fmt(value):
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _train(config, train_set, val_set, logs_dir, epochs, seed, score_every, dataset, echo):
    """One stage of `epochs` over all layers from random weights, through the one training driver."""
    from mrcnn_tf.wbc.training_run import train_run

    return train_run(config, train_set, val_set, logs_dir, [("all", int(epochs), config.LEARNING_RATE)], seed=seed,
                     score_every=score_every, echo=echo, run_info={"dataset": str(dataset), "command": "demo"})


def _keep_last_checkpoint(run_dir):
    """The run's newest checkpoint; the demo's folder is its own, so the earlier ones (~60 MB each) go."""
    checkpoints = sorted(pathlib.Path(run_dir).glob("mask_rcnn_*.weights.h5"))
    for old in checkpoints[:-1]:
        old.unlink()
        old.with_name(old.name.replace(".weights.h5", ".config.json")).unlink(missing_ok=True)
    return checkpoints[-1]


def _detect_and_report(model, dataset, output, metrics, started, echo, extra=()):
    """Detect the held-out images (overlays, counts, cells.csv), write metrics.json and print where everything is."""
    from mrcnn_tf.inference.detect_folder import run_detect
    from mrcnn_tf.wbc.morphometry import CellTable

    metrics_path = output / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1, default=_json_default))
    inputs = [pathlib.Path(dataset.image_info[i]["path"]) for i in dataset.image_ids]
    detections_dir = output / "detections"
    counts = run_detect(model, inputs, detections_dir, dataset.class_names, echo=lambda line: None,
                        cell_table=CellTable(dataset.class_names))
    total = time.perf_counter() - started
    echo(f"\ndone in {total / 60:.1f} min. Held-out mask mAP50 {_fmt(metrics['mAP50'])}, COCO segm AP "
         f"{_fmt(metrics['AP'])}, typing accuracy {_fmt(metrics['accuracy'])} ({metrics['dataset']})")
    echo(f"  metrics:            {metrics_path}")
    for name, path in extra:
        echo(f"  {name + ':':19} {path}")
    echo(f"  overlays:           {detections_dir}/*_overlay.png ({len(inputs)} images)")
    echo(f"  differential count: {detections_dir / 'counts.csv'}  {counts['counts']}")
    echo(f"  per-cell table:     {detections_dir / CellTable.FILE_NAME}")
    return total


def check_output(output):
    """Refuse an output folder that holds anything: the demo never overwrites a user's files."""
    path = pathlib.Path(output)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MrcnnError(f"--output {output}: already exists and is not empty; choose a new folder so "
                         "nothing there is overwritten")
    return path


def run_demo(output, epochs=None, seed=0, data_dir=None, config=None, echo=print):
    """`mrcnn-tf demo`: the BCCD-WBC recipe on real smears, from random weights, scored on held-out fields.

    Args:
        output: folder for everything (created; must be new or empty).
        epochs: epochs of 50 steps (default `REAL_DEMO_EPOCHS`).
        seed: seed of weights, data order and augmentation.
        data_dir: a COCO-layout folder with instances_train.json and instances_val.json (default `DEMO_DATA`).
        config: the configuration to train (default `BccdConfig()`).
        echo: callable for progress lines.

    Returns:
        dict of the final metrics (with `dataset`), the checkpoint, the output folder and the seconds taken.
    """
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.wbc.bccd import BccdConfig
    from mrcnn_tf.wbc.runs import load_dataset, load_inference_model

    started = time.perf_counter()
    output = check_output(output)
    data_dir = pathlib.Path(data_dir or DEMO_DATA)
    if not (data_dir / "annotations" / "instances_train.json").is_file():
        raise MrcnnError(f"{data_dir}: the demo's BCCD-WBC fields are missing (annotations/instances_train.json); "
                         "reinstall mrcnn-tf, or run `mrcnn-tf demo --synthetic`")
    config = config or BccdConfig()
    epochs = epochs or REAL_DEMO_EPOCHS
    name = DEMO_DATASET_NAME if data_dir == DEMO_DATA else data_dir.name
    train_set, heldout = load_dataset(data_dir, "train"), load_dataset(data_dir, "val")
    echo(f"mrcnn-tf demo: real smears, {name} ({data_dir}): {train_set.num_images} training fields, "
         f"{heldout.num_images} held-out fields (its val split; BccdConfig was tuned on BCCD-WBC's, so there this is "
         "a development figure)")
    echo(f"[1/3] training {type(config).__name__} ({config.BACKBONE}, {config.IMAGE_MAX_DIM} px) from random "
         f"weights: {epochs} epochs of {config.STEPS_PER_EPOCH} steps, batch {config.BATCH_SIZE}")
    output.mkdir(parents=True, exist_ok=True)
    run = _train(config, train_set, heldout, output / "logs", epochs, seed, None, data_dir, echo)
    checkpoint = _keep_last_checkpoint(run.run_dir)
    echo(f"[2/3] held-out evaluation of {checkpoint.name} (types from the colour typer of the run)")
    model, _ = load_inference_model(str(checkpoint), str(output / "logs"), echo=echo)
    metrics = evaluate_dataset(model, heldout)
    metrics["dataset"] = name
    echo(format_report(metrics))
    echo("[3/3] detecting cells in the held-out fields")
    total = _detect_and_report(model, heldout, output, metrics, started, echo, [("checkpoint", checkpoint)])
    return {"metrics": metrics, "checkpoint": str(checkpoint), "output": str(output), "seconds": total}


def run_synthetic_demo(output, epochs=DEMO_EPOCHS, per_class=60, mixt=20, heldout_per_class=8, heldout_mixt=4,
                       seed=0, score_every=DEMO_SCORE_EVERY, config=None, echo=print):
    """`mrcnn-tf demo --synthetic`: synthesize LISC-like smears, train `DemoConfig` from scratch, evaluate, detect.

    Args:
        output: folder for everything (created; must be new or empty).
        epochs: epochs of STEPS_PER_EPOCH steps to train (the work is fixed, the time is not).
        per_class, mixt: synthetic training images per type folder and mixed images.
        heldout_per_class, heldout_mixt: the same for the held-out set (another seed).
        seed: seed of data, weights and order.
        score_every: score the held-out set after every this many epochs (and after the last).
        config: the configuration to train (default `DemoConfig()`).
        echo: callable for progress lines.

    Returns:
        dict of the final metrics, the learning curve and the paths written.
    """
    from mrcnn_tf.engine.training import CSV_LOG_NAME
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.wbc.synth import write_lisc

    started = time.perf_counter()
    output = check_output(output)
    train_dir, heldout_dir, logs_dir = output / "data" / "train", output / "data" / "heldout", output / "logs"
    config = config or DemoConfig()
    echo(f"mrcnn-tf demo --synthetic: CPU-sized configuration ({type(config).__name__}: {config.BACKBONE}, "
         f"{config.IMAGE_MAX_DIM} px, {config.TOP_DOWN_PYRAMID_SIZE}-channel FPN, trained from scratch)")
    echo(f"[1/4] synthetic smears: {5 * per_class + mixt} training and {5 * heldout_per_class + heldout_mixt} "
         f"held-out images in {output / 'data'}")
    write_lisc(train_dir, per_class, mixt=mixt, seed=1000 + seed)
    write_lisc(heldout_dir, heldout_per_class, mixt=heldout_mixt, seed=2000 + seed)

    echo(f"[2/4] training for {epochs} epochs of {config.STEPS_PER_EPOCH} steps (batch {config.BATCH_SIZE}), "
         f"scoring the held-out images every {score_every} epochs")
    train_set, heldout = load_subset(train_dir), load_subset(heldout_dir)
    run = _train(config, train_set, heldout, logs_dir, epochs, seed, score_every, train_dir, echo)
    scorer, curve = run.scorer, run.scorer.curve
    checkpoint = _keep_last_checkpoint(run.run_dir)
    save_curve(curve, output / "learning_curve.json")
    loss_png = plot_losses(run.run_dir / CSV_LOG_NAME, output / "loss_curve.png")

    # The scorer scored the final weights at the last epoch end (it always does); load the checkpoint
    # and score again only if training ended some other way.
    echo(f"[3/4] held-out evaluation of {checkpoint.name}")
    model = scorer.inference
    if curve and curve[-1]["epoch"] == run.model.epoch and scorer.last_scores is not None:
        metrics = scorer.last_scores
    else:
        model.load_weights(str(checkpoint), by_name=True, verbose=0)
        metrics = evaluate_dataset(model, heldout)
    metrics["dataset"] = "synthetic-lisc"
    echo(format_report(metrics))
    echo("[4/4] detecting cells in the held-out images")
    total = _detect_and_report(model, heldout, output, metrics, started, echo,
                               [("learning curve", output / "learning_curve.json"), ("loss curve", loss_png),
                                ("checkpoint", checkpoint)])
    return {"metrics": metrics, "curve": curve, "checkpoint": str(checkpoint), "output": str(output),
            "seconds": total}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

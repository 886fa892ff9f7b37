"""The CPU demo and the learning benchmark: synthesize, train from scratch, evaluate, detect.

`DemoConfig` is a CPU-sized LISC configuration (ResNet-18, 256 px, 64-channel FPN, few ROIs);
`train_epochs` trains it for a fixed number of seeded epochs while scoring a held-out set at fixed
epochs (`HeldOutEvaluation`), which gives the metric-against-steps curve of `bench/learn_synth.py` (the
same on any CPU up to thread nondeterminism; only the minutes differ);
`run_demo` is `mrcnn-tf demo` end to end.
"""
import json
import pathlib
import time

import keras
import numpy as np

from mrcnn_tf.lisc import LiscConfig, LiscDataset


class DemoConfig(LiscConfig):
    """LISC, sized to learn on a 2-core CPU in minutes (the full LISC setup is `LiscConfig`).

    Each value differs from LiscConfig for the reason beside it.
    """

    NAME = "demo"
    BACKBONE = "resnet18"  # the C5/C4 stages of ResNet-50 cost most of a CPU step; 18 layers suffice here
    # Trained from scratch, BatchNorm must train (frozen would mean no normalisation at all). None:
    # batch statistics in training, moving statistics at inference, recomputed on 4 training
    # batches before each checkpoint (PreciseBN). Both alternatives score far lower (bench/RESULTS.md):
    # True (each image normalized by its own statistics at inference) and the lagging moving averages.
    TRAIN_BN = None
    BN_STATS_BATCHES = 4
    IMAGES_PER_GPU = 4
    # 720x576 -> 256x205 (scale 0.36): cells become 21-48 px, still showing lobes and granules.
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)  # 16-64 bracket the 21-48 px cells (IoU >= 0.5 each)
    TOP_DOWN_PYRAMID_SIZE = 64  # a 256-channel pyramid under the RPN conv was half of each step
    FPN_CLASSIF_FC_LAYERS_SIZE = 256  # five types need far less than COCO's 1024
    # The RPN's 512-wide conv and the mask head's 256-wide convs were most of each CPU step; at 128 the
    # step costs about half and held-out mAP50 after 200/400/600 steps was 0.955/0.961/0.997 (bench/RESULTS.md).
    RPN_CONV_CHANNELS = 128
    MASK_HEAD_CHANNELS = 128
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32  # ~10 positive slots per image for 1-4 cells
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 10
    # From random weights Adam reaches in 2 minutes what SGD (Matterport's) reaches in 6 (bench/RESULTS.md).
    OPTIMIZER = "adam"
    LEARNING_RATE = 0.001
    STEPS_PER_EPOCH = 50  # the BatchNorm recomputation at each epoch end then costs ~8% of the time
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


def copy_weights(source, target):
    """Copy weights between two Keras models layer by layer, matching layer names.

    Used to score a training model with an inference model of the same config without a file
    round trip (nested models and TimeDistributed wrappers copy as one layer each).

    Returns:
        Number of layers copied.
    """
    copied = 0
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    for layer in target.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    return copied


class HeldOutEvaluation(keras.callbacks.Callback):
    """Scores a held-out set at fixed epochs and reports the training time they took.

    Training is defined by work (seeded epochs of STEPS_PER_EPOCH steps), not by a clock, so the same
    command reaches the same model on a fast or a slow CPU; the minutes are only reported. After the
    first epoch it prints an estimate of the time the remaining epochs will take on this machine.

    Args:
        mrcnn: the training `MaskRCNN`.
        val_dataset: prepared held-out dataset.
        epochs: the epoch training stops after (cumulative).
        score_every: score after every this many epochs, and always after the last one.
        echo: callable for one progress line per evaluation.
        typer: optional `ColourTyper` (COLOUR_TYPING): each point is scored a second time with the types it gives
            the detected cells, under "colour_typed" (it is fitted on the training cells' hand-drawn masks, so it
            does not change while the network trains).

    Attributes:
        curve: list of dicts (epoch, steps, minutes, mAP50, AP, accuracy, loss, and colour_typed when a typer
            is given); minutes count training only (data loading, tracing, steps), not the scoring.
        inference: the inference `MaskRCNN` holding the weights of the last evaluation.
        last_scores: the full `evaluate_dataset` result of the last evaluation.
    """

    def __init__(self, mrcnn, val_dataset, epochs, score_every=4, echo=print, typer=None):
        super().__init__()
        from mrcnn_tf.model import MaskRCNN

        self.mrcnn = mrcnn
        self.val_dataset = val_dataset
        self.epochs = int(epochs)
        self.score_every = max(1, int(score_every))
        self.echo = echo
        self.typer = typer
        config = type(mrcnn.config).from_dict(mrcnn.config.to_dict())
        config.IMAGES_PER_GPU, config.GPU_COUNT = 1, 1
        config.refresh()
        self.inference = MaskRCNN("inference", config, mrcnn.model_dir)
        self.curve = []
        self.last_scores = None
        self._start = None
        self._paused = 0.0
        self._first_epoch = None
        self._first_step = None  # training seconds when the first step ended (it includes tracing the graph)

    def training_seconds(self):
        return time.perf_counter() - self._start - self._paused

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step is None:
            self._first_step = self.training_seconds()

    def on_train_begin(self, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
            self._first_epoch = self.mrcnn.epoch

    def estimate_line(self, seconds, first_step, done):
        """The time estimate printed after the first epoch: its later steps and epoch end, times the epochs left.

        The first step includes tracing the graph (about a minute on a 2-core CPU), which later epochs
        do not repeat, so it is left out of the estimate.
        """
        steps = int(self.mrcnn.config.STEPS_PER_EPOCH)
        trace = first_step if first_step is not None and steps > 1 else 0.0
        per_epoch = (seconds - trace) * steps / max(steps - 1, 1) if trace else seconds
        left = per_epoch * (self.epochs - done) / 60
        return (f"  epoch 1 took {seconds:.0f} s on this machine ({trace:.0f} s of it the first step, which traces "
                f"the graph): about {left:.0f} more minutes of training for the remaining {self.epochs - done} epochs")

    def evaluate(self, epoch, logs=None):
        from mrcnn_tf.evaluation.evaluate import evaluate_dataset

        began = time.perf_counter()
        minutes = self.training_seconds() / 60
        copy_weights(self.mrcnn.keras_model, self.inference.keras_model)
        # With a typer the detections are kept and retyped for the second score rather than detected again.
        recorder = _RecordedDetections(self.inference) if self.typer is not None else self.inference
        scores = self.last_scores = evaluate_dataset(recorder, self.val_dataset)
        point = {"epoch": int(epoch), "steps": int(epoch) * int(self.mrcnn.config.STEPS_PER_EPOCH),
                 "minutes": round(minutes, 2), "mAP50": scores["mAP50"], "AP": scores["AP"],
                 "accuracy": scores["accuracy"], "loss": float((logs or {}).get("loss", float("nan"))),
                 "per_class": scores.get("per_class"), "confusion_matrix": scores.get("confusion_matrix")}
        self.curve.append(point)
        self.echo(f"  epoch {epoch:3d} ({point['steps']} steps, {minutes:4.1f} min)  held-out mAP50 "
                  f"{_fmt(point['mAP50'])}  COCO AP {_fmt(point['AP'])}  typing accuracy {_fmt(point['accuracy'])}  "
                  f"loss {point['loss']:.3f}")
        if self.typer is not None:
            typed = evaluate_dataset(_RetypedReplay(recorder.calls, self.typer, self.inference.config),
                                     self.val_dataset)
            point["colour_typed"] = {key: typed.get(key) for key in ("mAP50", "AP", "accuracy", "per_class",
                                                                     "confusion_matrix")}
            self.echo(f"      typed by colour: mAP50 {_fmt(typed['mAP50'])}  COCO AP {_fmt(typed['AP'])}  typing "
                      f"accuracy {_fmt(typed['accuracy'])}")
        self._paused += time.perf_counter() - began
        return point

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done == self._first_epoch + 1 and done < self.epochs:
            self.echo(self.estimate_line(self.training_seconds(), self._first_step, done))
        if done % self.score_every == 0 or done >= self.epochs:
            self.evaluate(done, logs)


class _RecordedDetections:
    """A model's `detect` that keeps each call's images and results (`calls`) for `_RetypedReplay`."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def detect(self, images, verbose=0):
        results = self.model.detect(images, verbose=verbose)
        self.calls.append((images, results))
        return results


class _RetypedReplay:
    """Answers `detect` with the recorded calls in order, each cell retyped by `typer`: a second `evaluate_dataset`
    pass over the same images scores the colour typer on the network's own detections without running it again."""

    def __init__(self, calls, typer, config):
        self.calls, self.typer, self.config = iter(calls), typer, config

    def detect(self, images, verbose=0):
        from mrcnn_tf.wbc.colour_typing import retype

        recorded_images, results = next(self.calls)
        if len(images) != len(recorded_images):  # evaluate_dataset batches the same images the same way each pass
            raise RuntimeError(f"replay asked for {len(images)} images where {len(recorded_images)} were recorded")
        return [retype(result, image, self.typer) for result, image in zip(results, recorded_images)]


def _fmt(value):
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def train_datasets(config, train_set, val_set, logs_dir, epochs, score_every=4, seed=0, augment=True, echo=print,
                   init_weights=None, typer=None):
    """Train `config` (from random weights, or `init_weights`) for `epochs` epochs, scoring `val_set` as it goes.

    Args:
        config: the Config to train (its AUGMENTATION names the augmentation when `augment`).
        train_set, val_set: prepared datasets (any `Dataset`: LISC, COCO, ...).
        logs_dir: folder for the run folder (checkpoints, CSV log).
        epochs, score_every: see `HeldOutEvaluation`.
        seed: seed of weights, data order and augmentation.
        augment: False trains without augmentation.
        echo: callable for progress lines.
        init_weights: optional weight file to start from instead of random weights (loaded by name;
            training still counts epochs from 0).
        typer: optional `ColourTyper`: every point is also scored with its types (`HeldOutEvaluation`).

    Returns:
        (mrcnn, scorer): the training `MaskRCNN` (checkpoints in its log_dir) and the
        `HeldOutEvaluation` (its curve, last scores and inference model).
    """
    from mrcnn_tf.data.augment import augmentation_for
    from mrcnn_tf.model import MaskRCNN

    keras.utils.set_random_seed(seed)
    mrcnn = MaskRCNN("training", config, str(logs_dir))
    if init_weights:
        echo(str(mrcnn.load_weights(str(init_weights), by_name=True, verbose=0)))
        mrcnn.set_log_dir()  # a start point, not a run to resume: a new run folder from epoch 0
    scorer = HeldOutEvaluation(mrcnn, val_set, epochs, score_every, echo=echo, typer=typer)
    mrcnn.train(train_set, val_set, learning_rate=config.LEARNING_RATE, epochs=epochs, layers="all",
                augmentation=augmentation_for(config) if augment else None, custom_callbacks=[scorer], seed=seed,
                verbose=0)
    return mrcnn, scorer


def train_epochs(config, train_dir, val_dir, logs_dir, epochs, score_every=4, seed=0, augment=True, echo=print):
    """`train_datasets` on two LISC-layout folders (all of each)."""
    train_set, val_set = load_subset(train_dir), load_subset(val_dir)
    return train_datasets(config, train_set, val_set, logs_dir, epochs, score_every, seed, augment, echo)


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
                "mrcnn_mask_loss"):
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


def run_demo(output, epochs=DEMO_EPOCHS, per_class=60, mixt=20, heldout_per_class=8, heldout_mixt=4, seed=0,
             score_every=DEMO_SCORE_EVERY, config=None, echo=print):
    """`mrcnn-tf demo`: synthesize, train from scratch, evaluate on held-out images, detect.

    Args:
        output: folder for everything (created; must not hold an earlier demo).
        epochs: epochs of STEPS_PER_EPOCH steps to train (the work is fixed, the time is not).
        per_class, mixt: synthetic training images per type folder and mixed images.
        heldout_per_class, heldout_mixt: the same for the held-out set (another seed).
        seed: seed of data, weights and order.
        score_every: score the held-out set after every this many epochs (and after the last).
        config: the configuration to train (default `DemoConfig()`).
        echo: callable for progress lines.

    Returns:
        dict of the final metrics and the paths written.
    """
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.wbc.synth import write_lisc
    from mrcnn_tf.engine.training import CSV_LOG_NAME

    started = time.perf_counter()
    output = pathlib.Path(output)
    train_dir, heldout_dir, logs_dir = output / "data" / "train", output / "data" / "heldout", output / "logs"
    config = config or DemoConfig()
    echo(f"mrcnn-tf demo: CPU-sized configuration ({type(config).__name__}: {config.BACKBONE}, {config.IMAGE_MAX_DIM} px, "
         f"{config.TOP_DOWN_PYRAMID_SIZE}-channel FPN, trained from scratch); `mrcnn-tf train` defaults to the "
         "full LISC configuration")
    echo(f"[1/4] synthetic smears: {5 * per_class + mixt} training and {5 * heldout_per_class + heldout_mixt} "
         f"held-out images in {output / 'data'}")
    write_lisc(train_dir, per_class, mixt=mixt, seed=1000 + seed)
    write_lisc(heldout_dir, heldout_per_class, mixt=heldout_mixt, seed=2000 + seed)

    echo(f"[2/4] training for {epochs} epochs of {config.STEPS_PER_EPOCH} steps (batch {config.BATCH_SIZE}), "
         f"scoring the held-out images every {score_every} epochs")
    mrcnn, scorer = train_epochs(config, train_dir, heldout_dir, logs_dir, epochs, score_every, seed=seed,
                                 echo=echo)
    curve = scorer.curve
    log_dir = pathlib.Path(mrcnn.log_dir)
    checkpoints = sorted(log_dir.glob("mask_rcnn_*.weights.h5"))
    checkpoint = checkpoints[-1]
    # The demo wrote these into its own new folder: keep the last one (with its config) and free ~60 MB
    # per epoch of the others.
    for old in checkpoints[:-1]:
        old.unlink()
        old.with_name(old.name.replace(".weights.h5", ".config.json")).unlink(missing_ok=True)
    save_curve(curve, output / "learning_curve.json")
    loss_png = plot_losses(log_dir / CSV_LOG_NAME, output / "loss_curve.png")

    # The scorer scored the final weights at the last epoch end (it always does); load the checkpoint
    # and score again only if training ended some other way.
    echo(f"[3/4] held-out evaluation of {checkpoint.name}")
    model, heldout = scorer.inference, scorer.val_dataset
    if curve and curve[-1]["epoch"] == mrcnn.epoch and scorer.last_scores is not None:
        metrics = scorer.last_scores
    else:
        model.load_weights(str(checkpoint), by_name=True, verbose=0)
        metrics = evaluate_dataset(model, heldout)
    metrics_path = output / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1, default=_json_default))
    echo(format_report(metrics))

    echo("[4/4] detecting cells in the held-out images")
    from mrcnn_tf.inference.detect_folder import run_detect

    inputs = [pathlib.Path(heldout.image_info[i]["path"]) for i in heldout.image_ids]
    detections_dir = output / "detections"
    counts = run_detect(model, inputs, detections_dir, heldout.class_names, echo=lambda line: None)
    total = time.perf_counter() - started
    echo(f"\ndone in {total / 60:.1f} min. Held-out mask mAP50 {_fmt(metrics['mAP50'])}, COCO segm AP "
         f"{_fmt(metrics['AP'])}, typing accuracy {_fmt(metrics['accuracy'])}")
    echo(f"  metrics:            {metrics_path}")
    echo(f"  learning curve:     {output / 'learning_curve.json'}")
    echo(f"  loss curve:         {loss_png}")
    echo(f"  overlays:           {detections_dir}/*_overlay.png ({len(inputs)} images)")
    echo(f"  differential count: {detections_dir / 'counts.csv'}  {counts['counts']}")
    echo(f"  checkpoint:         {checkpoint}")
    return {"metrics": metrics, "curve": curve, "checkpoint": str(checkpoint), "output": str(output),
            "seconds": total}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

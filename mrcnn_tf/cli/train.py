"""`mrcnn-tf train`: staged training on a LISC- or COCO-layout dataset (DESIGN §2).

    mrcnn-tf train --dataset DIR --weights coco|imagenet|last|none|PATH --logs DIR [--config NAME]
                   [--schedule heads:20,all:40] [--later-lr-factor F] [--set KEY=VALUE ...]
                   [--seed N] [--no-augment]

A LISC folder trains on the train part of its deterministic split and validates on the val part; a
COCO folder (``DIR/annotations/instances_{train,val}.json``, images in ``DIR/images/``) trains on
``instances_train.json`` and validates on ``instances_val.json``. ``--config NAME`` starts from a
named preset (`mrcnn_tf.wbc.presets`: lisc, the default, demo or bccd); ``--set`` applies on top.

Stages run in order and their epochs are cumulative, as in Matterport (``heads:20,all:40`` trains
the heads for 20 epochs, then everything for 20 more). Resuming (``--weights last`` or a checkpoint
path) reads the config saved beside the checkpoint, continues in its folder after its epoch and
reuses the run's schedule, so stages already done are skipped. Checkpoints are written atomically:
Ctrl-C, SIGTERM or kill -9 never leave a broken one, and ``--weights last`` picks up from there.
"""
import json
import pathlib
import signal
import sys

import click

from mrcnn_tf.errors import ConfigError, MrcnnError
from mrcnn_tf.wbc.presets import DEFAULT_PRESET, DEFAULT_SCRATCH_SCHEDULE, PRESETS, SCRATCH_SCHEDULES, scratch_schedule

STAGES = ("heads", "3+", "4+", "5+", "all")
DEFAULT_SCHEDULE = "heads:20,all:40"  # Matterport's fine-tuning recipe (nucleus sample)
SCRATCH_SCHEDULE = DEFAULT_SCRATCH_SCHEDULE  # from random weights, unless the preset names its own
RUN_FILE = "train_command.json"  # this run's schedule, so a resumed run continues the same stages


def parse_schedule(text, base_lr, later_lr_factor=1.0):
    """``"heads:20,all:40@0.0001"`` -> [(layers, epochs, learning_rate), ...].

    A stage without ``@LR`` uses `base_lr` (the first stage) or ``base_lr * later_lr_factor``.

    Raises:
        ConfigError: unknown stage, epochs not a growing whole number, bad learning rate.
    """
    stages, previous = [], 0
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        head, _, lr_text = part.partition("@")
        layers, sep, epochs_text = head.partition(":")
        layers = layers.strip()
        if not sep or layers not in STAGES:
            raise ConfigError(f"--schedule {text!r}: write STAGE:EPOCHS[@LR] items, comma separated, with STAGE "
                              f"one of {', '.join(STAGES)} (e.g. heads:20,all:40)")
        try:
            epochs = int(epochs_text)
            lr = float(lr_text) if lr_text else base_lr * (1.0 if i == 0 else later_lr_factor)
        except ValueError:
            raise ConfigError(f"--schedule {text!r}: {part!r} needs a whole number of epochs "
                              "and an optional @learning_rate") from None
        if epochs <= previous:
            raise ConfigError(f"--schedule {text!r}: epochs are cumulative (heads:20,all:40 trains to epoch 40), "
                              f"so {part!r} must end after epoch {previous}")
        if not lr > 0:
            raise ConfigError(f"--schedule {text!r}: the learning rate of {part!r} must be positive")
        stages.append((layers, epochs, lr))
        previous = epochs
    return stages


def _saved_config(checkpoint):
    """The config JSON beside one of our checkpoints, or None for a foreign weight file."""
    from mrcnn_tf.engine.checkpoints import config_path_for
    from mrcnn_tf.cli._common import _config_class_for

    path = config_path_for(checkpoint)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON config ({exc}); re-create it or remove it") from None
    return _config_class_for(values if isinstance(values, dict) else {}).load_json(path)


def _overridden(name, overrides):
    """Whether a ``--set KEY=VALUE`` pair names the attribute `name`."""
    return any(o.split("=", 1)[0].strip().upper() == name for o in overrides)


def _prepare_config(choice, overrides, preset=None):
    """The preset's config (LiscConfig by default), or the checkpoint's saved one, with --set applied.

    From random weights BatchNorm is switched to train (unless --set says otherwise).
    """
    from mrcnn_tf.wbc.presets import DEFAULT_PRESET, config_class

    preset_class = config_class(preset or DEFAULT_PRESET)  # an unknown name fails first, also when resuming
    config = _saved_config(choice.path) if choice.kind == "checkpoint" else None
    if config is None:
        config = preset_class()
    elif preset:
        click.echo(f"Note: --config {preset} is not used: a resumed run keeps the config saved with its "
                   "checkpoint (change settings with --set)", err=True)
    config.apply_overrides(list(overrides))
    if choice.kind == "none" and config.TRAIN_BN is False:
        if _overridden("TRAIN_BN", overrides):
            click.echo("Warning: training from random weights with frozen BatchNorm (TRAIN_BN=false) leaves the "
                       "network without normalisation; it rarely learns", err=True)
        else:
            # Batch statistics in training, moving ones recomputed before each checkpoint at inference:
            # the demo's setting (per-image statistics at inference, TRAIN_BN=true, scored far lower).
            config.TRAIN_BN = None
            if not _overridden("BN_STATS_BATCHES", overrides) and not config.BN_STATS_BATCHES:
                config.BN_STATS_BATCHES = 4
            config.refresh()
            click.echo("Note: --weights none: BatchNorm trains (TRAIN_BN=null, a random network needs it) and "
                       f"its statistics are recomputed on {config.BN_STATS_BATCHES} batches before each checkpoint")
    return config


def _load_start_weights(model, choice, config):
    if choice.kind == "coco":
        from mrcnn_tf.weights.matterport_h5 import load_coco_weights
        load_coco_weights(model.keras_model, config)
    elif choice.kind == "imagenet":
        from mrcnn_tf.weights.imagenet import load_imagenet_weights
        load_imagenet_weights(model.keras_model, config)
    elif choice.kind in ("checkpoint", "file"):
        from mrcnn_tf.cli._common import misfit_message
        from mrcnn_tf.errors import WeightsError

        try:
            report = model.load_weights(str(choice.path), by_name=True, verbose=0)
        except WeightsError as exc:
            report = getattr(exc, "report", None)
            if report is None or not report.mismatched:
                raise
            # The loader's fix (exclude=[...]) is Python: say what to do on the command line instead.
            raise WeightsError(misfit_message(report, choice.path, config, training=True)) from None
        click.echo(str(report))


def _check_class_count(dataset, config, choice, preset=None):
    """Refuse a config whose NUM_CLASSES is not the dataset's: class ids beyond it break training."""
    if dataset.num_classes == config.NUM_CLASSES:
        return
    from mrcnn_tf.engine.checkpoints import config_path_for
    from mrcnn_tf.wbc.presets import DEFAULT_PRESET

    source = (f"config {config_path_for(choice.path).name}" if choice.kind == "checkpoint"
              and config_path_for(choice.path).is_file() else f"--set or the {preset or DEFAULT_PRESET} preset")
    raise ConfigError(f"NUM_CLASSES is {config.NUM_CLASSES} ({source}) but the dataset has {dataset.num_classes} "
                      f"classes ({', '.join(dataset.class_names)}): pass --set NUM_CLASSES={dataset.num_classes}")


def _schedule_text(schedule, choice, preset=None):
    """--schedule if given; a resumed run's own; from random weights the preset's; else Matterport's."""
    if schedule:
        return schedule
    if choice.kind == "checkpoint":
        run_file = pathlib.Path(choice.path).parent / RUN_FILE
        if run_file.is_file():
            return json.loads(run_file.read_text()).get("schedule", DEFAULT_SCHEDULE)
    return scratch_schedule(preset) if choice.kind == "none" else DEFAULT_SCHEDULE


def _interrupt_on_sigterm():
    """SIGTERM ends training like Ctrl-C (one line, exit 130); checkpoints are atomic either way."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


@click.command("train")
# No exists=True: the dataset loader's own message says what a dataset folder holds and how to make one.
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(file_okay=False),
              help="LISC-layout (or WBC-layout) folder, whose deterministic train/val split is used, or a COCO "
                   "layout (annotations/instances_train.json and instances_val.json, images/).")
@click.option("--weights", required=True, metavar="coco|imagenet|last|none|PATH",
              help="Start point: COCO or ImageNet weights, the newest checkpoint under --logs, random, or a file.")
@click.option("--logs", default="logs", show_default=True, type=click.Path(file_okay=False),
              help="Folder for run folders (checkpoints, CSV and TensorBoard logs).")
@click.option("--config", "preset", default=None, metavar="NAME",
              help=f"Named config preset: {', '.join(PRESETS)} (default {DEFAULT_PRESET}); --set applies on top.")
@click.option("--schedule", default=None, metavar="STAGE:EPOCHS[@LR],...",
              help=f"Stages in order with cumulative epochs; STAGE is one of {', '.join(STAGES)}. "
                   f"Default {DEFAULT_SCHEDULE} ({SCRATCH_SCHEDULE} with --weights none, or the preset's: "
                   + ", ".join(f"{s} for {name}" for name, s in SCRATCH_SCHEDULES.items())
                   + "; a resumed run keeps its own).")
@click.option("--later-lr-factor", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Learning rate of stages after the first = LEARNING_RATE x this (e.g. 0.1).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a config setting, e.g. --set IMAGES_PER_GPU=1 (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed for weights init, data order and augmentation.")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
def train(dataset_dir, weights, logs, preset, schedule, later_lr_factor, overrides, seed, no_augment):
    """Train Mask R-CNN on a LISC- or COCO-layout dataset in stages (heads, then all layers)."""
    from mrcnn_tf.engine import training
    from mrcnn_tf.engine.checkpoints import WEIGHTS_KEYWORDS, atomic_write_text, list_checkpoints, resolve_weights
    from mrcnn_tf.weights.matterport_h5 import check_weights_file

    choice = resolve_weights(weights, logs, accepted=WEIGHTS_KEYWORDS)
    if choice.path is not None:
        check_weights_file(choice.path)  # a damaged file fails before the dataset load and the (slow) model build
    config = _prepare_config(choice, overrides, preset)
    stages = parse_schedule(_schedule_text(schedule, choice, preset), config.LEARNING_RATE, later_lr_factor)
    if choice.kind == "none" and stages[0][0] != "all":
        raise MrcnnError(f"--weights none with a {stages[0][0]!r} first stage: a backbone left at random weights "
                         f"never learns; train everything from scratch, e.g. --schedule {SCRATCH_SCHEDULE}")

    import keras

    from mrcnn_tf.cli._common import load_dataset
    from mrcnn_tf.coco import coco_subsets, is_coco_layout
    from mrcnn_tf.data.augment import augmentation_for
    from mrcnn_tf.model import MaskRCNN

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if is_coco_layout(dataset_dir) and set(coco_subsets(dataset_dir)) >= {"train"} and \
            "val" not in coco_subsets(dataset_dir):
        raise MrcnnError(f"{pathlib.Path(dataset_dir) / 'annotations' / 'instances_val.json'}: not found; train "
                         "validates on it: move some annotated images from instances_train.json into it")
    datasets = {}
    for subset in ("train", "val"):
        datasets[subset] = load_dataset(dataset_dir, subset)
        if datasets[subset].num_images == 0:
            raise MrcnnError(f"{dataset_dir}: the {subset!r} part of the split is empty; add images "
                             "(at least 5 per type folder) or check the layout")
    if datasets["val"].class_names != datasets["train"].class_names:
        raise MrcnnError(f"{dataset_dir}: the val classes ({', '.join(datasets['val'].class_names[1:])}) are not "
                         f"the train classes ({', '.join(datasets['train'].class_names[1:])}); give both "
                         "annotation files the same categories")
    _check_class_count(datasets["train"], config, choice, preset)
    _interrupt_on_sigterm()
    model = MaskRCNN(mode="training", config=config, model_dir=logs)
    _load_start_weights(model, choice, config)
    chief = training.writes_run_files(model)  # several workers (TF_CONFIG): only the chief writes
    run_dir = training.claim_log_dir(model) if chief else pathlib.Path(model.log_dir)
    text = ",".join(f"{layers}:{epochs}@{lr:g}" for layers, epochs, lr in stages)
    if chief:
        atomic_write_text(run_dir / RUN_FILE, json.dumps({"schedule": text, "weights": str(weights), "config": preset,
                                                          "dataset": str(dataset_dir), "seed": seed}, indent=2))
    click.echo(f"Run folder: {run_dir} (starting after epoch {model.epoch}); schedule {text}")
    augmentation = None if no_augment else augmentation_for(config)
    verbose = 1 if sys.stdout.isatty() else 2
    for layers, epochs, lr in stages:
        if model.epoch >= epochs:
            click.echo(f"Stage {layers}:{epochs} already done (checkpoint at epoch {model.epoch}); skipped")
            continue
        click.echo(f"Stage {layers}: epochs {model.epoch + 1}-{epochs}, learning rate {lr:g}")
        training.train(model, datasets["train"], datasets["val"], lr, epochs, layers, augmentation=augmentation,
                       seed=seed, verbose=verbose)
    if chief and config.COLOUR_TYPING:
        _write_colour_typer(datasets["train"], run_dir, config.COLOUR_TYPING_FEATURES)
    done = list_checkpoints(run_dir) if chief else ["none by this worker (the chief writes them)"]
    click.echo(f"Done: {done[-1] if done else 'no checkpoint written'}")


def _write_colour_typer(train_dataset, run_dir, feature_set):
    """COLOUR_TYPING: fit the colour typer on the training cells' masks; evaluate and detect read it from the run."""
    from mrcnn_tf.wbc.colour_typing import TYPER_FILE, fit_colour_typer

    typer = fit_colour_typer(train_dataset, feature_set=feature_set)
    typer.save(run_dir / TYPER_FILE)
    click.echo(f"Colour typer: {run_dir / TYPER_FILE} ({typer.feature_set} features, fitted on {typer.cells} "
               f"training cells, L2 {typer.l2:g}, cross-validated accuracy {typer.cv_accuracy:.3f}; nucleus colour "
               f"direction {typer.nucleus_source})")

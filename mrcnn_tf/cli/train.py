"""`mrcnn-tf train`: staged training on a LISC- or COCO-layout dataset (the README's "Command line").

    mrcnn-tf train --dataset DIR --weights coco|imagenet|last|none|PATH --logs DIR [--config NAME]
                   [--schedule heads:20,all:40] [--later-lr-factor F] [--set KEY=VALUE ...]
                   [--seed N] [--no-augment] [--verbose]

A LISC folder trains on the train part of its deterministic split and validates on the val part; a
COCO folder (``DIR/annotations/instances_{train,val}.json``, images in ``DIR/images/``) trains on
``instances_train.json`` and validates on ``instances_val.json``. ``--config NAME`` starts from a
named preset (`mrcnn_tf.wbc.presets`: lisc, the default, demo or bccd); ``--set`` applies on top.

Stages run in order and their epochs are cumulative, as in Matterport (``heads:20,all:40`` trains
the heads for 20 epochs, then everything for 20 more). Resuming (``--weights last`` or a checkpoint
path) reads the config saved beside the checkpoint, continues in its folder after its epoch and
reuses the run's schedule, so stages already done are skipped. Checkpoints are written atomically:
Ctrl-C, SIGTERM or kill -9 never leave a broken one, and ``--weights last`` picks up from there.
The command parses and prints; the run itself is `mrcnn_tf.wbc.training_run.train_run`.
"""
import sys

import click

from mrcnn_tf.engine.driver import DEFAULT_SCHEDULE, STAGES
from mrcnn_tf.wbc.presets import DEFAULT_PRESET, DEFAULT_SCRATCH_SCHEDULE, PRESETS, SCRATCH_SCHEDULES
from mrcnn_tf.wbc.training_run import prepare_config


def _prepare_config(choice, overrides, preset=None):
    """`prepare_config` with its notes on the terminal."""
    return prepare_config(choice, overrides, preset, echo=lambda line: click.echo(line, err=line.startswith(
        ("Warning", "Note: --config"))))


def _fingerprinted(train_set, overrides, start):
    """No --config with --weights none, coco or imagenet: the recipe for that start with what the training data
    decides (printed), --set on top."""
    from mrcnn_tf.wbc.fingerprint import fingerprint, format_plan, planned_config

    fp = fingerprint(train_set)
    config, schedule, choices, warnings = planned_config(fp, start=start)
    click.echo(format_plan(fp, choices, warnings))
    return config.apply_overrides(list(overrides)), schedule


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
              help=f"Named config preset: {', '.join(PRESETS)}. Without it a run from --weights none, coco or "
                   "imagenet takes the settings measured from the training data (`mrcnn-tf fingerprint`) and a "
                   f"resumed or file start {DEFAULT_PRESET}; --set applies on top.")
@click.option("--schedule", default=None, metavar="STAGE:EPOCHS[@LR],...",
              help=f"Stages in order with cumulative epochs; STAGE is one of {', '.join(STAGES)}. "
                   f"Default {DEFAULT_SCHEDULE}; with --weights none the fingerprint's (no --config), the preset's ("
                   + ", ".join(f"{s} for {name}" for name, s in SCRATCH_SCHEDULES.items())
                   + f") or {DEFAULT_SCRATCH_SCHEDULE}; a resumed run keeps its own.")
@click.option("--later-lr-factor", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Learning rate of stages after the first = LEARNING_RATE x this (e.g. 0.1).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a config setting, e.g. --set IMAGES_PER_GPU=1 (repeatable).")
@click.option("--seed", type=int, default=None, help="Seed for weights init, data order and augmentation.")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--verbose", is_flag=True, help="Also list the trainable layers of each stage and Keras' own progress.")
def train(dataset_dir, weights, logs, preset, schedule, later_lr_factor, overrides, seed, no_augment, verbose):
    """Train Mask R-CNN on a LISC- or COCO-layout dataset in stages (heads, then all layers)."""
    from mrcnn_tf.config import Config
    from mrcnn_tf.engine.checkpoints import WEIGHTS_KEYWORDS, resolve_weights
    from mrcnn_tf.weights.matterport_h5 import check_weights_file
    from mrcnn_tf.wbc.training_run import (check_class_count, interrupt_on_sigterm, load_train_val, plan_stages,
                                           train_run)

    choice = resolve_weights(weights, logs, accepted=WEIGHTS_KEYWORDS)
    if choice.path is not None:
        check_weights_file(choice.path)  # a damaged file fails before the dataset load and the (slow) model build
    self_configured = preset is None and choice.kind in ("none", "coco", "imagenet")
    if self_configured:  # a fresh start, no preset: the data decides (wbc/fingerprint.py)
        if schedule:
            plan_stages(Config(), choice, schedule)  # a bad or heads-first --schedule fails before the data loads
        train_set, val_set = load_train_val(dataset_dir)
        config, planned = _fingerprinted(train_set, overrides, choice.kind)
        stages = plan_stages(config, choice, schedule or planned, None, later_lr_factor)
    else:
        config = _prepare_config(choice, overrides, preset)
        stages = plan_stages(config, choice, schedule, preset, later_lr_factor)
        train_set, val_set = load_train_val(dataset_dir)
    check_class_count(train_set, config, choice, preset)
    interrupt_on_sigterm()
    keras_output = (1 if sys.stdout.isatty() else 2) if verbose else 0
    run = train_run(config, train_set, val_set, logs, stages, choice=choice, seed=seed, augment=not no_augment,
                    verbose=keras_output, list_layers=verbose, echo=click.echo,
                    run_info={"weights": str(weights), "config": "fingerprint" if self_configured else preset,
                              "dataset": str(dataset_dir)})
    done = run.checkpoints() if run.chief else ["none by this worker (the chief writes them)"]
    click.echo(f"Done: {done[-1] if done else 'no checkpoint written'}")

"""Schedules and the stage loop: the engine half of the one training driver.

A schedule is Matterport's staged training written down: ``heads:20,all:40`` trains the heads to epoch 20,
then every layer to epoch 40 (epochs are cumulative). `train_stages` runs one on a training `MaskRCNN`,
skipping the stages a resumed run already finished, with one progress line per epoch. It takes the model it
is given: building it, start weights and the run's other files are the caller's (`mrcnn_tf.wbc.training_run`,
which `mrcnn-tf train`, the demo and the benchmarks call).
"""
import json
import pathlib

from mrcnn_tf.engine import training
from mrcnn_tf.engine.checkpoints import atomic_write_text
from mrcnn_tf.engine.progress import EpochProgress
from mrcnn_tf.errors import ConfigError

STAGES = ("heads", "3+", "4+", "5+", "all")
DEFAULT_SCHEDULE = "heads:20,all:40"  # Matterport's fine-tuning recipe (nucleus sample)
RUN_FILE = "train_command.json"  # the run's schedule and start, so a resumed run continues the same stages


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


def format_schedule(stages):
    """[(layers, epochs, lr), ...] -> ``"heads:20@0.001,all:40@0.001"`` (what `parse_schedule` reads back)."""
    return ",".join(f"{layers}:{epochs}@{lr:g}" for layers, epochs, lr in stages)


def write_run_file(run_dir, stages, **info):
    """Record the run's schedule (and `info`: weights, config, dataset, seed, ...) in its folder."""
    path = pathlib.Path(run_dir) / RUN_FILE
    atomic_write_text(path, json.dumps({"schedule": format_schedule(stages), **info}, indent=2, default=str))
    return path


def saved_schedule(checkpoint):
    """The schedule text a run recorded beside `checkpoint`, or None where it recorded none."""
    run_file = pathlib.Path(checkpoint).parent / RUN_FILE
    if not run_file.is_file():
        return None
    return json.loads(run_file.read_text()).get("schedule")


def train_stages(model, train_set, val_set, stages, augmentation=None, seed=None, callbacks=(), verbose=0,
                 list_layers=False, echo=print):
    """Run `stages` on the training `model` from its current epoch; stages already done are skipped.

    Args:
        model: a training-mode `MaskRCNN` with its log folder set.
        train_set, val_set: prepared `Dataset`s.
        stages: [(layers, epochs, learning_rate), ...] (`parse_schedule`).
        augmentation: imgaug augmenter or None.
        seed: seeds weights order, data order and augmentation (None: not seeded).
        callbacks: extra Keras callbacks for every stage (e.g. held-out scoring); the progress line comes last.
        verbose: Keras' own output: 0 none, 1 progress bar (a terminal), 2 Keras' line per epoch.
        list_layers: print the trainable layers of each stage (Matterport's listing).
        echo: callable for the stage and progress lines.

    Returns:
        The `EpochProgress` callback (its `lines` hold what was printed per epoch).
    """
    config = model.config
    progress = EpochProgress(stages[-1][1], config.STEPS_PER_EPOCH, echo=echo,
                             explain_val_loss=bool(config.BN_STATS_BATCHES) and config.TRAIN_BN is None)
    for layers, epochs, lr in stages:
        if model.epoch >= epochs:
            echo(f"Stage {layers}:{epochs} already done (checkpoint at epoch {model.epoch}); skipped")
            continue
        echo(f"Stage {layers}: epochs {model.epoch + 1}-{epochs}, learning rate {lr:g}")
        training.train(model, train_set, val_set, lr, epochs, layers, augmentation=augmentation,
                       custom_callbacks=[*callbacks, progress], seed=seed, verbose=verbose, list_layers=list_layers)
    return progress

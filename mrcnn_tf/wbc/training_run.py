"""The one training driver: `mrcnn-tf train`, `mrcnn-tf demo` and the learning benchmarks all call `train_run`.

A run is: a config (a preset, or the one saved beside a checkpoint being resumed, with ``--set`` on top), a
start (COCO, ImageNet, a checkpoint or file, or random weights), a schedule of stages, and the run folder
they write: checkpoints with their config JSON, the CSV log, ``train_command.json`` and, with
COLOUR_TYPING, the colour typer. `train_run` builds the training `MaskRCNN`, loads the start, fits the typer
(on the training cells' own masks, so before the network trains: a bad dataset fails in seconds), optionally
scores a held-out set as it goes, and runs the stages through `mrcnn_tf.engine.driver.train_stages`.
"""
import json
import pathlib
import signal

from mrcnn_tf.engine.driver import (DEFAULT_SCHEDULE, format_schedule, parse_schedule, saved_schedule,
                                     train_stages, write_run_file)
from mrcnn_tf.errors import ConfigError, MrcnnError
from mrcnn_tf.wbc.presets import DEFAULT_PRESET, DEFAULT_SCRATCH_SCHEDULE, config_class, scratch_schedule


def saved_config(checkpoint):
    """The config JSON beside one of our checkpoints, or None for a foreign weight file."""
    from mrcnn_tf.engine.checkpoints import config_path_for
    from mrcnn_tf.wbc.runs import config_class_for

    path = config_path_for(checkpoint)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON config ({exc}); re-create it or remove it") from None
    return config_class_for(values if isinstance(values, dict) else {}).load_json(path)


def _overridden(name, overrides):
    """Whether a ``--set KEY=VALUE`` pair names the attribute `name`."""
    return any(o.split("=", 1)[0].strip().upper() == name for o in overrides)


def prepare_config(choice, overrides, preset=None, echo=print):
    """The preset's config (LiscConfig by default), or the checkpoint's saved one, with --set applied.

    From random weights BatchNorm is switched to train (unless --set says otherwise).

    Args:
        choice: the resolved start (`mrcnn_tf.engine.checkpoints.resolve_weights`).
        overrides: ``["KEY=VALUE", ...]``.
        preset: a preset name (`mrcnn_tf.wbc.presets`) or None.
        echo: callable for notes and warnings.
    """
    preset_class = config_class(preset or DEFAULT_PRESET)  # an unknown name fails first, also when resuming
    config = saved_config(choice.path) if choice.kind == "checkpoint" else None
    if config is None:
        config = preset_class()
    elif preset:
        echo(f"Note: --config {preset} is not used: a resumed run keeps the config saved with its "
             "checkpoint (change settings with --set)")
    config.apply_overrides(list(overrides))
    if choice.kind == "none" and config.TRAIN_BN is False:
        if _overridden("TRAIN_BN", overrides):
            echo("Warning: training from random weights with frozen BatchNorm (TRAIN_BN=false) leaves the "
                 "network without normalisation; it rarely learns")
        else:
            # Batch statistics in training, moving ones recomputed before each checkpoint at inference:
            # the demo's setting (per-image statistics at inference, TRAIN_BN=true, scored far lower).
            config.TRAIN_BN = None
            if not _overridden("BN_STATS_BATCHES", overrides) and not config.BN_STATS_BATCHES:
                config.BN_STATS_BATCHES = 4
            config.refresh()
            echo("Note: --weights none: BatchNorm trains (TRAIN_BN=null, a random network needs it) and "
                 f"its statistics are recomputed on {config.BN_STATS_BATCHES} batches before each checkpoint")
    return config


def schedule_text(schedule, choice, preset=None):
    """--schedule if given; a resumed run's own; from random weights the preset's; else Matterport's."""
    if schedule:
        return schedule
    if choice.kind == "checkpoint":
        saved = saved_schedule(choice.path)
        if saved is not None:
            return saved
    return scratch_schedule(preset) if choice.kind == "none" else DEFAULT_SCHEDULE


def plan_stages(config, choice, schedule=None, preset=None, later_lr_factor=1.0):
    """The stages to run; a random start must train every layer from its first stage."""
    stages = parse_schedule(schedule_text(schedule, choice, preset), config.LEARNING_RATE, later_lr_factor)
    if choice.kind == "none" and stages[0][0] != "all":
        raise MrcnnError(f"--weights none with a {stages[0][0]!r} first stage: a backbone left at random weights "
                         f"never learns; train everything from scratch, e.g. --schedule {DEFAULT_SCRATCH_SCHEDULE}")
    return stages


def load_start_weights(model, choice, config, echo=print):
    """COCO, ImageNet, a checkpoint or a weight file into the training model (nothing for a random start)."""
    if choice.kind == "coco":
        from mrcnn_tf.weights.matterport_h5 import load_coco_weights
        load_coco_weights(model.keras_model, config)
    elif choice.kind == "imagenet":
        from mrcnn_tf.weights.imagenet import load_imagenet_weights
        load_imagenet_weights(model.keras_model, config)
    elif choice.kind in ("checkpoint", "file"):
        from mrcnn_tf.errors import WeightsError
        from mrcnn_tf.wbc.runs import misfit_message

        try:
            report = model.load_weights(str(choice.path), by_name=True, verbose=0)
        except WeightsError as exc:
            report = getattr(exc, "report", None)
            if report is None or not report.mismatched:
                raise
            # The loader's fix (exclude=[...]) is Python: say what to do on the command line instead.
            raise WeightsError(misfit_message(report, choice.path, config, training=True)) from None
        echo(str(report))


def check_class_count(dataset, config, choice, preset=None):
    """Refuse a config whose NUM_CLASSES is not the dataset's: class ids beyond it break training."""
    if dataset.num_classes == config.NUM_CLASSES:
        return
    from mrcnn_tf.engine.checkpoints import config_path_for

    source = (f"config {config_path_for(choice.path).name}" if choice.kind == "checkpoint"
              and config_path_for(choice.path).is_file() else f"--set or the {preset or DEFAULT_PRESET} preset")
    raise ConfigError(f"NUM_CLASSES is {config.NUM_CLASSES} ({source}) but the dataset has {dataset.num_classes} "
                      f"classes ({', '.join(dataset.class_names)}): pass --set NUM_CLASSES={dataset.num_classes}")


def load_train_val(dataset_dir):
    """The prepared train and val datasets of a COCO- or LISC-layout folder, checked to agree."""
    from mrcnn_tf.coco import coco_subsets, is_coco_layout
    from mrcnn_tf.wbc.runs import load_dataset

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
    return datasets["train"], datasets["val"]


def fit_typer(train_set, config, echo=print):
    """COLOUR_TYPING: the colour typer fitted on the training cells' own masks (None when the config types by
    its class head)."""
    if not config.COLOUR_TYPING:
        return None
    from mrcnn_tf.wbc.colour_typing import fit_colour_typer

    typer = fit_colour_typer(train_set, feature_set=config.COLOUR_TYPING_FEATURES)
    echo(f"Colour typer: {typer.feature_set} features, fitted on {typer.cells} training cells, L2 {typer.l2:g}, "
         f"cross-validated accuracy {typer.cv_accuracy:.3f}; nucleus colour direction {typer.nucleus_source}")
    return typer


def interrupt_on_sigterm():
    """SIGTERM ends training like Ctrl-C (one line, exit 130); checkpoints are atomic either way."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


class TrainedRun:
    """What `train_run` leaves: the training `model`, its `run_dir`, whether this process is the `chief` (the
    one that writes), the `typer` (or None), the held-out `scorer` (or None) and the epoch `progress` lines."""

    def __init__(self, model, run_dir, chief, typer, scorer, progress):
        self.model, self.run_dir, self.chief = model, run_dir, chief
        self.typer, self.scorer, self.progress = typer, scorer, progress

    def checkpoints(self):
        from mrcnn_tf.engine.checkpoints import list_checkpoints

        return list_checkpoints(self.run_dir)


def train_run(config, train_set, val_set, logs_dir, stages, choice=None, fresh_run=False, seed=None, augment=True,
              score_every=None, verbose=0, list_layers=False, run_info=None, echo=print):
    """Train `config` on `train_set` in `stages`, validating on `val_set`: the one training driver.

    Args:
        config: the Config to train (`prepare_config` for the command line's rules).
        train_set, val_set: prepared datasets (LISC, COCO or any `Dataset`).
        logs_dir: folder that receives the run folder.
        stages: [(layers, epochs, learning_rate), ...] (`plan_stages` / `parse_schedule`).
        choice: the start (`resolve_weights(...)`; None: random weights).
        fresh_run: a checkpoint `choice` is a start point, not a run to resume: a new run folder from epoch 0.
        seed: seed of weights, data order and augmentation (None: not seeded).
        augment: False trains without augmentation (else the config's AUGMENTATION).
        score_every: score `val_set` with the full metrics every this many epochs (and after the last);
            None scores nothing beyond the validation loss.
        verbose: Keras' own output (0 none, 1 progress bar, 2 a line per epoch); our line per epoch comes always.
        list_layers: print the trainable layers of each stage.
        run_info: extra entries for ``train_command.json`` (dataset, preset, weights...).
        echo: callable for progress lines.

    Returns:
        a `TrainedRun`.
    """
    import keras

    from mrcnn_tf.data.augment import augmentation_for
    from mrcnn_tf.data.dataset import check_nucleus_masks
    from mrcnn_tf.engine import training
    from mrcnn_tf.model import MaskRCNN
    from mrcnn_tf.wbc.colour_typing import TYPER_FILE
    from mrcnn_tf.wbc.held_out import HeldOutEvaluation

    # NUCLEUS_MASKS on data without nuclei: refused before any model or run folder exists.
    for role, dataset in (("training set", train_set), ("validation set", val_set)):
        check_nucleus_masks(dataset, config.NUCLEUS_MASKS, role, (run_info or {}).get("dataset"), ConfigError)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    typer = fit_typer(train_set, config, echo)
    model = MaskRCNN(mode="training", config=config, model_dir=str(logs_dir))
    if choice is not None:
        load_start_weights(model, choice, config, echo)
        if fresh_run:
            model.set_log_dir()
    chief = training.writes_run_files(model)  # several workers (TF_CONFIG): only the chief writes
    run_dir = training.claim_log_dir(model) if chief else pathlib.Path(model.log_dir)
    if chief:
        write_run_file(run_dir, stages, seed=seed, **(run_info or {}))
        if typer is not None:
            typer.save(run_dir / TYPER_FILE)  # evaluate and detect type the run's cells with it
    echo(f"Run folder: {run_dir} (starting after epoch {model.epoch}); schedule {format_schedule(stages)}")
    if config.MIXED_PRECISION == "auto":  # the one setting this machine decides: say what it chose
        kernels = config.CPU_KERNELS
        echo(f"Precision: {kernels['precision']} (MIXED_PRECISION=auto: "
             + ("bfloat16 runs faster than float32 on this CPU)" if kernels.get("bf16_faster") else
                "this CPU's bfloat16 units run slower than its float32 ones: bfloat16 pays with AMX or on AMD)"
                if kernels["bf16_units"] else "bfloat16 only where the CPU has AMX, or AMD's AVX512-BF16)"))
    scorer = None
    if score_every:
        scorer = HeldOutEvaluation(model, val_set, stages[-1][1], score_every, echo=echo, typer=typer,
                                   print_estimate=False)
    progress = train_stages(model, train_set, val_set, stages, augmentation=augmentation_for(config) if augment
                            else None, seed=seed, callbacks=[scorer] if scorer else (), verbose=verbose,
                            list_layers=list_layers, echo=echo)
    return TrainedRun(model, run_dir, chief, typer, scorer, progress)

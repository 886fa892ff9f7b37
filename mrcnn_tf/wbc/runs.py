"""Run folders and dataset folders: what the commands, the demo and the benchmarks share above the model.

`load_config` reads the config saved beside a checkpoint (LiscConfig's defaults for a foreign file),
`load_inference_model` builds the inference `MaskRCNN` of a run (its `load_weights` takes the run's colour typer
when it has one), `load_dataset` reads a COCO- or LISC-layout folder by its layout, and `misfit_message` turns weights of
the wrong shapes into one line with a command-line fix.
"""
import json
import pathlib

from mrcnn_tf.errors import ConfigError

LISC_SUBSETS = ("train", "val", "all")


def _stderr(line):
    import sys

    print(line, file=sys.stderr)


def config_class_for(values):
    """`LiscConfig`, or a subclass that also knows the keys of a config saved by a custom subclass."""
    from mrcnn_tf.config import DERIVED
    from mrcnn_tf.lisc import LiscConfig

    extra = {k: v for k, v in values.items() if k not in DERIVED and not hasattr(LiscConfig, k) and k.isupper()}
    return type("SavedConfig", (LiscConfig,), extra) if extra else LiscConfig


def load_config(checkpoint, overrides=(), echo=_stderr):
    """The config saved beside `checkpoint`, set up for inference (one image per batch) + overrides.

    Args:
        checkpoint: weight file path.
        overrides: ``["KEY=VALUE", ...]`` from ``--set``.
        echo: callable for the note when no config is found.

    Returns:
        a validated Config.
    """
    from mrcnn_tf.engine.checkpoints import config_path_for
    from mrcnn_tf.lisc import LiscConfig

    path = config_path_for(checkpoint)
    if path.is_file():
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a JSON config ({exc}); re-create it or remove it") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config JSON must hold an object of KEY: value pairs")
        config = config_class_for(values).load_json(path)
    else:
        echo(f"Note: no config beside {checkpoint} ({path.name}); using LiscConfig defaults "
             "(change them with --set KEY=VALUE)")
        config = LiscConfig()
    # Detection runs one image at a time on one device.
    config.GPU_COUNT = 1
    config.IMAGES_PER_GPU = 1
    config.refresh()
    return config.apply_overrides(list(overrides))


def load_dataset(dataset_dir, subset):
    """The prepared dataset of ``--dataset DIR`` and ``--subset NAME``, COCO or LISC by the folder's layout.

    A COCO layout (``DIR/annotations/``, ``DIR/images/``) loads ``annotations/instances_<subset>.json``
    into a `CocoDataset`, any NAME allowed; anything else is read by `LiscDataset` (LISC or WBC layout),
    whose subsets are the deterministic split's train, val and all. An empty LISC subset is left to
    the command to report (the fix depends on it); an empty COCO one is an error here.

    Raises:
        DatasetError: bad folder, subset or file (one line naming it).
    """
    from mrcnn_tf.coco import CocoDataset, is_coco_layout
    from mrcnn_tf.errors import DatasetError
    from mrcnn_tf.lisc import LiscDataset, find_layout

    if is_coco_layout(dataset_dir):
        dataset = CocoDataset()
        dataset.load_coco(dataset_dir, subset)
        dataset.prepare()
        if dataset.num_images == 0:
            raise DatasetError(f"{pathlib.Path(dataset_dir) / 'annotations' / f'instances_{subset}.json'}: no image "
                               "with an annotation; add annotations (or images) to this subset")
        return dataset
    if subset not in LISC_SUBSETS:
        find_layout(dataset_dir)  # a missing or unknown folder is the first thing to fix
        raise DatasetError(f"--subset {subset}: a LISC-layout folder ({dataset_dir}) has the subsets "
                           f"{', '.join(LISC_SUBSETS)}; named subsets need a COCO layout "
                           "(DIR/annotations/instances_<NAME>.json, DIR/images/)")
    dataset = LiscDataset()
    dataset.load_lisc(dataset_dir, subset)
    dataset.prepare()
    return dataset


def resolve_checkpoint(weights, logs):
    """The weight file named by ``--weights last|PATH`` (coco, imagenet and none are refused)."""
    from mrcnn_tf.engine.checkpoints import resolve_weights

    return pathlib.Path(resolve_weights(weights, logs, accepted=("last",)).path)


def load_inference_model(weights, logs, overrides=(), colour_typing=True, echo=_stderr):
    """An inference `MaskRCNN` with the checkpoint's weights and config.

    With COLOUR_TYPING on, `MaskRCNN.load_weights` takes the run's colour typer beside the checkpoint as the
    model's `typer` (a warning when it is missing), so `detect` types by colour exactly as in Python; echo says
    which file. `colour_typing=False` drops it (`model.typer = None`: the class head's types).

    Returns:
        (model, checkpoint path).
    """
    from mrcnn_tf.errors import WeightsError
    from mrcnn_tf.model import MaskRCNN
    from mrcnn_tf.weights.matterport_h5 import check_weights_file

    checkpoint = resolve_checkpoint(weights, logs)
    check_weights_file(checkpoint)  # a damaged file fails before the (slow) model build
    config = load_config(checkpoint, overrides, echo)
    model = MaskRCNN(mode="inference", config=config, model_dir=logs)
    try:
        # By name: a checkpoint written by the training model holds extra layers the inference model lacks.
        model.load_weights(str(checkpoint), by_name=True)
    except WeightsError as exc:
        report = getattr(exc, "report", None)
        if report is None or not report.mismatched:
            raise
        raise WeightsError(misfit_message(report, checkpoint, config)) from None
    if not colour_typing:
        model.typer = None
    elif model.typer is not None:
        from mrcnn_tf.inference.colour_typer import typer_path

        echo(f"Types from {typer_path(checkpoint)} ({model.typer.feature_set} inside each predicted mask; fitted on "
             f"{model.typer.cells} cells)")
    return model, checkpoint


def misfit_message(report, checkpoint, config, training=False):
    """One line for weights whose shapes do not fit the model, with a command-line fix.

    The library's own fix (``by_name=True, exclude=[...]``) is Python; on the command line the
    lever is the config: the JSON beside the checkpoint or ``--set``. With `training`, NUM_CLASSES
    is fixed by the dataset, so a file for another class count needs other start weights instead.
    """
    from mrcnn_tf.engine.checkpoints import config_path_for
    from mrcnn_tf.weights.matterport_h5 import COCO_CLASS_SPECIFIC

    beside = config_path_for(checkpoint)
    source = f"config {beside.name}" if beside.is_file() else "LiscConfig defaults, no .config.json beside it"
    names = {m.split(":")[0] for m in report.mismatched}
    classes = report.file_num_classes
    if classes and classes != config.NUM_CLASSES and names <= set(COCO_CLASS_SPECIFIC) and training:
        fix = (f"the file is for NUM_CLASSES={classes}, the dataset and model for {config.NUM_CLASSES}: start "
               "from weights trained on these classes, or from --weights coco (its class layers are left out "
               "and trained anew)")
    elif classes and classes != config.NUM_CLASSES and names <= set(COCO_CLASS_SPECIFIC):
        fix = (f"the file is for NUM_CLASSES={classes}, the model for {config.NUM_CLASSES} ({source}): pass "
               f"--set NUM_CLASSES={classes} or use the config saved with these weights")
    else:
        known = f" and NUM_CLASSES={classes}" if classes and classes != config.NUM_CLASSES else ""
        fix = (f"it was trained with other settings{known} than the model ({source}): put the .config.json "
               "saved with it beside it, or give its settings with --set KEY=VALUE")
    return f"{checkpoint}: {len(report.mismatched)} layer(s) do not fit ({report.mismatched[0]}); {fix}"

"""Checkpoint files on disk: names, the newest one, the config beside it, crash-safe writes.

Layout (Matterport's, with Keras 3's mandatory ``.weights.h5`` suffix)::

    <logs>/<name><YYYYmmddTHHMM>[_N]/mask_rcnn_<name>_<epoch:04d>.weights.h5
    <logs>/<name><YYYYmmddTHHMM>[_N]/mask_rcnn_<name>_<epoch:04d>.config.json

The epoch in a file name is the number of epochs completed when it was written, so resuming from
``..._0003`` continues with epoch 4 (Matterport's convention). Writes go to a hidden temporary file
in the same folder that is renamed over the target, so an interrupted run (SIGINT, SIGTERM,
kill -9) never leaves a truncated checkpoint under a real name.
"""
import datetime
import json
import os
import pathlib
import re
from typing import NamedTuple, Optional

from mrcnn_tf.errors import MrcnnError, WeightsError

WEIGHTS_SUFFIX = ".weights.h5"
CONFIG_SUFFIX = ".config.json"
# Matterport's own checkpoints end in plain ".h5"; they are recognised (epoch included) too.
CHECKPOINT_RE = re.compile(r"^mask_rcnn_(?P<name>.*)_(?P<epoch>\d{4,})(\.weights)?\.h5$")
RUN_DIR_RE = re.compile(r"^(?P<prefix>.*?)(?P<stamp>\d{8}T\d{4,6})(?:_(?P<n>\d+))?$")
WEIGHTS_KEYWORDS = ("coco", "imagenet", "last", "none")


class CheckpointNotFoundError(WeightsError, FileNotFoundError):
    """No checkpoint where one was asked for (also a FileNotFoundError, as Matterport raised)."""


def checkpoint_name(name, epoch):
    """``mask_rcnn_<name>_<epoch:04d>.weights.h5`` for a config NAME (lower-cased) and epoch."""
    return f"mask_rcnn_{str(name).lower()}_{int(epoch):04d}{WEIGHTS_SUFFIX}"


def checkpoint_epoch(path):
    """The epoch number in a checkpoint file name, or None when the name has no epoch."""
    match = CHECKPOINT_RE.match(pathlib.Path(path).name)
    return int(match.group("epoch")) if match else None


def config_path_for(checkpoint):
    """Path of the config JSON written beside `checkpoint` (it may not exist for foreign files)."""
    path = pathlib.Path(checkpoint)
    for suffix in (WEIGHTS_SUFFIX, ".h5"):
        if path.name.endswith(suffix):
            stem = path.name[:-len(suffix)]
            break
    else:
        stem = path.stem
    return path.with_name(stem + CONFIG_SUFFIX)


def run_dir_key(path):
    """Sort key that orders run folders by their timestamp, then by their _N collision suffix."""
    name = pathlib.Path(path).name
    match = RUN_DIR_RE.match(name)
    if not match:
        return ("", 0, name)
    return (match.group("stamp"), int(match.group("n") or 1), name)


def list_checkpoints(run_dir):
    """Checkpoints of one run folder, oldest epoch first (temporary files are never listed)."""
    run_dir = pathlib.Path(run_dir)
    found = [p for p in run_dir.iterdir() if p.is_file() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: (checkpoint_epoch(p), p.name))


def find_last(model_dir, name=None):
    """The newest checkpoint under `model_dir`: newest run folder (by timestamp) that has one.

    Matterport looks only at the newest folder starting with NAME; a run that died before its
    first epoch would then hide all older checkpoints, so empty folders are skipped here.

    Args:
        model_dir: the logs folder.
        name: config NAME; only run folders starting with ``name.lower()`` count (None: all).

    Returns:
        pathlib.Path of the newest ``mask_rcnn_*.weights.h5``.

    Raises:
        CheckpointNotFoundError (an MrcnnError): no such checkpoint, with the fix.
    """
    model_dir = pathlib.Path(model_dir)
    prefix = str(name).lower() if name else ""
    what = f"for '{prefix}' " if prefix else ""
    fix = "train first (mrcnn-tf train) or pass --weights PATH"
    if not model_dir.is_dir():
        raise CheckpointNotFoundError(f"No checkpoint {what}under {model_dir}: the folder does not exist; {fix}")
    runs = [d for d in model_dir.iterdir() if d.is_dir() and d.name.lower().startswith(prefix)]
    for run in sorted(runs, key=run_dir_key, reverse=True):
        checkpoints = list_checkpoints(run)
        if checkpoints:
            return checkpoints[-1]
    raise CheckpointNotFoundError(f"No checkpoint (mask_rcnn_*{WEIGHTS_SUFFIX}) {what}under {model_dir}; {fix}")


def new_run_dir(model_dir, name, now=None):
    """Create and return a fresh run folder ``<name><YYYYmmddTHHMM>`` that no other run uses.

    Two runs started in the same minute would share Matterport's folder; ``mkdir`` without
    exist_ok is atomic, so on collision ``_2``, ``_3``, ... are tried instead.
    """
    now = now or datetime.datetime.now()
    base = f"{str(name).lower()}{now:%Y%m%dT%H%M}"
    model_dir = pathlib.Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10000):
        path = model_dir / (base if attempt == 1 else f"{base}_{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise MrcnnError(f"{model_dir}: could not create a new run folder {base}_N; clean up old runs")


# ---------------------------------------------------------------------- crash-safe writes
def _temporary_path(path, suffix):
    # Hidden (never matches CHECKPOINT_RE) and unique per process, in the target's folder so that
    # the final rename stays on one file system and is atomic.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Write `text` to `path` through a temporary file and a rename."""
    path = pathlib.Path(path)
    tmp = _temporary_path(path, ".txt")
    try:
        tmp.write_text(text)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _optimizer_of(keras_model):
    optimizer = getattr(keras_model, "optimizer", None)
    return optimizer if optimizer is not None and hasattr(optimizer, "variables") else None


def save_model_weights(keras_model, path):
    """Save the model's weights without the optimizer's slots, as Matterport's checkpoints did.

    Keras 3's `save_weights` also stores a compiled model's optimizer variables (SGD momentum: as
    many numbers as the model has), doubling every checkpoint; they are skipped here through
    Keras' `saving_lib` (falling back to plain `save_weights` if that internal API moves).
    """
    optimizer = _optimizer_of(keras_model)
    saving_lib = _saving_lib() if optimizer is not None else None
    if saving_lib is not None:
        return saving_lib.save_weights_only(keras_model, str(path), objects_to_skip=[optimizer])
    return keras_model.save_weights(str(path))


def load_model_weights(keras_model, path):
    """Load a file written by `save_model_weights` into the same architecture (optimizer untouched)."""
    optimizer = _optimizer_of(keras_model)
    saving_lib = _saving_lib() if optimizer is not None else None
    if saving_lib is not None:
        return saving_lib.load_weights_only(keras_model, str(path), objects_to_skip=[optimizer])
    return keras_model.load_weights(str(path))


def _saving_lib():
    """Keras' private saving_lib, or None (with a warning) where an upgrade moved it."""
    from mrcnn_tf.backend.compat import private_or_none

    return private_or_none("saving_lib", "checkpoints then hold the optimizer's slots too (twice the size)")


def atomic_save_weights(keras_model, path):
    """`save_model_weights` through a temporary ``.weights.h5`` and a rename."""
    path = pathlib.Path(path)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise MrcnnError(f"{path}: Keras 3 weight files must end in {WEIGHTS_SUFFIX}")
    tmp = _temporary_path(path, WEIGHTS_SUFFIX)
    try:
        save_model_weights(keras_model, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(keras_model, config, path):
    """Write the config JSON, then the weights, each atomically; returns the weights path.

    Config first: a crash between the two leaves a stray JSON (ignored) rather than weights
    whose config is missing.
    """
    path = pathlib.Path(path)
    if config is not None:
        atomic_write_text(config_path_for(path), json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return atomic_save_weights(keras_model, path)


def remove_stale_temporaries(run_dir):
    """Delete temporary files left by a killed writer (hidden ``.*.tmp*`` files) in `run_dir`."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = [p for p in run_dir.iterdir() if p.is_file() and p.name.startswith(".") and ".tmp" in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------------- --weights
class WeightsChoice(NamedTuple):
    """What ``--weights`` asked for.

    kind: "coco", "imagenet", "none", "checkpoint" (one of ours: epoch and config known) or "file"
    (any other weight file, e.g. Matterport's h5). path: the file for checkpoint/file, else None.
    epoch: the epoch of a checkpoint, else None.
    """

    kind: str
    path: Optional[pathlib.Path] = None
    epoch: Optional[int] = None


def resolve_weights(spec, logs_dir, name=None, accepted=WEIGHTS_KEYWORDS):
    """Turn ``--weights coco|imagenet|last|none|PATH`` into a `WeightsChoice`.

    "last" finds the newest checkpoint under `logs_dir` (optionally of config NAME `name`); a PATH
    must exist. Downloading/locating COCO or ImageNet files is `mrcnn_tf.weights.matterport_h5`' job.

    Args:
        spec: the ``--weights`` value.
        logs_dir: folder searched by "last".
        name: config NAME whose run folders "last" considers (None: all).
        accepted: the keywords (subset of `WEIGHTS_KEYWORDS`) the calling command takes, e.g.
            ``("last",)`` for detect/evaluate/export; error messages list only these.

    Raises:
        CheckpointNotFoundError / WeightsError with a one-line fix.
    """
    accepted = tuple(k.lower() for k in accepted)
    unknown = set(accepted) - set(WEIGHTS_KEYWORDS)
    if unknown:
        raise ValueError(f"accepted={sorted(unknown)}: keywords must come from {WEIGHTS_KEYWORDS}")
    choices = ", ".join(accepted) + " or a weight file path" if accepted else "a weight file path"
    text = str(spec).strip()
    keyword = text.lower()
    if keyword in WEIGHTS_KEYWORDS:
        # A keyword is never read as a file name, also where this command does not take it.
        if keyword not in accepted:
            raise WeightsError(f"--weights {text}: not accepted by this command; give {choices}")
        if keyword == "last":
            path = find_last(logs_dir, name)
            return WeightsChoice("checkpoint", path, checkpoint_epoch(path))
        return WeightsChoice(keyword)
    path = pathlib.Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(f"--weights {text}: no such file; give {choices}")
    epoch = checkpoint_epoch(path)
    return WeightsChoice("checkpoint" if epoch is not None else "file", path, epoch)

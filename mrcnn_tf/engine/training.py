"""Staged training as in Matterport's `MaskRCNN.train`, on Keras 3's `fit`.

``train(mrcnn, train_ds, val_ds, learning_rate, epochs, layers)`` freezes everything but `layers`,
compiles SGD with momentum and global-norm gradient clipping, and fits from ``mrcnn.epoch`` up to
`epochs` (cumulative, so stages chain: ``epochs=20, layers="heads"`` then ``epochs=40,
layers="all"`` trains 20 more). Every epoch writes ``mask_rcnn_<name>_<epoch:04d>.weights.h5``
with its config JSON beside it (atomically), a CSV row and TensorBoard scalars; a non-finite loss
stops training with `TrainingDivergedError` before anything is written, so the last checkpoint
on disk is always a good one.
"""
import contextlib
import math
import pathlib
import re

import keras
import numpy as np

from mrcnn_tf.engine import checkpoints, multi_worker
from mrcnn_tf.errors import ConfigError, MrcnnError
from mrcnn_tf.engine.lr_schedule import learning_rate_for
# The optimizers live in their own module; `training.build_optimizer` stays their public path.
from mrcnn_tf.engine.optimizers import ReplicaSumClipAdam, ReplicaSumClipSGD, build_optimizer  # noqa: F401
from mrcnn_tf.engine.weight_average import WeightAverage

# Matterport's layer groups (regexes matched in full against layer names).
_HEADS = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
LAYER_REGEX = {
    "heads": _HEADS,
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "5+": r"(res5.*)|(bn5.*)|" + _HEADS,
    "all": ".*",
}
CSV_LOG_NAME = "training_log.csv"


class TrainingDivergedError(MrcnnError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


class _NonFiniteLoss(Exception):
    def __init__(self, where, logs):
        super().__init__(where)
        self.where = where
        self.logs = logs


def layer_regex(layers):
    """The regex for a `layers` argument: a LAYER_REGEX key or a regex; ConfigError if invalid."""
    regex = LAYER_REGEX.get(layers, layers)
    try:
        re.compile(regex)
    except (re.error, TypeError) as exc:
        raise ConfigError(f"layers={layers!r} is neither {', '.join(LAYER_REGEX)} nor a valid regex ({exc})") \
            from None
    return regex


def set_trainable(keras_model, layer_regex, indent=0, verbose=1):
    """Make trainable exactly the layers whose name fully matches `layer_regex` (Matterport's rule).

    Nested models (the shared ``rpn_model``) are entered and their layers matched by their own
    names; a TimeDistributed wrapper is matched by the wrapper's name (``mrcnn_class_conv1``) and
    the setting applied to the wrapped layer too. Weightless layers are left alone.

    Returns:
        Names of the layers made trainable, in model order (nested ones included).
    """
    regex = LAYER_REGEX.get(layer_regex, layer_regex)
    trainable_names = []
    if verbose > 0 and indent == 0:
        print(f"Selecting layers to train ({regex})")
    for layer in keras_model.layers:
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.layers.TimeDistributed):
            if verbose > 0:
                print(f"{' ' * indent}In model: {layer.name}")
            # Keras 3 propagates a container's flag to its children: open it, then choose per layer.
            layer.trainable = True
            trainable_names += set_trainable(layer, regex, indent=indent + 4, verbose=verbose)
            continue
        if not layer.weights:
            continue
        trainable = bool(re.fullmatch(regex, layer.name))
        layer.trainable = trainable
        if isinstance(layer, keras.layers.TimeDistributed):
            layer.layer.trainable = trainable
        if trainable:
            trainable_names.append(layer.name)
            if verbose > 0:
                print(f"{' ' * indent}{layer.name:20}   ({layer.__class__.__name__})")
    return trainable_names


# ---------------------------------------------------------------------- callbacks
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop at the first train batch (or epoch) whose loss values are NaN or infinite.

    It raises instead of setting `stop_training` so that nothing after it (validation, the
    checkpoint of this epoch) runs on the diverged weights. `train` turns it into a
    `TrainingDivergedError` naming the last good checkpoint.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    @staticmethod
    def _bad(logs):
        return {k: v for k, v in (logs or {}).items()
                if k.endswith("loss") and isinstance(v, (int, float, np.floating)) and not math.isfinite(v)}

    def on_train_batch_end(self, batch, logs=None):
        bad = self._bad(logs)
        if bad:
            raise _NonFiniteLoss(f"epoch {self.epoch + 1}, step {batch + 1}", bad)

    def on_epoch_end(self, epoch, logs=None):
        bad = self._bad(logs)
        if bad:
            raise _NonFiniteLoss(f"end of epoch {epoch + 1}", bad)


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch, write weights + config JSON atomically and advance ``mrcnn.epoch``.

    Args:
        mrcnn: the `MaskRCNN` facade (its keras_model, config, checkpoint path and epoch).
        path_for_epoch: callable epoch (completed epochs, 1-based) -> checkpoint path.
    """

    def __init__(self, mrcnn, path_for_epoch):
        super().__init__()
        self.mrcnn = mrcnn
        self.path_for_epoch = path_for_epoch
        self.last_saved = None

    def on_epoch_end(self, epoch, logs=None):
        path = self.path_for_epoch(epoch + 1)
        checkpoints.save_checkpoint(self.mrcnn.keras_model, self.mrcnn.config, path)
        self.last_saved = path
        self.mrcnn.epoch = epoch + 1


def tensorboard_available():
    """Whether the `tensorboard` package (needed by tf.summary since TF 2.16) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def default_callbacks(mrcnn, log_dir, path_for_epoch, verbose=1):
    """Matterport's TensorBoard + checkpoint, plus a CSV log and the non-finite-loss guard."""
    callbacks = [
        NonFiniteLossGuard(),  # first: it must run before the checkpoint of a bad epoch
        EpochCheckpoint(mrcnn, path_for_epoch),
        keras.callbacks.CSVLogger(str(log_dir / CSV_LOG_NAME), append=True),
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=False,
                                                     update_freq="epoch", profile_batch=0))
    elif verbose:
        print("Note: TensorBoard logs are off (pip install tensorboard); the CSV log has the same losses")
    return callbacks


# ---------------------------------------------------------------------- train
@contextlib.contextmanager
def xla_autoclustering(enabled):
    """Config.XLA: TF's XLA auto-clustering while training (global setting, restored after).

    Clusters of XLA-compilable ops (backbone, heads) are compiled, NMS and dynamic shapes stay in
    TF. Effective on GPUs; on CPUs TF also needs ``TF_XLA_FLAGS=--tf_xla_cpu_global_jit``.
    """
    if not enabled:
        yield
        return
    import tensorflow as tf

    previous = tf.config.optimizer.get_jit()
    tf.config.optimizer.set_jit("autoclustering")
    try:
        yield
    finally:
        tf.config.optimizer.set_jit(previous or False)


def _checkpoint_path_function(mrcnn, log_dir):
    pattern = getattr(mrcnn, "checkpoint_path", None)
    if pattern and "{epoch" in str(pattern):
        # Only the file name of the pattern is used: checkpoints always go into this run's folder.
        return lambda epoch: log_dir / pathlib.Path(str(pattern).format(epoch=epoch)).name
    name = mrcnn.config.NAME or "mrcnn"
    return lambda epoch: log_dir / checkpoints.checkpoint_name(name, epoch)


def writes_run_files(mrcnn):
    """Whether this process writes into the run folder: yes, except on a multi-worker run's non-chief."""
    from mrcnn_tf.engine.distribute import is_chief

    return is_chief(getattr(mrcnn.keras_model, "_distribute_strategy", None))


def claim_log_dir(mrcnn):
    """Create this run's log folder and return it; a new run never writes into another run's folder.

    Three cases: a later stage of this object's run (the folder it already claimed), a resumed run
    (``mrcnn.epoch > 0``: the folder of the checkpoint it loaded, Matterport's behaviour), or a new
    run. A new run creates its folder atomically; if that name is taken (two runs started within
    the same minute, possibly by two processes), it moves to the next free ``_N`` name and updates
    ``mrcnn.log_dir`` / ``mrcnn.checkpoint_path``.
    """
    if getattr(mrcnn, "log_dir", None) is None:
        raise MrcnnError("the model has no log folder: call model.set_log_dir() before train()")
    log_dir = pathlib.Path(mrcnn.log_dir)
    claimed = getattr(mrcnn, "_claimed_log_dir", None)
    if claimed == str(log_dir) or mrcnn.epoch > 0:
        log_dir.mkdir(parents=True, exist_ok=True)
    else:
        log_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            log_dir.mkdir()
        except FileExistsError:
            moved = checkpoints.new_run_dir(log_dir.parent, mrcnn.config.NAME or "mask_rcnn")
            pattern = getattr(mrcnn, "checkpoint_path", None)
            if pattern:
                mrcnn.checkpoint_path = str(moved / pathlib.Path(str(pattern)).name)
            log_dir = moved
    mrcnn.log_dir = str(log_dir)
    mrcnn._claimed_log_dir = str(log_dir)
    return log_dir


def _data_generators(mrcnn, train_dataset, val_dataset, augmentation, no_augmentation_sources, seed, workers):
    """Training and validation `DataGenerator`s, STEPS_PER_EPOCH / VALIDATION_STEPS batches long.

    The training stream is positioned at ``mrcnn.epoch`` so a resumed run sees the batches it would
    have seen uninterrupted; validation is unshuffled and unaugmented, so its losses compare.
    """
    from mrcnn_tf.data.pipeline import DataGenerator

    config = mrcnn.config
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    # USE_RPN_ROIS = False trains the heads on random ROIs fed through `input_roi` instead of the RPN's
    # proposals (Matterport's model had that input, but its train() never fed it).
    random_rois = 0 if config.USE_RPN_ROIS else config.POST_NMS_ROIS_TRAINING
    train_gen = DataGenerator(train_dataset, config, shuffle=True, augmentation=augmentation,
                              steps=config.STEPS_PER_EPOCH, seed=seed, random_rois=random_rois,
                              no_augmentation_sources=no_augmentation_sources, workers=workers)
    train_gen.set_epoch(mrcnn.epoch)
    val_gen = DataGenerator(val_dataset, config, shuffle=False, augmentation=None, random_rois=random_rois,
                            steps=config.VALIDATION_STEPS, seed=seed + 1, workers=workers)
    return train_gen, val_gen


def compile_training_model(keras_model, config, learning_rate, momentum, jit_compile="auto"):
    """Compile with the config's losses and optimizer (OPTIMIZER, GRADIENT_CLIP_NORM), its slots built.

    The optimizer's variables are created under the model's strategy (mirrored like the model's,
    GPU_COUNT > 1), eagerly, for the variables trainable now: left to the first step, Keras creates
    them inside its trace, lifted out of the graph one by one (seconds more for every compile).
    """
    keras_model.configure_losses(config)
    with keras_model.distribute_strategy.scope():
        keras_model.compile(optimizer=build_optimizer(learning_rate, momentum, config.GRADIENT_CLIP_NORM,
                                                      config.OPTIMIZER), jit_compile=jit_compile)
        keras_model.optimizer.build(keras_model.trainable_variables)


def train(mrcnn, train_dataset, val_dataset, learning_rate, epochs, layers, augmentation=None,
          custom_callbacks=None, no_augmentation_sources=None, seed=None, workers=1, verbose=1, list_layers=None):
    """Train `mrcnn` (a training-mode `MaskRCNN`) from ``mrcnn.epoch`` up to `epochs`.

    Args:
        mrcnn: `MaskRCNN` in training mode; its `log_dir` must be set (`set_log_dir`).
        train_dataset, val_dataset: prepared `Dataset`s.
        learning_rate: float: the rate (Matterport), or the peak of Config.LEARNING_RATE_SCHEDULE.
        epochs: cumulative epoch count to reach (Matterport); nothing happens if already reached.
        layers: "heads", "3+", "4+", "5+", "all" or a regex over layer names.
        augmentation: optional imgaug augmenter applied to training images and masks.
        custom_callbacks: extra keras callbacks, appended after the default ones.
        no_augmentation_sources: dataset sources never augmented.
        seed: optional int; seeds Keras/TF/numpy and the data order for reproducible runs.
        workers: data-loading workers of the `DataGenerator` (Keras 3 keeps them on the dataset).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        list_layers: print the trainable layers, as Matterport does (default: when `verbose`).

    Returns:
        The keras History of this stage.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (the message names the last good checkpoint).
    """
    if getattr(mrcnn, "mode", "training") != "training":
        raise MrcnnError("model.train() needs a model built with mode='training'; create "
                         "MaskRCNN(mode='training', ...) to train")
    config = mrcnn.config
    regex = layer_regex(layers)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    keras_model = mrcnn.keras_model
    # GPU_COUNT > 1 or TF_CONFIG: the strategy the model was built under (None: one device).
    strategy = getattr(keras_model, "_distribute_strategy", None)
    seed = multi_worker.agreed_seed(strategy, seed)
    train_gen, val_gen = _data_generators(mrcnn, train_dataset, val_dataset, augmentation,
                                          no_augmentation_sources, seed, workers)
    # Several workers: only the chief writes into the run folder; the others into a scratch folder.
    with multi_worker.writable_log_dir(strategy, lambda: _claim_clean_log_dir(mrcnn)) as log_dir:
        path_for_epoch = _checkpoint_path_function(mrcnn, log_dir)
        if verbose:
            print(f"\nStarting at epoch {mrcnn.epoch}. LR={learning_rate}\n")
            print(f"Checkpoint Path: {path_for_epoch(mrcnn.epoch + 1)}")
        set_trainable(keras_model, regex, verbose=verbose if list_layers is None else int(bool(list_layers)))
        # Never jit_compile the whole step: NMS and the data-dependent tf.where of the proposal /
        # target layers have no XLA kernels (XLA fails with "Detected unsupported operations").
        # XLA=True instead lets TF auto-cluster the compilable parts (see `xla_autoclustering`).
        rate = learning_rate_for(config, learning_rate, mrcnn.epoch, epochs)
        compile_training_model(keras_model, config, rate, config.LEARNING_MOMENTUM, jit_compile=False)
        callbacks = default_callbacks(mrcnn, log_dir, path_for_epoch, verbose) + list(custom_callbacks or [])
        if config.BN_STATS_BATCHES:
            # After the NaN guard, before the checkpoint: checkpoints hold the recomputed statistics.
            callbacks.insert(1, _precise_bn_callback(train_dataset, config, train_gen, augmentation,
                                                     no_augmentation_sources))
        if config.WEIGHT_EMA_DECAY:
            # Before PreciseBN and the checkpoint: both see the averaged weights.
            callbacks.insert(1, WeightAverage(config.WEIGHT_EMA_DECAY))
        train_data, val_data = _fit_inputs(strategy, config, train_gen, val_gen, mrcnn.epoch, workers)
        multi_worker.check_same_start(strategy, mrcnn.epoch, train_gen.seed, keras_model)
        start = mrcnn.epoch
        last_saved = next(c for c in callbacks if isinstance(c, EpochCheckpoint))
        try:
            with xla_autoclustering(bool(getattr(config, "XLA", False))), \
                    multi_worker.lost_worker_errors(strategy, mrcnn, lambda: last_saved.last_saved):
                return keras_model.fit(train_data, initial_epoch=start, epochs=max(int(epochs), start),
                                       steps_per_epoch=config.STEPS_PER_EPOCH, callbacks=callbacks,
                                       validation_data=val_data, validation_steps=config.VALIDATION_STEPS,
                                       shuffle=False, verbose=verbose)
        except _NonFiniteLoss as exc:
            raise _diverged_error(mrcnn, last_saved.last_saved, log_dir, exc) from None


def _claim_clean_log_dir(mrcnn):
    log_dir = claim_log_dir(mrcnn)
    checkpoints.remove_stale_temporaries(log_dir)
    return log_dir


def _precise_bn_callback(train_dataset, config, train_gen, augmentation, no_augmentation_sources):
    """`PreciseBatchNorm` over BN_STATS_BATCHES batches of IMAGES_PER_GPU training images.

    Batches of one replica's size: the statistics each replica normalizes with in training (also on
    one device, where BATCH_SIZE = IMAGES_PER_GPU), and the same batches on every worker, so all
    workers hold the same statistics without communicating.
    """
    from mrcnn_tf.data.pipeline import DataGenerator
    from mrcnn_tf.engine.precise_bn import PreciseBatchNorm

    bn_batches = DataGenerator(train_dataset, config, shuffle=True, augmentation=augmentation,
                               batch_size=config.IMAGES_PER_GPU, steps=config.BN_STATS_BATCHES,
                               seed=train_gen.seed + 2, random_rois=train_gen.random_rois,
                               no_augmentation_sources=no_augmentation_sources)
    # The same images at the same size as training's: share its cache rather than load and hold them twice.
    bn_batches.image_cache = train_gen.image_cache
    return PreciseBatchNorm(bn_batches, config.BN_STATS_BATCHES)


def _fit_inputs(strategy, config, train_gen, val_gen, start_epoch, workers):
    """What `fit` reads: the generators themselves on one device, else each replica's share of them."""
    if strategy is None:
        return train_gen, val_gen
    from mrcnn_tf.engine.distributed_input import distributed_batches

    return (distributed_batches(strategy, train_gen, config, config.STEPS_PER_EPOCH, start_epoch, workers),
            distributed_batches(strategy, val_gen, config, config.VALIDATION_STEPS, val_gen.epoch, workers))


def _diverged_error(mrcnn, last, log_dir, exc):
    """`TrainingDivergedError` for a non-finite loss; the model gets the last good weights back."""
    if last is None:
        earlier = checkpoints.list_checkpoints(log_dir)
        last = earlier[-1] if earlier else None
    if last is not None:
        # The in-memory weights are NaN now; put the last good ones back for notebook users.
        checkpoints.load_model_weights(mrcnn.keras_model, last)
        mrcnn.epoch = checkpoints.checkpoint_epoch(last) or mrcnn.epoch
    kept = (f"the model holds the last good checkpoint again: {last}" if last
            else "no checkpoint was written in this run")
    values = ", ".join(f"{k}={v}" for k, v in exc.logs.items())
    return TrainingDivergedError(
        f"training stopped: non-finite loss ({values}) at {exc.where}; {kept}; lower the learning "
        "rate (--set LEARNING_RATE=...), check the data, or set TRAIN_BN when starting from scratch")

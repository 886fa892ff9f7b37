"""Where and in which precision a model is built: tf.distribute strategy and Keras dtype policy.

Matterport replicated the graph per GPU with its own `ParallelModel`. Here `GPU_COUNT > 1` builds the
training model inside a `tf.distribute.MirroredStrategy` over that many devices; Keras 3 then splits
each global batch (``BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT`` images) into one slice per replica,
runs `train_step` on every replica and sums the (replica-scaled) gradients. A strategy the caller
opened already (``with MultiWorkerMirroredStrategy().scope(): MaskRCNN(...)``) is used as it is.

`MIXED_PRECISION` selects the Keras dtype policy while the layers are created. It is a global Keras
setting, so `precision_policy` restores the previous one afterwards: a later model (or test) is not
silently built in float16. Layers that need float32 (softmax/sigmoid outputs, box maths, losses) say
so themselves.

    with precision_policy(config), strategy_scope(config):
        model = keras.Model(...)
"""
import contextlib

import keras
import tensorflow as tf

from mrcnn_tf.errors import ConfigError

POLICIES = {False: "float32", True: "mixed_float16", "mixed_float16": "mixed_float16",
            "mixed_bfloat16": "mixed_bfloat16"}


def policy_name(config):
    """The Keras dtype policy name for `config.MIXED_PRECISION` ("float32", "mixed_float16", ...)."""
    value = getattr(config, "MIXED_PRECISION", False)
    # `True in POLICIES` would also match 1; only real bools and the two names are valid.
    if not isinstance(value, (bool, str)) or value not in POLICIES:
        raise ConfigError(f"Config.MIXED_PRECISION = {value!r} is invalid: use False, True (mixed_float16), "
                          "'mixed_float16' or 'mixed_bfloat16'")
    return POLICIES[value]


@contextlib.contextmanager
def precision_policy(config):
    """Context manager: the global Keras dtype policy of `config` inside, the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name(config))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def replica_devices(config):
    """Device names for `config.GPU_COUNT` replicas, or None for a single device.

    GPUs are used when enough are visible. Without any GPU, logical CPU devices stand in (tests
    configure them with ``tf.config.set_logical_device_configuration`` before TensorFlow starts).

    Raises:
        ConfigError: fewer devices than GPU_COUNT.
    """
    count = int(config.GPU_COUNT)
    if count == 1:
        return None
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= count:
        return [d.name for d in gpus[:count]]
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) >= count:
        return [d.name for d in cpus[:count]]
    raise ConfigError(f"Config.GPU_COUNT = {count} but this machine shows {len(gpus)} GPU(s): set GPU_COUNT to "
                      f"{max(len(gpus), 1)} (and raise IMAGES_PER_GPU to keep the batch), or use a machine with "
                      f"{count} GPUs")


def build_strategy(config):
    """The tf.distribute strategy the training model is built under.

    Returns:
        The strategy already in scope when there is one (its replica count must equal GPU_COUNT),
        a new `MirroredStrategy` over `replica_devices(config)` when GPU_COUNT > 1, else None.

    Raises:
        ConfigError: too few devices, or an outer strategy with another replica count.
    """
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync != int(config.GPU_COUNT):
            raise ConfigError(f"Config.GPU_COUNT = {config.GPU_COUNT} but the active {type(strategy).__name__} "
                              f"has {strategy.num_replicas_in_sync} replicas: set GPU_COUNT to "
                              f"{strategy.num_replicas_in_sync} (all workers' GPUs together)")
        return strategy
    devices = replica_devices(config)
    if devices is None:
        return None
    # On CPU devices NCCL does not exist; ReductionToOneDevice works everywhere.
    cross_device = None if devices[0].upper().find("GPU") >= 0 else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device)


@contextlib.contextmanager
def strategy_scope(config):
    """Context manager: inside `build_strategy(config)`'s scope (nothing for one device).

    Yields:
        The strategy, or None for a single device.
    """
    strategy = build_strategy(config)
    if strategy is None or tf.distribute.has_strategy():
        yield strategy
        return
    with strategy.scope():
        yield strategy

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

Several machines: when ``TF_CONFIG`` names a cluster of more than one worker, the training model is
built under `tf.distribute.MultiWorkerMirroredStrategy` (created once per process, see
`multi_worker_strategy`). `GPU_COUNT` stays the number of GPUs of one worker, so ``BATCH_SIZE`` is one
worker's batch and the global batch is ``BATCH_SIZE x workers`` (docs/multi_gpu.md).
"""
import contextlib
import json
import os

import keras
import tensorflow as tf

from mrcnn_tf.errors import ConfigError

# Seconds a collective (gradient all-reduce, loss reduction) may wait for the other workers before it
# fails with DeadlineExceededError; 0 waits forever. A killed worker is found sooner by TensorFlow's
# coordination-service heartbeats (about 10 s); this bounds the wait for a worker that hangs.
COLLECTIVE_TIMEOUT_ENV = "MRCNN_COLLECTIVE_TIMEOUT"
DEFAULT_COLLECTIVE_TIMEOUT = 1800.0
_TF_CONFIG_EXAMPLE = ('\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}\'')
_MULTI_WORKER = {}  # {"strategy": the process's one MultiWorkerMirroredStrategy}, once created

POLICIES = {False: "float32", True: "mixed_float16", "mixed_float16": "mixed_float16",
            "mixed_bfloat16": "mixed_bfloat16", "auto": None}
PRECISION_CHOICES = "False, True (mixed_float16), 'mixed_float16', 'mixed_bfloat16' or 'auto'"


def policy_name(config):
    """The Keras dtype policy name for `config.MIXED_PRECISION` ("float32", "mixed_float16", ...).

    "auto" resolves on the machine that builds the model: "mixed_bfloat16" on a CPU where oneDNN's bfloat16 kernels
    run faster than its float32 ones (`backend.runtime.cpu_bf16_faster`: AMX, AMD's AVX512-BF16), "float32"
    elsewhere; a GPU user names a policy.
    """
    value = getattr(config, "MIXED_PRECISION", False)
    # `True in POLICIES` would also match 1; only real bools and the names are valid.
    if not isinstance(value, (bool, str)) or value not in POLICIES:
        raise ConfigError(f"Config.MIXED_PRECISION = {value!r} is invalid: use {PRECISION_CHOICES}")
    return POLICIES[value] or auto_policy()


def auto_policy():
    """What MIXED_PRECISION "auto" means here: "mixed_bfloat16" on a CPU where bf16 is faster and oneDNN is on, else
    "float32"."""
    from mrcnn_tf.backend import runtime

    if tf.config.list_logical_devices("GPU") or not runtime.cpu_bf16_faster():
        return "float32"
    try:
        onednn = runtime.onednn_enabled()
    except ImportError:  # the private check moved (backend/compat.py): bf16 off Eigen is slow, so do not guess
        onednn = False
    return "mixed_bfloat16" if onednn else "float32"


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


# ---------------------------------------------------------------------- several workers (TF_CONFIG)
def cluster_tasks(environ=None):
    """The training tasks that ``TF_CONFIG`` names, in TensorFlow's worker order, and this task.

    TensorFlow numbers the tasks of a cluster chief first (the ``chief`` job, if any), then the
    ``worker`` job; task 0 in that order is the chief, which writes checkpoints and logs.

    Returns:
        ``(tasks, index)``: a list of ``(job, task_index, address)`` and this process's position in
        it, or None when TF_CONFIG is unset or names a single task.

    Raises:
        ConfigError: TF_CONFIG is not JSON, has no cluster, or its task is not one of the cluster's.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}): set it to "
                          f"{_TF_CONFIG_EXAMPLE} with this machine's index") from None
    cluster = values.get("cluster") if isinstance(values, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(cluster.get(j), list) for j in ("chief", "worker")):
        raise ConfigError(f"TF_CONFIG = {text!r} has no \"cluster\" with a \"worker\" list: set it to "
                          f"{_TF_CONFIG_EXAMPLE}")
    if cluster.get("ps"):
        raise ConfigError("TF_CONFIG names \"ps\" tasks (parameter servers): mrcnn_tf trains with "
                          "MultiWorkerMirroredStrategy; list every machine under \"worker\" instead")
    tasks = [(job, i, str(address)) for job in ("chief", "worker") for i, address in enumerate(cluster.get(job) or [])]
    if len(tasks) <= 1:
        return None
    task = values.get("task") if isinstance(values.get("task"), dict) else {}
    key = (task.get("type"), task.get("index"))
    index = next((n for n, (job, i, _) in enumerate(tasks) if (job, i) == key), None)
    if index is None:
        raise ConfigError(f"TF_CONFIG task {json.dumps(task)} is not in its cluster {json.dumps(cluster)}: give each "
                          "machine its own \"task\": {\"type\": \"worker\", \"index\": N} with N from 0 to "
                          f"{len(tasks) - 1}")
    return tasks, index


def collective_timeout(environ=None):
    """Seconds a collective may wait for the other workers (`COLLECTIVE_TIMEOUT_ENV`; 0: no limit)."""
    text = (os.environ if environ is None else environ).get(COLLECTIVE_TIMEOUT_ENV, "")
    try:
        value = float(text) if text.strip() else DEFAULT_COLLECTIVE_TIMEOUT
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{COLLECTIVE_TIMEOUT_ENV}={text!r} is invalid: give seconds (e.g. 1800), or 0 to wait "
                          "without limit")
    return value


def multi_worker_strategy():
    """This process's `MultiWorkerMirroredStrategy` from TF_CONFIG, created on the first call.

    TensorFlow allows one per process, created before anything else runs TensorFlow ops; call this
    at the top of a script when other TensorFlow work comes before the model. It blocks until
    every worker of the cluster has started. Collectives time out after `collective_timeout()` s.

    Raises:
        ConfigError: TF_CONFIG names no cluster, or TensorFlow started before this call.
    """
    if "strategy" in _MULTI_WORKER:
        return _MULTI_WORKER["strategy"]
    found = cluster_tasks()
    if found is None:
        raise ConfigError("multi-worker training needs TF_CONFIG with a cluster of 2 or more workers, e.g. "
                          f"TF_CONFIG={_TF_CONFIG_EXAMPLE}")
    timeout = collective_timeout()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout or None)
    tasks, index = found
    print(f"Worker {index} of {len(tasks)} ({tasks[index][2]}): waiting for the other workers to join", flush=True)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (RuntimeError, ValueError) as exc:
        if "program startup" not in str(exc) and "already configured" not in str(exc):
            raise
        raise ConfigError("TF_CONFIG asks for multi-worker training but TensorFlow was already running when the "
                          "strategy was created: call mrcnn_tf.engine.distribute.multi_worker_strategy() at the top of "
                          "the script, before other TensorFlow work") from None
    _MULTI_WORKER["strategy"] = strategy
    return strategy


def worker_count(strategy):
    """Number of workers (machines) `strategy` spans: 1 unless it is a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job) or []) for job in ("chief", "worker")))


def worker_index(strategy):
    """This worker's position in TensorFlow's order (chief job first); 0 is the chief."""
    if worker_count(strategy) <= 1:
        return 0
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief") or [])
    return int(resolver.task_id) + (chiefs if resolver.task_type == "worker" else 0)


def is_chief(strategy):
    """Whether this worker writes checkpoints and logs (always, for one worker)."""
    return strategy is None or worker_count(strategy) <= 1 or bool(strategy.extended.should_checkpoint)


def worker_addresses(strategy):
    """``["host:port", ...]`` of the workers, in `worker_index` order (empty for one worker)."""
    if worker_count(strategy) <= 1:
        return []
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return [str(a) for job in ("chief", "worker") for a in (spec.get(job) or [])]


def _check_replicas(strategy, config, where):
    workers = worker_count(strategy)
    local = strategy.num_replicas_in_sync // workers
    if local == int(config.GPU_COUNT):
        return strategy
    if workers > 1:
        raise ConfigError(f"Config.GPU_COUNT = {config.GPU_COUNT} but {where} trains on {local} device(s) per worker "
                          f"({workers} workers, {strategy.num_replicas_in_sync} replicas): set GPU_COUNT to {local} "
                          "(the GPUs of one worker; the global batch is BATCH_SIZE x workers), or limit the GPUs "
                          "with CUDA_VISIBLE_DEVICES")
    raise ConfigError(f"Config.GPU_COUNT = {config.GPU_COUNT} but {where} has {strategy.num_replicas_in_sync} "
                      f"replicas: set GPU_COUNT to {strategy.num_replicas_in_sync}")


def build_strategy(config):
    """The tf.distribute strategy the training model is built under.

    Returns:
        The strategy already in scope when there is one; this process's `multi_worker_strategy()`
        when TF_CONFIG names several workers; a new `MirroredStrategy` over
        `replica_devices(config)` when GPU_COUNT > 1; else None. Each worker's replica count must
        equal GPU_COUNT.

    Raises:
        ConfigError: too few devices, a replica count other than GPU_COUNT, or a bad TF_CONFIG.
    """
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        return _check_replicas(strategy, config, f"the active {type(strategy).__name__}")
    if cluster_tasks() is not None:
        return _check_replicas(multi_worker_strategy(), config, "MultiWorkerMirroredStrategy (from TF_CONFIG)")
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

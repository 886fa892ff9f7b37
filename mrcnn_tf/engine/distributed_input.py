"""Training input under tf.distribute: each replica loads only its own images of every global batch.

With N replicas in sync (GPU_COUNT per worker x workers) and I = IMAGES_PER_GPU, global step ``s`` of
an epoch trains on images ``[s*N*I, (s+1)*N*I)`` of the seeded `DataGenerator` stream (image order,
crops, augmentation and anchor samples are functions of seed, epoch and stream position alone).
Replica ``g`` (worker ``k``'s local replica ``r``, ``g = k*R + r``) reads images
``[s*N*I + g*I, s*N*I + (g+1)*I)``: every worker loads a distinct shard, and the global batch is the
one a single process with the same global batch would use, so losses agree (tests/test_multi_worker.py).

Keras is given a `tf.distribute` dataset built by `strategy.distribute_datasets_from_function`: no
auto-sharding (which for a Python generator makes every worker load the whole global batch and keep
its part) and no re-batching. The stream is endless and starts at the epoch training starts from, so
a resumed run reads the batches an uninterrupted one would have. (Keras' own PyDataset path under a
strategy also consumes one batch and advances the epoch once before training: not this one.)
"""
import copy

import numpy as np
import tensorflow as tf

from mrcnn_tf.engine.distribute import worker_count, worker_index

_ENDLESS = 2 ** 62


def replica_layout(strategy):
    """``(replicas, local_replicas, first_replica)`` of this worker under `strategy`."""
    replicas = int(strategy.num_replicas_in_sync)
    local = replicas // worker_count(strategy)
    return replicas, local, worker_index(strategy) * local


def stream_index(element, steps, local_replicas, first_replica, replicas):
    """``(epoch offset, batch index)`` of this worker's `element`-th per-replica batch.

    The per-replica generator has ``steps * replicas`` batches of IMAGES_PER_GPU images per epoch;
    local replica ``r`` of step ``s`` takes batch ``s * replicas + first_replica + r``.
    """
    epoch, within = divmod(int(element), steps * local_replicas)
    step, replica = divmod(within, local_replicas)
    return epoch, step * replicas + first_replica + replica


def replica_generator(generator, config, replicas):
    """A copy of `generator` yielding per-replica batches: IMAGES_PER_GPU images, ``steps x replicas`` a pass.

    Its batch ``s * replicas + g`` holds the images of replica ``g`` in global batch ``s`` of `generator`.
    """
    shard = copy.copy(generator)
    shard.batch_size = int(config.IMAGES_PER_GPU)
    shard.steps = int(generator.steps) * int(replicas)
    return shard


def distributed_batches(strategy, generator, config, steps, first_epoch, parallel=1):
    """This worker's share of `generator`'s global batches as a `tf.distribute` dataset for `fit`.

    Args:
        strategy: the model's strategy (MirroredStrategy or MultiWorkerMirroredStrategy).
        generator: a `DataGenerator` yielding global batches (its seed, shuffling and augmentation).
        config: the training `Config` (IMAGES_PER_GPU).
        steps: global batches per epoch (STEPS_PER_EPOCH or VALIDATION_STEPS).
        first_epoch: epoch of the first batch (``mrcnn.epoch`` when training resumes).
        parallel: batches loaded at once (the `workers` of `train`); the order never changes.

    Returns:
        `DistributedDatasetsFromFunction` of ``(inputs,)`` elements, endless.
    """
    replicas, local, first = replica_layout(strategy)
    shard = replica_generator(generator, config, replicas)
    probe = shard[0][0]
    dtypes = [tf.as_dtype(a.dtype) for a in probe]
    shapes = [(None,) + tuple(a.shape[1:]) for a in probe]

    def load(element):
        epoch, index = stream_index(element, steps, local, first, replicas)
        batch = copy.copy(shard)  # one per call: parallel loads never share an epoch counter
        batch.set_epoch(first_epoch + epoch)
        return tuple(np.asarray(a) for a in batch[index][0])

    def load_tensors(element):
        arrays = tf.numpy_function(load, [element], dtypes, stateful=False)
        return (tuple(tf.ensure_shape(a, s) for a, s in zip(arrays, shapes)),)

    def dataset_fn(input_context):
        del input_context  # one input pipeline per worker; the shard comes from the worker index
        dataset = tf.data.Dataset.range(_ENDLESS).map(load_tensors, num_parallel_calls=max(1, int(parallel)),
                                                      deterministic=True)
        return dataset.prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)

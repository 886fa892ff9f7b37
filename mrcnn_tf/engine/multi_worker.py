"""Several workers training one model: who writes what, a common start, and a lost worker.

- Only the chief (worker 0 in TensorFlow's order) writes into the run folder: checkpoints, the CSV log
  and TensorBoard. The other workers run the same callbacks into a scratch folder that they delete at
  the end, as TensorFlow's multi-worker guide recommends: every worker must take part in a save, since
  reading distributed variables may need the others.
- `check_same_start` refuses a run whose workers would start from different epochs or weights (a
  ``--logs`` folder that only one machine sees makes ``--weights last`` find different checkpoints).
- `lost_worker_errors` turns TensorFlow's errors for a worker that died (the coordination service
  stops receiving its heartbeats after ~10 s) or hangs (a collective outlives `collective_timeout`)
  into one `WorkerLostError` line that names the worker and says how to resume.
"""
import contextlib
import pathlib
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from mrcnn_tf.engine.distribute import COLLECTIVE_TIMEOUT_ENV, collective_timeout, is_chief, worker_addresses, \
    worker_count, worker_index
from mrcnn_tf.errors import ConfigError, MrcnnError

_TASK_RE = re.compile(r"/job:(chief|worker)/replica:\d+/task:(\d+)")
_LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError)
RESUME_HINT = ("restart every worker with the same command and --weights last (Python: "
               "model.load_weights(model.find_last())) to resume")


class WorkerLostError(MrcnnError):
    """A worker of a multi-worker run died or stopped answering; the message names it."""


@contextlib.contextmanager
def writable_log_dir(strategy, claim):
    """The folder this worker's callbacks write into: ``claim()`` on the chief, else a scratch folder.

    The scratch folder (``mrcnn_worker<N>_*`` in the system temporary folder) is deleted on exit.
    """
    if is_chief(strategy):
        yield claim()
        return
    scratch = tempfile.mkdtemp(prefix=f"mrcnn_worker{worker_index(strategy)}_")
    try:
        yield pathlib.Path(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _from_every_worker(strategy, values):
    """Rows of float32 `values`, one per worker in `worker_index` order (one collective)."""
    mine = np.asarray(values, np.float32)
    rows = strategy.gather(strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(mine[None])), axis=0).numpy()
    return rows[::strategy.num_replicas_in_sync // worker_count(strategy)]


def agreed_seed(strategy, seed):
    """`seed`, or without one the chief's random seed on every worker (their data shards must mesh)."""
    if seed is not None or worker_count(strategy) <= 1:
        return seed
    # Below 2**24 a seed travels through float32 exactly.
    drawn = int(np.random.SeedSequence().entropy % (2 ** 24))
    return int(_from_every_worker(strategy, [drawn])[0][0])


def weights_fingerprint(keras_model):
    """``(sum, sum of |w|)`` over all weights: equal on workers that loaded the same weights."""
    arrays = [np.asarray(w, np.float64) for w in keras_model.get_weights()]
    return float(sum(a.sum() for a in arrays)), float(sum(np.abs(a).sum() for a in arrays))


def check_same_start(strategy, epoch, seed, keras_model):
    """Raise ConfigError unless every worker starts at `epoch` with the same seed and weights.

    Variables are broadcast from the chief when they are created, but weights loaded afterwards
    (``--weights last``, a checkpoint path) are each worker's own reading of its own files.
    """
    if worker_count(strategy) <= 1:
        return
    mine = np.array([epoch, int(seed) % (2 ** 24), *weights_fingerprint(keras_model)], np.float32)
    rows = _from_every_worker(strategy, mine)
    if np.all(rows == mine):
        return
    addresses = worker_addresses(strategy)
    starts = ", ".join(f"worker {i} ({addresses[i]}) at epoch {int(r[0])}, seed {int(r[1])}, weights sum {r[2]:.6g}"
                       for i, r in enumerate(rows))
    raise ConfigError(f"the workers do not start alike ({starts}): give every worker the same --weights and --seed "
                      "and a --logs folder that all of them read (e.g. a shared disk), so that --weights last finds "
                      "the same checkpoint everywhere")


def lost_workers(text, strategy):
    """Indexes of the other workers that a TensorFlow error message names (its ``/job:.../task:N``)."""
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief") or [])
    found = []
    for job, task in _TASK_RE.findall(text):
        index = int(task) + (chiefs if job == "worker" else 0)
        if index != worker_index(strategy) and index not in found:
            found.append(index)
    return found


def lost_worker_message(error, strategy, epoch, last_checkpoint=None):
    """One line: which worker is gone, why TensorFlow thinks so, what is on disk, how to resume.

    Args:
        error: the TensorFlow error raised by `fit`.
        strategy: the multi-worker strategy.
        epoch: epochs completed (and checkpointed by the chief) before the error.
        last_checkpoint: the chief's newest checkpoint path, or None.
    """
    text = " ".join(str(getattr(error, "message", error)).split())
    addresses = worker_addresses(strategy)
    lost = lost_workers(text, strategy)
    if isinstance(error, tf.errors.DeadlineExceededError):
        why = f"a collective waited more than {collective_timeout():g} s ({COLLECTIVE_TIMEOUT_ENV}) for the others"
    elif "heartbeat" in text:
        why = "it stopped sending heartbeats"
    elif re.search(r"[Cc]onnection (reset|refused|closed)|[Ss]ocket closed", text):
        why = "its connection was lost"
    else:
        why = f"{type(error).__name__}: {text[:160]}"
    others = lost or [i for i in range(len(addresses)) if i != worker_index(strategy)]
    who = " or ".join(f"worker {i} ({addresses[i]})" for i in others)
    where = f"the last checkpoint is intact: {last_checkpoint}" if last_checkpoint else (
        f"the chief (worker 0) keeps its checkpoints up to epoch {epoch}" if epoch else "no checkpoint was written")
    state = "is gone" if lost else "is stuck or gone"
    return (f"multi-worker training stopped in epoch {epoch + 1}: {who} {state} ({why}); {where}; "
            f"{RESUME_HINT} after epoch {epoch}")


@contextlib.contextmanager
def lost_worker_errors(strategy, mrcnn, last_checkpoint):
    """Re-raise a lost worker's TensorFlow error as `WorkerLostError` (several workers only).

    Args:
        last_checkpoint: callable returning the newest checkpoint written by this worker, or None.
    """
    try:
        yield
    except _LOST_ERRORS as exc:
        if worker_count(strategy) <= 1:
            raise
        path = last_checkpoint() if is_chief(strategy) else None
        raise WorkerLostError(lost_worker_message(exc, strategy, mrcnn.epoch, path)) from None

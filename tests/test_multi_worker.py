"""Multi-worker training: TF_CONFIG -> MultiWorkerMirroredStrategy, sharded input, chief-only files, lost workers.

The slow test starts two `mrcnn-tf train` worker processes on 127.0.0.1 (CPU, one thread each) beside a
one-process reference with the same global batch (two logical CPU devices, GPU_COUNT=2), kills one
worker with SIGKILL after the chief's second checkpoint and resumes both with --weights last.
"""
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.engine import distribute, multi_worker
from mrcnn_tf.engine.distributed_input import replica_generator, stream_index
from mrcnn_tf.errors import ConfigError
from test_training import boxes_dataset


# ------------------------------------------------------------------------------------------ TF_CONFIG
def tf_config(workers, index, job="worker", chief=None):
    cluster = {"worker": workers}
    if chief:
        cluster["chief"] = chief
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})}


def test_cluster_tasks_orders_chief_first_and_finds_this_task():
    assert distribute.cluster_tasks({}) is None
    assert distribute.cluster_tasks(tf_config(["a:1"], 0)) is None  # one worker: no multi-worker strategy
    tasks, index = distribute.cluster_tasks(tf_config(["a:1", "b:2"], 1))
    assert tasks == [("worker", 0, "a:1"), ("worker", 1, "b:2")] and index == 1
    tasks, index = distribute.cluster_tasks(tf_config(["b:2"], 0, chief=["a:1"]))
    assert [t[2] for t in tasks] == ["a:1", "b:2"] and index == 1
    _, index = distribute.cluster_tasks(tf_config(["b:2"], 0, job="chief", chief=["a:1"]))
    assert index == 0


@pytest.mark.parametrize("environ, fragment", [
    ({"TF_CONFIG": "{'cluster': 1}"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": '{"task": {"type": "worker", "index": 0}}'}, 'has no "cluster" with a "worker" list'),
    (tf_config(["a:1", "b:2"], 2), "is not in its cluster"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {}})}, "parameter servers"),
])
def test_bad_tf_config_is_one_line_config_error(environ, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        distribute.cluster_tasks(environ)
    assert "\n" not in str(info.value)


def test_collective_timeout_from_the_environment():
    assert distribute.collective_timeout({}) == distribute.DEFAULT_COLLECTIVE_TIMEOUT
    assert distribute.collective_timeout({distribute.COLLECTIVE_TIMEOUT_ENV: "90"}) == 90.0
    assert distribute.collective_timeout({distribute.COLLECTIVE_TIMEOUT_ENV: "0"}) == 0.0
    for bad in ("soon", "-5", "nan"):
        with pytest.raises(ConfigError, match=f"{distribute.COLLECTIVE_TIMEOUT_ENV}='{bad}' is invalid"):
            distribute.collective_timeout({distribute.COLLECTIVE_TIMEOUT_ENV: bad})


def test_strategy_after_tensorflow_started_is_a_config_error(monkeypatch):
    """TensorFlow refuses collectives once it runs; the message says to create the strategy first."""
    tf.constant(1.0)  # TensorFlow is running in this process (the refusal comes before any network use)
    monkeypatch.setenv("TF_CONFIG", tf_config(["127.0.0.1:1", "127.0.0.1:2"], 0)["TF_CONFIG"])
    monkeypatch.setattr(distribute, "_MULTI_WORKER", {})
    with pytest.raises(ConfigError, match=r"TensorFlow was already running .*call "
                                          r"mrcnn_tf\.engine\.distribute\.multi_worker_strategy\(\) at the top"):
        distribute.multi_worker_strategy()


# ------------------------------------------------------------------------------------------ sharded input
@pytest.mark.parametrize("workers, local", [(2, 1), (2, 2), (1, 3)])
def test_replica_shards_make_up_the_global_batches_of_one_process(workers, local):
    """Concatenated over workers and local replicas, the per-replica batches are the one-process batches."""
    from helpers_model import tiny_config
    from mrcnn_tf.data.pipeline import DataGenerator

    replicas, steps, images = workers * local, 2, 1
    config = tiny_config(IMAGES_PER_GPU=images, GPU_COUNT=1)
    whole = DataGenerator(boxes_dataset(5), config, shuffle=True, batch_size=images * replicas, steps=steps, seed=7)
    shard = replica_generator(whole, config, replicas)
    for epoch in (0, 3):
        whole.set_epoch(epoch)
        shard.set_epoch(epoch)
        for step in range(steps):
            parts = []
            for worker in range(workers):
                for element in range(step * local, (step + 1) * local):
                    offset, index = stream_index(element, steps, local, worker * local, replicas)
                    assert offset == 0
                    parts.append(shard[index][0])
            for name, got, want in zip(range(7), zip(*parts), whole[step][0]):
                np.testing.assert_array_equal(np.concatenate(got), want, err_msg=f"input {name}")
    # Each worker's images are its own: no image position is read by two workers.
    seen = [{stream_index(e, steps, local, w * local, replicas)[1] for e in range(steps * local)} for w in range(workers)]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
    assert stream_index(steps * local, steps, local, 0, replicas) == (1, 0)  # the stream runs on into the next epoch


# ------------------------------------------------------------------------------------------ lost worker
class FakeResolver:
    task_type, task_id = "worker", 0

    def cluster_spec(self):
        return tf.train.ClusterSpec({"worker": ["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"]})


class FakeStrategy:
    cluster_resolver = FakeResolver()
    num_replicas_in_sync = 3

    class extended:
        should_checkpoint = True


HEARTBEAT = ("Graph execution error: Detected at node CollectiveReduceV2 ... Collective ops is aborted by: Error "
             "reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
             "/job:worker/replica:0/task:1\nThe tasks have crashed.")


@pytest.mark.parametrize("error, who, why", [
    (tf.errors.UnavailableError(None, None, HEARTBEAT), "worker 1 (127.0.0.1:5001) is gone",
     "it stopped sending heartbeats"),
    (tf.errors.UnavailableError(None, None, "recvmsg:Connection reset by peer from remote target "
                                "/job:worker/replica:0/task:2 while calling CompleteInstance"),
     "worker 2 (127.0.0.1:5002) is gone", "its connection was lost"),
    (tf.errors.DeadlineExceededError(None, None, "Collective has timed out waiting for other workers"),
     "worker 1 (127.0.0.1:5001) or worker 2 (127.0.0.1:5002) is stuck or gone", "a collective waited more than"),
])
def test_lost_worker_message_names_the_worker_and_how_to_resume(error, who, why):
    text = multi_worker.lost_worker_message(error, FakeStrategy(), 2, "/logs/run/mask_rcnn_x_0002.weights.h5")
    assert text.startswith(f"multi-worker training stopped in epoch 3: {who} ({why}")
    assert "the last checkpoint is intact: /logs/run/mask_rcnn_x_0002.weights.h5" in text
    assert text.endswith("--weights last (Python: model.load_weights(model.find_last())) to resume after epoch 2")
    assert "\n" not in text


class GatheringStrategy(FakeStrategy):
    """Three one-replica workers whose `gather` returns the rows given (worker 0's from the caller)."""

    def __init__(self, others):
        self.others = others

    def experimental_distribute_values_from_function(self, function):
        return function(None)

    def gather(self, value, axis):
        return tf.concat([value] + [tf.constant([row], tf.float32) for row in self.others], axis=axis)


def test_workers_must_start_at_one_epoch_with_one_seed_and_the_same_weights():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    mine = [2.0, 1.0, *multi_worker.weights_fingerprint(model)]
    multi_worker.check_same_start(GatheringStrategy([mine, mine]), 2, 1, model)  # alike: no error
    with pytest.raises(ConfigError) as info:
        multi_worker.check_same_start(GatheringStrategy([mine, [0.0, 1.0, -35.07, 40.0]]), 2, 1, model)
    text = str(info.value)
    assert text.startswith("the workers do not start alike (worker 0 (127.0.0.1:5000) at epoch 2, seed 1, weights sum")
    assert "worker 2 (127.0.0.1:5002) at epoch 0, seed 1, weights sum -35.07)" in text
    assert text.endswith("so that --weights last finds the same checkpoint everywhere")
    # Without --seed every worker takes the chief's random seed (here worker 0 is the caller itself).
    assert multi_worker.agreed_seed(GatheringStrategy([[5.0], [6.0]]), None) < 2 ** 24
    assert multi_worker.agreed_seed(GatheringStrategy([[5.0], [6.0]]), 3) == 3


def test_one_worker_needs_no_agreement_and_keeps_its_errors():
    multi_worker.check_same_start(None, 3, 0, None)  # no strategy: nothing to compare, no collective
    assert multi_worker.agreed_seed(None, None) is None and multi_worker.agreed_seed(None, 5) == 5
    with pytest.raises(tf.errors.UnavailableError):
        with multi_worker.lost_worker_errors(None, None, lambda: None):
            raise tf.errors.UnavailableError(None, None, "one process: not a lost worker")


# ------------------------------------------------------------------------------------------ two processes
WORKER_SET = ["BACKBONE=resnet18", "IMAGE_MIN_DIM=64", "IMAGE_MAX_DIM=64", "RPN_ANCHOR_SCALES=[8,16,32,64,128]",
              "RPN_TRAIN_ANCHORS_PER_IMAGE=32", "PRE_NMS_LIMIT=300", "TRAIN_ROIS_PER_IMAGE=12",
              # The heads train on 40 random ROIs around the cells (the generator's, seeded by image position):
              # unlike a random RPN's proposals, some of them are positives from the first step on.
              "USE_RPN_ROIS=false", "POST_NMS_ROIS_TRAINING=40", "MAX_GT_INSTANCES=4", "MINI_MASK_SHAPE=[28,28]",
              "FPN_CLASSIF_FC_LAYERS_SIZE=64", "TOP_DOWN_PYRAMID_SIZE=64", "STEPS_PER_EPOCH=1", "VALIDATION_STEPS=1",
              "IMAGES_PER_GPU=1", "BN_STATS_BATCHES=1"]
# Both kinds of process run the real command (`mrcnn_tf.cli.main`). DetectionTargetLayer samples ROIs with
# tf.random.shuffle, whose op seed TensorFlow derives from the position of the op in the traced graph: a
# graph with two replicas and one with one replica would then draw differently. A fixed op seed makes
# replica g draw the same numbers in one process and in two, so the losses can be compared exactly.
PRELUDE = textwrap.dedent("""
    import sys
    import tensorflow as tf
    if sys.argv[1] == "reference":
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mrcnn_tf.layers import detection_target
    layer_init = detection_target.DetectionTargetLayer.__init__
    def seeded_init(self, *args, **kwargs):
        kwargs["seed"] = 7
        layer_init(self, *args, **kwargs)
    detection_target.DetectionTargetLayer.__init__ = seeded_init
    from mrcnn_tf.cli import main
    main(sys.argv[2:])
""")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_args(dataset, logs, weights, gpus):
    args = ["train", "--dataset", str(dataset), "--weights", weights, "--logs", str(logs), "--seed", "0",
            "--no-augment", "--schedule", "all:3"] + (["--config", "lisc"] if weights == "none" else [])
    for pair in WORKER_SET + [f"GPU_COUNT={gpus}"]:
        args += ["--set", pair]
    return args


STARTED = []  # every process the fixture starts, killed at its end if still running


def start(args, log, env, tf_config_value=None):
    env = dict(env, TF_CONFIG=tf_config_value) if tf_config_value else dict(env)
    kind = "worker" if tf_config_value else "reference"
    process = subprocess.Popen([sys.executable, "-c", PRELUDE, kind] + args, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    STARTED.append(process)
    return process


def csv_losses(run_dir):
    with open(run_dir / "training_log.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def checkpoint_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays


def wait_all(processes, timeout):
    deadline = time.time() + timeout
    for p in processes:
        try:
            p.wait(max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            pytest.fail(f"a process did not end within {timeout} s: {p.args[-12:]}")
    return [p.returncode for p in processes]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    try:
        yield run_two_workers(tmp_path_factory.mktemp("multi_worker"))
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_two_workers(root):
    from mrcnn_tf.wbc.synth import write_lisc

    dataset = root / "lisc"
    write_lisc(dataset, per_class=2, seed=3)
    scratch = root / "tmp"
    scratch.mkdir()
    # One thread per process: other jobs share this machine's cores.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               OMP_NUM_THREADS="1", TMPDIR=str(scratch), **{distribute.COLLECTIVE_TIMEOUT_ENV: "300"})
    env.pop("TF_CONFIG", None)
    logs, reference_logs = root / "logs", root / "reference_logs"
    out = {"logs": logs, "scratch": scratch}

    def cluster(ports, index):
        return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                           "task": {"type": "worker", "index": index}})

    # Run 1: the reference (one process, two replicas, three epochs) beside two workers; worker 1 is
    # killed once the chief has written its epoch-2 checkpoint, i.e. during epoch 3.
    began = time.time()
    ports = out["ports"] = free_ports(2)
    reference = start(train_args(dataset, reference_logs, "none", 2), root / "reference.log", env)
    chief = start(train_args(dataset, logs, "none", 1), root / "chief.log", env, cluster(ports, 0))
    other = start(train_args(dataset, logs, "none", 1), root / "worker1.log", env, cluster(ports, 1))
    while not list(logs.glob("*/mask_rcnn_*_0002.weights.h5")):
        assert chief.poll() is None and other.poll() is None, (root / "chief.log").read_text()[-3000:]
        assert time.time() - began < 500, "no epoch-2 checkpoint after 500 s"
        time.sleep(0.2)
    other.send_signal(signal.SIGKILL)
    killed = time.time()
    out["until_kill_s"] = killed - began
    out["killed_rc"] = wait_all([other], 30)[0]
    out["chief_rc"] = wait_all([chief], 200)[0]
    out["chief_exit_s"] = time.time() - killed
    out["chief_log"] = (root / "chief.log").read_text()
    out["run_dirs"] = sorted(p for p in logs.iterdir() if p.is_dir())
    run_dir = out["run_dirs"][0]
    out["after_kill"] = sorted(p.name for p in run_dir.iterdir())
    out["rows_after_kill"] = csv_losses(run_dir)
    out["chief_epoch2"] = checkpoint_arrays(run_dir / "mask_rcnn_lisc_0002.weights.h5")
    # Run 2: both workers resume from the newest checkpoint (the chief's, in the shared --logs).
    for leftover in scratch.glob("mrcnn_worker*"):  # the killed worker's scratch folder
        shutil.rmtree(leftover)
    ports = free_ports(2)
    resumed = time.time()
    chief = start(train_args(dataset, logs, "last", 1), root / "chief2.log", env, cluster(ports, 0))
    other = start(train_args(dataset, logs, "last", 1), root / "worker2.log", env, cluster(ports, 1))
    out["resume_rc"] = wait_all([chief, other], 500)
    out["resume_s"] = time.time() - resumed
    out["resume_rc"] += wait_all([reference], 100)
    out["resume_logs"] = [(root / n).read_text() for n in ("chief2.log", "worker2.log", "reference.log")]
    reference_run = next(p for p in reference_logs.iterdir() if p.is_dir())
    out["reference_rows"] = csv_losses(reference_run)
    out["reference_epoch2"] = checkpoint_arrays(reference_run / "mask_rcnn_lisc_0002.weights.h5")
    out["seconds"] = time.time() - began
    return out


@pytest.mark.slow
def test_killed_worker_ends_the_run_with_one_line_and_intact_checkpoints(two_workers):
    out = two_workers
    assert out["killed_rc"] == -signal.SIGKILL
    # The chief does not hang: TensorFlow's heartbeats find the lost worker, and the command says so.
    assert out["chief_rc"] == 2 and out["chief_exit_s"] < 120, out["chief_log"][-3000:]
    errors = [line for line in out["chief_log"].splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in out["chief_log"], out["chief_log"][-3000:]
    assert errors[0].startswith(f"Error: multi-worker training stopped in epoch 3: worker 1 "
                                f"(127.0.0.1:{out['ports'][1]}) is gone"), errors[0]
    assert "_0002.weights.h5" in errors[0] and "--weights last" in errors[0]
    # Only the chief wrote into --logs: one run folder, checkpoints of the two finished epochs, no temporaries.
    assert len(out["run_dirs"]) == 1
    names = out["after_kill"]
    assert [n for n in names if n.endswith(".weights.h5")] == ["mask_rcnn_lisc_0001.weights.h5",
                                                               "mask_rcnn_lisc_0002.weights.h5"], names
    assert "train_command.json" in names and not [n for n in names if n.startswith(".")], names
    assert [int(r["epoch"]) for r in out["rows_after_kill"]] == [0, 1]


@pytest.mark.slow
def test_two_workers_train_like_one_process_with_the_same_global_batch(two_workers):
    """Two workers x one replica against one process x two replicas on the same global batches.

    Gradients are summed in another order (ring all-reduce between processes, one device in the
    reference): the losses and weights agree to float32 rounding, below 1e-3 relative here.
    """
    out = two_workers
    assert out["resume_rc"][2] == 0, out["resume_logs"][2][-3000:]
    rows, reference = out["rows_after_kill"], out["reference_rows"]
    for got, want in zip(rows, reference[:2]):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-5, err_msg=f"{name} {got['epoch']}")
    assert all(reference[0][f"mrcnn_{n}_loss"] > 0 for n in ("class", "bbox", "mask"))  # the heads had positives
    # The checkpoints hold the same weights, BatchNorm statistics recomputed by PreciseBN included.
    chief, one = out["chief_epoch2"], out["reference_epoch2"]
    assert sorted(chief) == sorted(one)
    # Keras stores a BatchNormalization's gamma, beta, moving mean and moving variance as vars/0..3.
    moving = [name for name in one if re.search(r"batch_norm(_\d+)?/vars/[23]$", name)]
    assert len(moving) > 20 and all(np.ptp(one[n]) > 0 for n in moving)  # recomputed, not the initial 0 / 1
    for name in one:
        np.testing.assert_allclose(chief[name], one[name], rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_resumed_workers_continue_at_the_next_epoch(two_workers):
    out = two_workers
    assert out["resume_rc"][:2] == [0, 0], [log[-3000:] for log in out["resume_logs"][:2]]
    run_dir = out["run_dirs"][0]
    assert sorted(p.name for p in out["logs"].iterdir()) == [run_dir.name]  # the resumed run kept its folder
    assert "(starting after epoch 2)" in out["resume_logs"][0]
    assert (run_dir / "mask_rcnn_lisc_0003.weights.h5").is_file()
    assert not list(out["scratch"].glob("mrcnn_worker*"))  # worker 1 deleted its scratch folder
    rows, reference = csv_losses(run_dir), out["reference_rows"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] == [int(r["epoch"]) for r in reference]
    # The resumed step reads the epoch-3 batches with the epoch-2 weights: its RPN losses are the
    # uninterrupted reference's (the heads' ROI sampling restarts with the new processes).
    for name in ("rpn_class_loss", "rpn_bbox_loss"):
        np.testing.assert_allclose(rows[2][name], reference[2][name], rtol=1e-3, atol=1e-5, err_msg=name)
    print(f"two-worker test: {out['seconds']:.0f} s (kill after {out['until_kill_s']:.0f} s, chief ended "
          f"{out['chief_exit_s']:.0f} s later, resumed run {out['resume_s']:.0f} s)")

"""`mrcnn-tf train` killed (SIGTERM, then kill -9) keeps every checkpoint intact; `--weights last` resumes.

Runs the real command in subprocesses on a tiny synthetic LISC set (64 px images, 1 step per epoch).
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import pytest

from mrcnn_tf.engine.checkpoints import checkpoint_epoch, config_path_for

TINY = {"BACKBONE": "resnet18", "IMAGE_MIN_DIM": 64, "IMAGE_MAX_DIM": 64, "RPN_ANCHOR_SCALES": "[8,16,32,64,128]",
        "RPN_TRAIN_ANCHORS_PER_IMAGE": 32, "PRE_NMS_LIMIT": 300, "POST_NMS_ROIS_TRAINING": 40,
        "TRAIN_ROIS_PER_IMAGE": 12, "MAX_GT_INSTANCES": 4, "MINI_MASK_SHAPE": "[28,28]",
        "FPN_CLASSIF_FC_LAYERS_SIZE": 32, "TOP_DOWN_PYRAMID_SIZE": 32, "STEPS_PER_EPOCH": 1,
        "VALIDATION_STEPS": 1, "IMAGES_PER_GPU": 1}
EPOCHS = 6
TIMEOUT = 400  # seconds for one run; TensorFlow start-up and tracing dominate


def cli(*args):
    return [sys.executable, "-m", "mrcnn_tf", *args]


def train_command(data, logs, weights):
    command = cli("train", "--dataset", str(data), "--weights", weights, "--logs", str(logs),
                  "--seed", "0", "--no-augment")
    if weights == "none":  # LiscConfig shrunk by TINY, not the data's own plan: this test is about interruptions
        command += ["--schedule", f"all:{EPOCHS}", "--config", "lisc"]
    for key, value in TINY.items():
        command += ["--set", f"{key}={value}"]
    return command


def start(command, log_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env)


def checkpoints_in(logs):
    return sorted(pathlib.Path(logs).glob("*/mask_rcnn_*.weights.h5"), key=checkpoint_epoch)


def wait_for_epoch(process, logs, epoch, log_path):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = checkpoints_in(logs)
        if found and checkpoint_epoch(found[-1]) >= epoch:
            return
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before epoch {epoch}:\n"
                        + pathlib.Path(log_path).read_text()[-3000:])
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no checkpoint for epoch {epoch} within {TIMEOUT} s")


def assert_intact(logs):
    """Every checkpoint under a real name opens, has its config, and epochs run 1..n without gaps."""
    found = checkpoints_in(logs)
    assert [checkpoint_epoch(p) for p in found] == list(range(1, len(found) + 1))
    assert len({p.parent for p in found}) == 1  # one run folder: resumed runs continue in it
    for path in found:
        with h5py.File(path, "r") as f:
            assert "layers" in f
        assert config_path_for(path).is_file()
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("lisc")
    subprocess.run(cli("synth", str(out), "--per-class", "2", "--seed", "3"), check=True, capture_output=True)
    return out


def test_last_without_checkpoint_is_a_one_line_error(data, tmp_path):
    result = subprocess.run(train_command(data, tmp_path / "empty", "last"), capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=TIMEOUT)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "No checkpoint" in lines[0] and "Traceback" not in result.stderr


def test_killed_training_resumes_at_the_right_epoch(data, tmp_path):
    logs = tmp_path / "logs"
    # Run 1: from scratch, stopped with SIGTERM once epoch 1 is on disk.
    run1 = start(train_command(data, logs, "none"), tmp_path / "run1.log")
    wait_for_epoch(run1, logs, 1, tmp_path / "run1.log")
    run1.send_signal(signal.SIGTERM)
    assert run1.wait(TIMEOUT) == 130, (tmp_path / "run1.log").read_text()[-2000:]
    assert (tmp_path / "run1.log").read_text().rstrip().endswith(("Aborted.", "Interrupted."))  # one line
    done = len(assert_intact(logs))
    assert 1 <= done < EPOCHS

    # Run 2: resumes after the last checkpoint; killed with SIGKILL (no clean-up at all).
    run2 = start(train_command(data, logs, "last"), tmp_path / "run2.log")
    wait_for_epoch(run2, logs, done + 1, tmp_path / "run2.log")
    run2.send_signal(signal.SIGKILL)
    run2.wait(TIMEOUT)
    text = (tmp_path / "run2.log").read_text()
    assert f"starting after epoch {done}" in text and f"all:{EPOCHS}" in text
    done = len(assert_intact(logs))

    # Run 3: resumes again and finishes the schedule the first run set (all:EPOCHS).
    run3 = start(train_command(data, logs, "last"), tmp_path / "run3.log")
    assert run3.wait(TIMEOUT) == 0, (tmp_path / "run3.log").read_text()[-3000:]
    assert f"starting after epoch {done}" in (tmp_path / "run3.log").read_text()
    found = assert_intact(logs)
    assert checkpoint_epoch(found[-1]) == EPOCHS
    assert not [p for p in found[0].parent.iterdir() if ".tmp" in p.name]  # stale temporaries removed

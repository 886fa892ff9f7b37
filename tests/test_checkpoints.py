"""Checkpoint naming, find_last, --weights resolution and crash-safe writes."""
import datetime
import json
import os

import h5py
import keras
import numpy as np
import pytest

from mrcnn_tf.engine import checkpoints as C
from mrcnn_tf.config import Config
from mrcnn_tf.errors import MrcnnError, WeightsError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_names_epochs_and_config_path(tmp_path):
    name = C.checkpoint_name("LISC", 7)
    assert name == "mask_rcnn_lisc_0007.weights.h5"
    assert C.checkpoint_epoch(tmp_path / name) == 7
    assert C.checkpoint_epoch("mask_rcnn_my_cells_0123.weights.h5") == 123
    assert C.checkpoint_epoch("mask_rcnn_coco_0160.h5") == 160  # Matterport's own checkpoints
    assert C.checkpoint_epoch("mask_rcnn_coco.h5") is None
    assert C.checkpoint_epoch(".mask_rcnn_lisc_0001.weights.h5.12.tmp.weights.h5") is None
    assert C.config_path_for(tmp_path / name) == tmp_path / "mask_rcnn_lisc_0007.config.json"
    assert C.config_path_for("a/mask_rcnn_coco_0160.h5").name == "mask_rcnn_coco_0160.config.json"


def test_find_last_newest_run_and_epoch(tmp_path):
    touch(tmp_path / "lisc20240101T0900" / C.checkpoint_name("lisc", 30))
    touch(tmp_path / "lisc20240102T0900" / C.checkpoint_name("lisc", 2))
    touch(tmp_path / "lisc20240102T0900" / C.checkpoint_name("lisc", 10))  # 10 after 2, not by text
    touch(tmp_path / "lisc20240102T0900" / ".mask_rcnn_lisc_0011.weights.h5.1.tmp.weights.h5")
    touch(tmp_path / "lisc20240102T0900" / "events.out.tfevents")
    touch(tmp_path / "other20250101T0000" / C.checkpoint_name("other", 1))
    assert C.find_last(tmp_path, "LISC") == tmp_path / "lisc20240102T0900" / "mask_rcnn_lisc_0010.weights.h5"
    assert C.find_last(tmp_path).parent.name == "other20250101T0000"


def test_find_last_orders_collision_suffixes_and_skips_empty_runs(tmp_path):
    touch(tmp_path / "lisc20240101T0900_2" / C.checkpoint_name("lisc", 1))
    touch(tmp_path / "lisc20240101T0900_10" / C.checkpoint_name("lisc", 1))
    touch(tmp_path / "lisc20240101T0900" / C.checkpoint_name("lisc", 5))
    assert C.find_last(tmp_path, "lisc").parent.name == "lisc20240101T0900_10"
    (tmp_path / "lisc20300101T0000").mkdir()  # a run that died before its first epoch
    assert C.find_last(tmp_path, "lisc").parent.name == "lisc20240101T0900_10"


@pytest.mark.parametrize("layout", ["missing", "empty", "only_other_name"])
def test_find_last_without_checkpoint_is_one_line_error(tmp_path, layout):
    logs = tmp_path / "logs"
    if layout != "missing":
        (logs / "lisc20240101T0000").mkdir(parents=True)
    if layout == "only_other_name":
        touch(logs / "cells20240101T0000" / C.checkpoint_name("cells", 1))
    with pytest.raises(C.CheckpointNotFoundError) as info:
        C.find_last(logs, "lisc")
    message = str(info.value)
    assert isinstance(info.value, MrcnnError) and isinstance(info.value, FileNotFoundError)
    assert "\n" not in message and str(logs) in message and "--weights" in message


def test_resolve_weights(tmp_path):
    assert C.resolve_weights("coco", tmp_path) == C.WeightsChoice("coco")
    assert C.resolve_weights("ImageNet", tmp_path).kind == "imagenet"
    assert C.resolve_weights("none", tmp_path).path is None
    ckpt = touch(tmp_path / "lisc20240101T0000" / C.checkpoint_name("lisc", 4))
    assert C.resolve_weights("last", tmp_path, "lisc") == C.WeightsChoice("checkpoint", ckpt, 4)
    assert C.resolve_weights(str(ckpt), tmp_path) == C.WeightsChoice("checkpoint", ckpt, 4)
    foreign = touch(tmp_path / "mask_rcnn_coco.h5")
    assert C.resolve_weights(str(foreign), tmp_path) == C.WeightsChoice("file", foreign, None)
    with pytest.raises(WeightsError, match="no such file"):
        C.resolve_weights(str(tmp_path / "nope.h5"), tmp_path)
    with pytest.raises(C.CheckpointNotFoundError):
        C.resolve_weights("last", tmp_path / "empty")


def test_resolve_weights_lists_only_the_accepted_keywords(tmp_path):
    ckpt = touch(tmp_path / "lisc20240101T0000" / C.checkpoint_name("lisc", 4))
    assert C.resolve_weights("LAST", tmp_path, accepted=("last",)) == C.WeightsChoice("checkpoint", ckpt, 4)
    assert C.resolve_weights(str(ckpt), tmp_path, accepted=("last",)).path == ckpt
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsError) as info:
        C.resolve_weights(str(missing), tmp_path)
    assert str(info.value) == f"--weights {missing}: no such file; give coco, imagenet, last, none or a weight file path"
    with pytest.raises(WeightsError) as info:
        C.resolve_weights(str(missing), tmp_path, accepted=("last",))
    assert str(info.value) == f"--weights {missing}: no such file; give last or a weight file path"
    # A keyword the command does not take is refused, never looked up as a file, even if one has its name.
    touch(tmp_path / "coco")
    for keyword in ("coco", "ImageNet", "none"):
        with pytest.raises(WeightsError) as info:
            C.resolve_weights(keyword, tmp_path, accepted=("last",))
        assert str(info.value) == f"--weights {keyword}: not accepted by this command; give last or a weight file path"
    with pytest.raises(WeightsError, match="give coco or a weight file path"):
        C.resolve_weights("last", tmp_path, accepted=("coco",))
    with pytest.raises(ValueError, match="keywords must come from"):
        C.resolve_weights("last", tmp_path, accepted=("latest",))


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    now = datetime.datetime(2024, 5, 6, 7, 8)
    first = C.new_run_dir(tmp_path, "LISC", now)
    second = C.new_run_dir(tmp_path, "LISC", now)
    third = C.new_run_dir(tmp_path, "LISC", now)
    assert first.name == "lisc20240506T0708"
    assert len({first, second, third}) == 3 and all(p.is_dir() for p in (first, second, third))
    assert sorted([third, first, second], key=C.run_dir_key) == [first, second, third]


def small_model(rng):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    return model


def test_save_checkpoint_writes_weights_and_config_atomically(tmp_path, rng):
    model = small_model(rng)
    path = tmp_path / C.checkpoint_name("tiny", 3)
    config = type("TinyCfg", (Config,), {"NAME": "tiny", "IMAGES_PER_GPU": 1})()
    C.save_checkpoint(model, config, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask_rcnn_tiny_0003.config.json",
                                                          "mask_rcnn_tiny_0003.weights.h5"]
    assert json.loads(C.config_path_for(path).read_text())["NAME"] == "tiny"
    other = small_model(np.random.default_rng(9))
    other.load_weights(str(path))
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, rng):
    model = small_model(rng)
    path = tmp_path / C.checkpoint_name("tiny", 1)
    C.atomic_save_weights(model, path)
    before = path.read_bytes()

    class Exploding:
        def save_weights(self, filepath):
            with open(filepath, "wb") as f:
                f.write(b"half a file")
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        C.atomic_save_weights(Exploding(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(MrcnnError, match=r"\.weights\.h5"):
        C.atomic_save_weights(model, tmp_path / "model.h5")


def test_remove_stale_temporaries(tmp_path):
    keep = touch(tmp_path / C.checkpoint_name("tiny", 1))
    stale = touch(tmp_path / f".{keep.name}.{os.getpid()}.tmp.weights.h5")
    assert C.remove_stale_temporaries(tmp_path) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == [keep.name]


def test_checkpoints_leave_out_optimizer_state(tmp_path, rng):
    model = small_model(rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    path = C.atomic_save_weights(model, tmp_path / C.checkpoint_name("tiny", 1))
    with h5py.File(path) as f:
        assert "optimizer" not in f and "layers" in f  # momentum slots would double the file
    expected = [np.array(w) for w in model.weights]
    for w in model.weights:
        w.assign(np.zeros(w.shape, np.float32))
    C.load_model_weights(model, path)
    for a, b in zip(expected, model.weights):
        np.testing.assert_array_equal(a, np.array(b))

"""model.train end to end on a tiny in-memory dataset: stages, checkpoints, logs, NaN stop, resume."""
import csv
import json
import pathlib

import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.engine import training
from mrcnn_tf.engine.checkpoints import config_path_for, find_last
from mrcnn_tf.config import LOSS_NAMES
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.model import MaskRCNN


class BoxesDataset(Dataset):
    """64x64 images with one or two bright rectangles (class 1 or 2), generated from the image id."""

    def load_boxes(self, count):
        self.add_class("boxes", 1, "wide")
        self.add_class("boxes", 2, "tall")
        for i in range(count):
            self.add_image("boxes", image_id=i, path=None)

    def _instances(self, image_id):
        rng = np.random.default_rng(image_id)
        out = []
        for _ in range(1 + image_id % 2):
            y, x = rng.integers(4, 36, size=2)
            cls = int(rng.integers(1, 3))
            h, w = (12, 24) if cls == 1 else (24, 12)
            out.append((cls, y, x, h, w))
        return out

    def load_image(self, image_id):
        image = np.full((64, 64, 3), 30, np.uint8)
        for cls, y, x, h, w in self._instances(image_id):
            image[y:y + h, x:x + w] = (200, 90 * cls, 60)
        return image

    def load_mask(self, image_id):
        instances = self._instances(image_id)
        masks = np.zeros((64, 64, len(instances)), bool)
        for i, (_, y, x, h, w) in enumerate(instances):
            masks[y:y + h, x:x + w, i] = True
        return masks, np.array([c for c, *_ in instances], np.int32)


def boxes_dataset(count=4):
    dataset = BoxesDataset()
    dataset.load_boxes(count)
    dataset.prepare()
    return dataset


class PoisonAt(keras.callbacks.Callback):
    """Writes NaN into one trainable weight at the start of a given epoch (0-based)."""

    def __init__(self, epoch):
        super().__init__()
        self.target = epoch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == self.target:
            weight = [w for w in self.model.trainable_weights if "mrcnn_class_logits" in w.path][0]
            weight.assign(np.full(weight.shape, np.nan, np.float32))


def csv_rows(run_dir):
    with open(run_dir / training.CSV_LOG_NAME, newline="") as f:
        return list(csv.DictReader(f))


def test_staged_training_nan_stop_and_resume(tmp_path, monkeypatch):
    from mrcnn_tf.engine import precise_bn

    keras.utils.set_random_seed(3)
    # Two images per batch: the pipeline, the graph and the losses all see a real batch.
    config = tiny_config(TRAIN_BN=True, IMAGES_PER_GPU=2, STEPS_PER_EPOCH=1, VALIDATION_STEPS=1)
    # BatchNorm statistics are never recomputed by default: Matterport keeps the moving averages of training.
    assert config.BN_STATS_BATCHES == 0
    monkeypatch.setattr(precise_bn, "recompute_batch_norm_statistics", lambda *a, **k: pytest.fail("recomputed"))
    data = boxes_dataset()
    logs = tmp_path / "logs"
    model = MaskRCNN("training", config, logs)

    # Stage 1: heads to epoch 1.
    model.train(data, data, 0.001, epochs=1, layers="heads")
    run = pathlib.Path(model.log_dir)
    first = run / "mask_rcnn_tiny_0001.weights.h5"
    assert model.epoch == 1 and first.is_file()
    assert json.loads(config_path_for(first).read_text())["NAME"] == "tiny"
    # Stage 2: all layers to epoch 3 (cumulative), but the loss turns NaN in the third epoch.
    with pytest.raises(training.TrainingDivergedError) as info:
        model.train(data, data, 0.001, epochs=3, layers="all", custom_callbacks=[PoisonAt(epoch=2)])
    message = str(info.value)
    good = run / "mask_rcnn_tiny_0002.weights.h5"
    assert "\n" not in message and "non-finite loss" in message and str(good) in message
    assert good.is_file() and not (run / "mask_rcnn_tiny_0003.weights.h5").exists()
    assert model.epoch == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporaries left
    rows = csv_rows(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"loss", "val_loss", *LOSS_NAMES, *(f"val_{n}" for n in LOSS_NAMES)} <= set(rows[0])
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    if training.tensorboard_available():
        assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*"))

    # Resume in a new model from the newest checkpoint: epoch counter and folder come back.
    resumed = MaskRCNN("training", config, logs)
    last = resumed.find_last()
    assert pathlib.Path(last) == good
    resumed.load_weights(last, by_name=True)
    assert resumed.epoch == 2 and pathlib.Path(resumed.log_dir) == run
    # The diverged model got its last good weights back, the same as the checkpoint holds.
    for a, b in zip(model.keras_model.weights, resumed.keras_model.weights):
        assert np.all(np.isfinite(np.array(b))), b.path
        np.testing.assert_array_equal(np.array(a), np.array(b))
    resumed.train(data, data, 0.001, epochs=3, layers="all")
    assert resumed.epoch == 3 and find_last(logs, "tiny") == run / "mask_rcnn_tiny_0003.weights.h5"
    assert [r["epoch"] for r in csv_rows(run)] == ["0", "1", "2"]
    # Already at epoch 3: asking for 3 epochs trains nothing and writes nothing.
    resumed.train(data, data, 0.001, epochs=3, layers="all")
    assert len(list(run.glob("*.weights.h5"))) == 3


def test_heads_train_on_random_rois_without_the_rpn(tmp_path):
    # USE_RPN_ROIS = False: the model takes an `input_roi` and train() must feed it random ROIs
    # (Matterport's train() did not, so its models with this setting could not train).
    keras.utils.set_random_seed(4)
    config = tiny_config(TRAIN_BN=True, USE_RPN_ROIS=False, STEPS_PER_EPOCH=2, VALIDATION_STEPS=1)
    model = MaskRCNN("training", config, tmp_path / "logs")
    assert "input_roi" in [tensor.name.split(":")[0] for tensor in model.keras_model.inputs]
    model.train(boxes_dataset(), boxes_dataset(), 0.001, epochs=1, layers="heads")
    rows = csv_rows(pathlib.Path(model.log_dir))
    assert len(rows) == 1 and (pathlib.Path(model.log_dir) / "mask_rcnn_tiny_0001.weights.h5").is_file()
    assert all(np.isfinite(float(rows[0][name])) for name in ("loss", "val_loss", *LOSS_NAMES))
    assert float(rows[0]["mrcnn_class_loss"]) > 0  # the heads saw the random ROIs and learned from them


def test_new_run_never_reuses_an_existing_log_dir(tmp_path):
    config = tiny_config()

    class Facade:  # the attributes of MaskRCNN that claim_log_dir reads
        def __init__(self, log_dir):
            self.config, self.epoch = config, 0
            self.log_dir = str(log_dir)
            self.checkpoint_path = str(pathlib.Path(log_dir) / "mask_rcnn_tiny_{epoch:04d}.weights.h5")

    taken = tmp_path / "tiny20240101T0000"
    (taken / "x").mkdir(parents=True)
    first = Facade(taken)
    got = training.claim_log_dir(first)
    assert got != taken and got.is_dir() and first.log_dir == str(got)
    assert pathlib.Path(first.checkpoint_path).parent == got
    assert training.claim_log_dir(first) == got  # a later stage of the same run keeps its folder
    second = Facade(taken)
    assert training.claim_log_dir(second) not in (taken, got)
    resumed = Facade(taken)
    resumed.epoch = 5  # loaded from a checkpoint in `taken`: continues there, as Matterport does
    assert training.claim_log_dir(resumed) == taken


def test_layer_regex_and_set_trainable_on_nested_models():
    assert training.layer_regex("heads") == training.LAYER_REGEX["heads"]
    assert training.layer_regex(r"mrcnn\_.*") == r"mrcnn\_.*"
    with pytest.raises(Exception, match="neither"):
        training.layer_regex("(unclosed")
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="rpn_conv_shared")(inner_in), name="rpn_model")
    x_in = keras.Input((2, 4))
    x = keras.layers.TimeDistributed(keras.layers.Dense(4), name="mrcnn_class_conv1")(x_in)
    x = keras.layers.Dense(4, name="res5a_branch2a")(x)
    x = keras.layers.Dense(4, name="res3a_branch2a")(x)
    model = keras.Model(x_in, inner(keras.layers.Reshape((8,))(x)))
    inner.trainable = False
    names = training.set_trainable(model, "heads", verbose=0)
    assert names == ["mrcnn_class_conv1", "rpn_conv_shared"]
    assert model.get_layer("mrcnn_class_conv1").layer.trainable
    assert inner.get_layer("rpn_conv_shared").trainable
    assert not model.get_layer("res5a_branch2a").trainable
    assert training.set_trainable(model, "5+", verbose=0) == ["mrcnn_class_conv1", "res5a_branch2a",
                                                               "rpn_conv_shared"]
    assert len(model.trainable_weights) == 6

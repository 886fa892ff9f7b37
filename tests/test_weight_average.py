"""WEIGHT_EMA_DECAY: the exponential moving average of the trained weights, against a numpy reference."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.engine.weight_average import WeightAverage, ema_decay
from test_training import boxes_dataset

HERE = os.path.dirname(os.path.abspath(__file__))


def small_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    frozen = keras.layers.Dense(1, name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, frozen(x))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


class Recorder(keras.callbacks.Callback):
    """After each step: the model's trainable weights (raw: the average is only swapped in at epoch ends).
    At each epoch end (after WeightAverage's) and each epoch begin: what the model holds then."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends, self.epoch_begins = [], [], []

    def _weights(self):
        return [np.array(v) for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self._weights())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begins.append(self._weights())


def reference_average(initial, steps, decay):
    """The average in plain numpy: a <- d a + (1 - d) w, d = min(decay, (1 + n) / (10 + n)), from the start."""
    average = [w.astype(np.float64) for w in initial]
    for n, weights in enumerate(steps, start=1):
        d = min(decay, (1 + n) / (10 + n))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    return average


def test_decay_ramps_up_to_its_value():
    assert ema_decay(0.99, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.99, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.99, 10_000) == 0.99
    assert ema_decay(0.5, 3) == pytest.approx(4 / 13) and ema_decay(0.5, 100) == 0.5
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(1.0)
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(0.0)


@pytest.mark.parametrize("decay", [0.9, 0.5])
def test_model_holds_the_average_at_epoch_ends_and_the_raw_weights_in_training(rng, decay):
    keras.utils.set_random_seed(3)
    model = small_model()
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = rng.normal(size=(24, 1)).astype(np.float32)
    initial = [np.array(v) for v in model.trainable_variables]
    frozen_before = np.array(model.get_layer("frozen").kernel)
    average, recorder = WeightAverage(decay), Recorder()
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[average, recorder])
    assert average.updates == 18 and len(recorder.steps) == 18
    for epoch in range(3):
        expected = reference_average(initial, recorder.steps[:6 * (epoch + 1)], decay)
        for got, want in zip(recorder.epoch_ends[epoch], expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Each next epoch trains on from the raw weights of the last step, not from the average.
    for epoch in (1, 2):
        for got, raw in zip(recorder.epoch_begins[epoch], recorder.steps[6 * epoch - 1]):
            np.testing.assert_array_equal(got, raw)
    # Training ends with the average in the model; frozen weights are left alone.
    for got, want in zip(model.trainable_variables, recorder.epoch_ends[-1]):
        np.testing.assert_array_equal(np.array(got), want)
    assert not np.allclose(recorder.epoch_ends[-1][0], recorder.steps[-1][0])
    np.testing.assert_array_equal(np.array(model.get_layer("frozen").kernel), frozen_before)


def test_swaps_are_idempotent(rng):
    model = small_model()
    model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 1)), batch_size=4, epochs=1, verbose=0,
              callbacks=[average := WeightAverage(0.9)])
    held = [np.array(v) for v in model.trainable_variables]
    average.swap_in_average()  # fit's epoch end already did
    for got, want in zip(model.trainable_variables, held):
        np.testing.assert_array_equal(np.array(got), want)
    average.restore_raw()
    average.restore_raw()
    assert not np.array_equal(np.array(model.trainable_variables[0]), held[0])


@pytest.mark.parametrize("value", [1.0, -0.1, "0.9", True])
def test_config_rejects_a_decay_outside_zero_to_one(value):
    with pytest.raises(ConfigError, match="WEIGHT_EMA_DECAY"):
        tiny_config(WEIGHT_EMA_DECAY=value)


def test_train_checkpoints_the_average_after_precise_bn(tmp_path, monkeypatch):
    from mrcnn_tf.engine import checkpoints, precise_bn, weight_average

    events, kernels = [], {}
    recompute, save = precise_bn.recompute_batch_norm_statistics, checkpoints.save_checkpoint
    swap_in = weight_average.WeightAverage.swap_in_average

    def kernel_of(model):  # the stem: the RPN's losses reach it in every step (the class head's may not: a clean-
        return np.array(model.get_layer("conv1").weights[0])  # clone CI saw its kernel move by 3e-8 in 6 steps)

    def spy_swap_in(self):
        kernels["raw"] = kernel_of(self.model)
        swap_in(self)
        kernels["average"] = kernel_of(self.model)
        events.append("average")

    def spy_recompute(model, batches, **kwargs):
        events.append("recompute")
        return recompute(model, batches, **kwargs)

    def spy_save(*args, **kwargs):
        events.append("save")
        return save(*args, **kwargs)

    monkeypatch.setattr(weight_average.WeightAverage, "swap_in_average", spy_swap_in)
    monkeypatch.setattr(precise_bn, "recompute_batch_norm_statistics", spy_recompute)
    monkeypatch.setattr(checkpoints, "save_checkpoint", spy_save)
    keras.utils.set_random_seed(5)
    config = tiny_config(TRAIN_BN=None, BN_STATS_BATCHES=1, WEIGHT_EMA_DECAY=0.9, STEPS_PER_EPOCH=3,
                         VALIDATION_STEPS=1)
    model = MaskRCNN("training", config, tmp_path / "logs")
    model.train(boxes_dataset(), boxes_dataset(), 0.01, epochs=2, layers="all")
    assert events == ["average", "recompute", "save"] * 2
    assert not np.allclose(kernels["raw"], kernels["average"])
    np.testing.assert_array_equal(kernel_of(model.keras_model), kernels["average"])
    reloaded = MaskRCNN("training", config, tmp_path / "logs")
    reloaded.load_weights(reloaded.find_last(), by_name=True, verbose=0)
    np.testing.assert_array_equal(kernel_of(reloaded.keras_model), kernels["average"])


# Two logical CPU devices must be configured before TensorFlow initialises: a fresh process.
MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from test_weight_average import Recorder, reference_average, small_model
    from mrcnn_tf.engine.weight_average import WeightAverage

    keras.utils.set_random_seed(3)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = small_model()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=(16, 1)).astype(np.float32)
    initial = [np.array(v) for v in model.trainable_variables]
    recorder = Recorder()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[WeightAverage(0.9), recorder])
    expected = reference_average(initial, recorder.steps, 0.9)
    replicas = [[np.array(v.value.values[i]) for v in model.trainable_variables] for i in range(2)]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "error": max(float(np.abs(g - w).max()) for g, w in zip(recorder.epoch_ends[-1], expected)),
        "replica_difference": max(float(np.abs(a - b).max()) for a, b in zip(*replicas)),
        "restored": bool(all(np.array_equal(a, b) for a, b in zip(recorder.epoch_begins[1], recorder.steps[3]))),
    }))
""")


def test_average_of_mirrored_weights_on_two_replicas():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
                         cwd=HERE, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["error"] < 1e-5  # the average of the (identical) replica weights, step by step
    assert result["replica_difference"] == 0.0  # both replicas hold the same average
    assert result["restored"]

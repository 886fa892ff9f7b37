"""Config.LEARNING_RATE_SCHEDULE: WarmupCosineDecay against a plain reference, and inside train()."""
import math

import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.config import ConfigError
from mrcnn_tf.engine.lr_schedule import WarmupCosineDecay, learning_rate_for
from mrcnn_tf.model import MaskRCNN
from test_training import boxes_dataset


def reference_rate(global_step, peak, total, warmup, final_fraction):
    """Linear warm-up ((s + 1) / warmup of the peak), then a cosine from the peak to peak * final."""
    if global_step < warmup:
        return peak * min(1.0, (global_step + 1) / warmup)
    progress = min(max((global_step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    low = peak * final_fraction
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("seed", range(6))
def test_schedule_matches_reference_on_random_settings(seed):
    rng = np.random.default_rng(seed)
    peak = float(rng.uniform(1e-4, 0.1))
    total = int(rng.integers(1, 400))
    warmup = int(rng.integers(0, total + 5))  # may exceed the total: warm-up only, then held
    first = int(rng.integers(0, 50))
    final = float(rng.choice([0.0, 0.1, 1.0]))
    schedule = WarmupCosineDecay(peak, total, warmup, first, final)
    for step in list(range(0, 30)) + list(rng.integers(0, total + 100, size=40)):
        expected = reference_rate(step + first, peak, total, warmup, final)
        np.testing.assert_allclose(float(schedule(int(step))), expected, rtol=2e-5, atol=1e-9)


def test_schedule_end_points_and_degenerate_totals():
    schedule = WarmupCosineDecay(0.01, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(0.001)  # first update: 1/10 of the peak
    assert float(schedule(9)) == pytest.approx(0.01)
    assert float(schedule(10)) == pytest.approx(0.01)  # cosine starts at the peak
    assert float(schedule(55)) == pytest.approx(0.005)  # half way down
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(10_000)) == pytest.approx(0.0, abs=1e-9)  # held at the end
    # No warm-up and no steps at all: still finite, the peak at step 0 falling to the end at once.
    zero = WarmupCosineDecay(0.01, total_steps=0)
    assert np.isfinite(float(zero(0))) and float(zero(5)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_round_trips_through_keras_serialization():
    schedule = WarmupCosineDecay(0.003, 200, 20, 50, 0.1)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, WarmupCosineDecay) and clone.get_config() == schedule.get_config()
    for step in (0, 7, 60, 199, 500):
        assert float(clone(step)) == pytest.approx(float(schedule(step)))


def test_learning_rate_for_config():
    # Matterport's constant rate stays a plain float (the optimizer's config unchanged).
    assert learning_rate_for(tiny_config(), 0.02, 0, 5) == 0.02
    cosine = learning_rate_for(tiny_config(LEARNING_RATE_SCHEDULE="cosine", STEPS_PER_EPOCH=10,
                                           LEARNING_RATE_WARMUP_STEPS=5), 0.02, start_epoch=3, epochs=8)
    assert cosine.get_config() == {"learning_rate": 0.02, "total_steps": 80, "warmup_steps": 5,
                                   "first_step": 30, "final_fraction": 0.0}
    # A warmed-up constant rate: flat at the peak after the warm-up.
    flat = learning_rate_for(tiny_config(LEARNING_RATE_WARMUP_STEPS=4, STEPS_PER_EPOCH=10), 0.02, 0, 2)
    assert [round(float(flat(s)), 6) for s in (0, 3, 4, 19)] == [0.005, 0.02, 0.02, 0.02]


@pytest.mark.parametrize("name, value", [("LEARNING_RATE_SCHEDULE", "linear"), ("LEARNING_RATE_WARMUP_STEPS", -1),
                                         ("LEARNING_RATE_WARMUP_STEPS", 2.5)])
def test_bad_schedule_settings_fail_in_one_line(name, value):
    with pytest.raises(ConfigError) as info:
        tiny_config(**{name: value})
    assert f"Config.{name}" in str(info.value) and "\n" not in str(info.value)


class RecordRate(keras.callbacks.Callback):
    """The optimizer's rate at the start of each training batch."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_train_follows_the_cosine_and_a_later_call_continues_on_it(tmp_path):
    keras.utils.set_random_seed(1)
    config = tiny_config(TRAIN_BN=True, STEPS_PER_EPOCH=3, VALIDATION_STEPS=1, LEARNING_RATE_SCHEDULE="cosine",
                         LEARNING_RATE_WARMUP_STEPS=2)
    data = boxes_dataset()
    model, first, second = MaskRCNN("training", config, tmp_path / "logs"), RecordRate(), RecordRate()
    model.train(data, data, 0.01, epochs=1, layers="all", custom_callbacks=[first], verbose=0)
    # A second call (a new optimizer, as in a resumed run: model.epoch is 1) towards 3 epochs: steps 3..8.
    model.train(data, data, 0.01, epochs=3, layers="all", custom_callbacks=[second], verbose=0)
    # The first call planned 1 epoch (3 steps), the second 3 epochs (9 steps), entered at its step 3.
    np.testing.assert_allclose(first.rates, [reference_rate(s, 0.01, 3, 2, 0.0) for s in range(3)], rtol=1e-5)
    np.testing.assert_allclose(second.rates, [reference_rate(s, 0.01, 9, 2, 0.0) for s in range(3, 9)],
                               rtol=1e-5, atol=1e-9)

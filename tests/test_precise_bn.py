"""PreciseBN: BatchNorm statistics recomputed on training batches, against a numpy reference."""
import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.engine.precise_bn import PreciseBatchNorm, batch_norm_layers, recompute_batch_norm_statistics
from test_training import boxes_dataset

EPS = 1e-3


def small_model():
    """x -> BN1 -> Dense -> nested [BN2] -> frozen BN3 (train_bn False) -> output."""
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(epsilon=EPS, name="bn1")(inputs)
    x = keras.layers.Dense(4, name="dense")(x)
    inner_in = keras.Input((4,))
    nested = keras.Model(inner_in, BatchNorm(epsilon=EPS, name="bn2")(inner_in), name="nested")
    x = nested(x)
    x = BatchNorm(train_bn=False, epsilon=EPS, name="bn3")(x)
    return keras.Model(inputs, x)


def reference_statistics(model, batches):
    """Mean over batches of each layer's batch mean / (biased) variance, computed in numpy."""
    gamma1, beta1 = (np.array(w) for w in model.get_layer("bn1").weights[:2])
    kernel, bias = model.get_layer("dense").get_weights()
    stats = {"bn1": ([], []), "bn2": ([], [])}
    for x in batches:
        stats["bn1"][0].append(x.mean(0))
        stats["bn1"][1].append(x.var(0))
        y = gamma1 * (x - x.mean(0)) / np.sqrt(x.var(0) + EPS) + beta1  # training mode: batch statistics
        z = y @ kernel + bias
        stats["bn2"][0].append(z.mean(0))
        stats["bn2"][1].append(z.var(0))
    return {name: (np.mean(m, 0), np.mean(v, 0)) for name, (m, v) in stats.items()}


@pytest.mark.parametrize("traced", [False, True])
def test_statistics_are_the_mean_over_batches(rng, traced):
    import tensorflow as tf

    model = small_model()
    model.get_layer("dense").set_weights([rng.normal(size=(3, 4)).astype(np.float32),
                                          rng.normal(size=4).astype(np.float32)])
    batches = [rng.normal(loc=3.0, scale=2.0, size=(8, 3)).astype(np.float32) for _ in range(5)]
    frozen = model.get_layer("bn3")
    frozen_before = [np.array(w) for w in frozen.weights]
    kernel_before = model.get_layer("dense").get_weights()
    momenta = [layer.momentum for layer in batch_norm_layers(model)]

    # Traced: one tf.function reused for every batch (the momentum it sees is the same constant each time).
    forward = tf.function(lambda x: model(x, training=True)) if traced else None
    assert recompute_batch_norm_statistics(model, batches, forward=forward) == 5
    want = reference_statistics(model, batches)
    bn2 = model.get_layer("nested").get_layer("bn2")
    for layer, name in ((model.get_layer("bn1"), "bn1"), (bn2, "bn2")):
        np.testing.assert_allclose(np.array(layer.moving_mean), want[name][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.array(layer.moving_variance), want[name][1], rtol=1e-4, atol=1e-5)
    # A BatchNorm fixed to inference mode keeps its statistics; weights and momenta are untouched.
    for a, b in zip(frozen_before, frozen.weights):
        np.testing.assert_array_equal(a, np.array(b))
    for a, b in zip(kernel_before, model.get_layer("dense").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [layer.momentum for layer in batch_norm_layers(model)] == momenta


@pytest.mark.parametrize("batches", [[], "one"])
def test_no_batch_changes_nothing_and_one_batch_gives_its_statistics(rng, batches):
    model = small_model()
    x = rng.normal(size=(6, 3)).astype(np.float32)
    bn1 = model.get_layer("bn1")
    before = np.array(bn1.moving_mean)
    used = recompute_batch_norm_statistics(model, [] if batches == [] else [x])
    if batches == []:
        assert used == 0
        np.testing.assert_array_equal(np.array(bn1.moving_mean), before)
    else:
        assert used == 1
        np.testing.assert_allclose(np.array(bn1.moving_mean), x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(bn1.moving_variance), x.var(0), rtol=1e-4, atol=1e-6)


def test_callback_reads_other_batches_each_epoch(rng):
    class Batches:
        def __init__(self):
            self.epoch, self.read = 0, []

        def __len__(self):
            return 3

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            self.read.append((self.epoch, index))
            return ((np.full((4, 3), 10.0 * self.epoch + index, np.float32) + rng.normal(size=(4, 3))
                     .astype(np.float32),),)

    source = Batches()
    model = small_model()
    callback = PreciseBatchNorm(source, batch_count=2)
    callback.set_model(model)
    callback.on_epoch_end(4)
    assert source.read == [(4, 0), (4, 1)]
    np.testing.assert_allclose(np.array(model.get_layer("bn1").moving_mean), 40.5, atol=1.0)


def test_train_recomputes_before_each_checkpoint(tmp_path, monkeypatch):
    from mrcnn_tf.engine import checkpoints, precise_bn

    events = []
    recompute, save = precise_bn.recompute_batch_norm_statistics, checkpoints.save_checkpoint

    def spy_recompute(model, batches, **kwargs):
        batches = list(batches)
        events.append(("recompute", len(batches), len(batches[0])))
        return recompute(model, batches, **kwargs)

    def spy_save(*args, **kwargs):
        events.append(("save",))
        return save(*args, **kwargs)

    monkeypatch.setattr(precise_bn, "recompute_batch_norm_statistics", spy_recompute)
    monkeypatch.setattr(checkpoints, "save_checkpoint", spy_save)
    keras.utils.set_random_seed(5)
    config = tiny_config(TRAIN_BN=None, BN_STATS_BATCHES=2, STEPS_PER_EPOCH=1, VALIDATION_STEPS=1)
    model = MaskRCNN("training", config, tmp_path / "logs")
    model.train(boxes_dataset(), boxes_dataset(), 0.001, epochs=2, layers="all")
    # Each epoch: the statistics are recomputed on 2 batches of the 7 model inputs, then saved.
    assert events == [("recompute", 2, 7), ("save",)] * 2
    stats = np.array(model.keras_model.get_layer("bn_conv1").moving_variance)
    reloaded = MaskRCNN("training", config, tmp_path / "logs")
    reloaded.load_weights(reloaded.find_last(), by_name=True, verbose=0)
    np.testing.assert_array_equal(np.array(reloaded.keras_model.get_layer("bn_conv1").moving_variance), stats)

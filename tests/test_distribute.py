"""Multi-device training: GPU_COUNT drives a MirroredStrategy (here over two logical CPU devices).

Logical devices must be configured before TensorFlow initialises, so the two-replica checks run in a
fresh Python process that prints its measurements as JSON; the assertions are made here.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf.engine import distribute
from mrcnn_tf.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in a subprocess with 2 logical CPU devices. ROIs are given (USE_RPN_ROIS=False) and chosen so
# that DetectionTargetLayer takes every candidate: its random sampling then picks the same rows on one
# device and on two, and the losses can be compared exactly.
SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from helpers_model import tiny_config
    from helpers_training import fixed_batch
    from mrcnn_tf import model as modellib

    def config(images, gpus):
        return tiny_config(USE_RPN_ROIS=False, POST_NMS_ROIS_TRAINING=4, IMAGES_PER_GPU=images, GPU_COUNT=gpus,
                           LEARNING_RATE=0.01)

    def deterministic_batch(cfg):
        batch = fixed_batch(tiny_config(IMAGES_PER_GPU=2), seed=3, with_rois=True)
        # No zero rows: a zero pixel box normalizes to a non-zero one and would become a negative.
        rois = np.zeros((2, 4, 4), np.float32)
        for b in range(2):
            gt = batch[5][b][batch[4][b] > 0]
            rois[b, :2] = gt[[0, -1]]  # positives: the GT boxes themselves (the one of image 0 twice)
            rois[b, 2:] = [[0, 0, 5, 5], [58, 0, 63, 5]]  # negatives: IoU 0 with every GT
        batch[7] = rois
        return [np.ascontiguousarray(a) for a in batch]

    def dataset(batch, size):
        return tf.data.Dataset.from_tensor_slices((tuple(batch),)).batch(size)

    logs = tempfile.mkdtemp()
    keras.utils.set_random_seed(0)
    single = modellib.MaskRCNN("training", config(2, 1), logs)
    multi = modellib.MaskRCNN("training", config(1, 2), logs)
    multi.keras_model.set_weights(single.keras_model.get_weights())
    for m in (single, multi):
        m.compile(m.config.LEARNING_RATE, m.config.LEARNING_MOMENTUM)
    batch = deterministic_batch(single.config)
    out = {"replicas": multi.keras_model.distribute_strategy.num_replicas_in_sync,
           "variable_type": type(multi.keras_model.trainable_weights[0].value).__name__}
    # Different images: the two-replica loss is the mean of the per-image losses of one device.
    out["single_per_image"] = single.keras_model.evaluate(dataset(batch, 1), return_dict=True, verbose=0)
    out["multi"] = multi.keras_model.evaluate(dataset(batch, 2), return_dict=True, verbose=0)
    # The same image twice: one device and two replicas see the same batch loss and take the same step.
    twice = [np.concatenate([a[:1], a[:1]]) for a in batch]
    out["single_twice"] = single.keras_model.evaluate(dataset(twice, 2), return_dict=True, verbose=0)
    out["multi_twice"] = multi.keras_model.evaluate(dataset(twice, 2), return_dict=True, verbose=0)
    before = single.keras_model.get_weights()
    for m in (single, multi):
        m.keras_model.fit(dataset(twice, 2), epochs=1, steps_per_epoch=1, verbose=0)
    steps = [[a - w for a, w in zip(m.keras_model.get_weights(), before)] for m in (single, multi)]
    # The whole step as one vector: its length, and the length of the difference between the two.
    flat = [np.concatenate([a.ravel() for a in s]).astype(np.float64) for s in steps]
    out["step_norm"] = float(np.linalg.norm(flat[0]))
    out["step_difference_norm"] = float(np.linalg.norm(flat[0] - flat[1]))
    out["iterations"] = [int(np.asarray(m.keras_model.optimizer.iterations)) for m in (single, multi)]

    # PreciseBN on the same batches, BatchNorm trainable: one device and two replicas (every replica's copy).
    from mrcnn_tf.engine.precise_bn import batch_norm_layers, recompute_batch_norm_statistics
    bn_single = modellib.MaskRCNN("training", tiny_config(TRAIN_BN=None), logs)
    bn_multi = modellib.MaskRCNN("training", tiny_config(TRAIN_BN=None, GPU_COUNT=2), logs)
    bn_multi.keras_model.set_weights(bn_single.keras_model.get_weights())
    batches = [fixed_batch(tiny_config(), seed=s) for s in (4, 5, 6)]
    for m in (bn_single, bn_multi):
        recompute_batch_norm_statistics(m.keras_model, batches)
    pairs = list(zip(batch_norm_layers(bn_single.keras_model), batch_norm_layers(bn_multi.keras_model)))
    out["bn_layers"] = len(pairs)
    out["bn_copies"] = len(pairs[0][1].moving_mean.value.values)
    out["bn_unchanged"] = sum(bool(np.all(np.asarray(a.moving_variance) == 1)) for a, _ in pairs)
    out["bn_largest_difference"] = max(
        float(np.max(np.abs(np.asarray(va) - copy.numpy())))
        for a, b in pairs for va, vb in ((a.moving_mean, b.moving_mean), (a.moving_variance, b.moving_variance))
        for copy in vb.value.values)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def two_replicas():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=HERE, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_replicas_are_built_with_mirrored_variables(two_replicas):
    assert two_replicas["replicas"] == 2
    assert "Mirrored" in two_replicas["variable_type"]


def test_two_replica_loss_is_the_mean_of_per_image_losses(two_replicas):
    single, multi = two_replicas["single_per_image"], two_replicas["multi"]
    for name in ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"):
        np.testing.assert_allclose(multi[name], single[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # Heads had positive ROIs: the comparison covers all five losses, not zeros.
    assert single["mrcnn_mask_loss"] > 0 and single["mrcnn_bbox_loss"] > 0


def test_two_replicas_match_one_device_on_the_same_batch(two_replicas):
    for name, value in two_replicas["single_twice"].items():
        np.testing.assert_allclose(two_replicas["multi_twice"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    assert two_replicas["iterations"] == [1, 1]
    # The replicas' gradients are summed before the optimizer's global-norm clipping and step. Clipping
    # each replica's part instead (Keras 3's own order) made the step twice as long: difference = 100%.
    # Measured here: 0.7% of the step's length (ResNet-18; 1.1% for the largest single weight), the float32
    # summation order of a random network's gradients (frozen BatchNorm at 0 / 1 normalizes nothing).
    assert two_replicas["step_norm"] > 1e-3
    assert two_replicas["step_difference_norm"] < 0.05 * two_replicas["step_norm"]


def test_precise_bn_under_two_replicas_equals_one_device_on_the_same_batches(two_replicas):
    # Every BatchNorm layer (nested rpn_model and TimeDistributed heads included), on both replicas' copies.
    # ResNet-18's 20 BatchNorm layers and the heads' 6.
    assert two_replicas["bn_layers"] == 26 and two_replicas["bn_copies"] == 2
    assert two_replicas["bn_unchanged"] == 0  # all statistics were recomputed
    assert two_replicas["bn_largest_difference"] < 1e-5


def test_single_gpu_uses_no_strategy():
    config = tiny_config()
    assert distribute.replica_devices(config) is None
    assert distribute.build_strategy(config) is None
    with distribute.strategy_scope(config) as strategy:
        assert strategy is None


def test_gpu_count_above_visible_devices_is_a_config_error(tmp_path):
    from mrcnn_tf import model as modellib

    config = tiny_config(GPU_COUNT=3)
    with pytest.raises(ConfigError, match=r"GPU_COUNT = 3 .*set GPU_COUNT to 1"):
        modellib.MaskRCNN("training", config, tmp_path)


def test_outer_strategy_with_other_replica_count_is_refused():
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        assert distribute.build_strategy(tiny_config()) is strategy
        with pytest.raises(ConfigError, match="has 1 replicas"):
            distribute.build_strategy(tiny_config(GPU_COUNT=2))

"""MIXED_PRECISION: float16/bfloat16 compute, float32 where numerics need it, global policy restored."""
import keras
import numpy as np
import pytest

from helpers_model import tiny_config
from helpers_training import fixed_batch
import tensorflow as tf

from mrcnn_tf.backend import runtime
from mrcnn_tf.engine import distribute
from mrcnn_tf import model as modellib
from mrcnn_tf.errors import ConfigError

# Outputs that must stay float32 under any policy: probabilities (scores, log() in the losses) and boxes.
FLOAT32_INFERENCE = ("rpn_class", "rpn_bbox", "ROI", "mrcnn_class", "mrcnn_detection",
                     "mrcnn_mask")


@pytest.mark.parametrize("value, name", [(False, "float32"), (True, "mixed_float16"),
                                         ("mixed_float16", "mixed_float16"), ("mixed_bfloat16", "mixed_bfloat16")])
def test_policy_name(value, name):
    assert distribute.policy_name(tiny_config(MIXED_PRECISION=value)) == name


@pytest.fixture
def machine(monkeypatch):
    """A machine whose GPU, bf16 speed and oneDNN the test chooses (the real CPU's flags are not read)."""
    def choose(gpu=False, bf16=True, onednn=True):
        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: ["/GPU:0"] if gpu and kind == "GPU" else [])
        monkeypatch.setattr(runtime, "cpu_bf16_faster", lambda: bf16)
        monkeypatch.setattr(runtime, "onednn_enabled", lambda: onednn)
    return choose


@pytest.mark.parametrize("gpu, bf16, onednn, name", [
    (False, True, True, "mixed_bfloat16"),  # AMX or AMD's AVX512-BF16 with oneDNN: bf16
    (False, False, True, "float32"),  # no bf16 units, or Intel's without AMX: bf16 is slower than float32
    (False, True, False, "float32"),  # oneDNN off: Eigen's bf16 kernels are slow
    (True, True, True, "float32")])  # a GPU: the user names mixed_float16 or mixed_bfloat16 for it
def test_auto_takes_bfloat16_only_where_the_cpu_has_it(machine, gpu, bf16, onednn, name):
    machine(gpu=gpu, bf16=bf16, onednn=onednn)
    assert distribute.policy_name(tiny_config(MIXED_PRECISION="auto")) == name


def test_auto_is_resolved_in_the_run_record(machine, tmp_path):
    machine(bf16=True)
    config = tiny_config(MIXED_PRECISION="auto")
    mrcnn = modellib.MaskRCNN("inference", config, str(tmp_path))
    assert mrcnn.keras_model.dtype_policy.name == "mixed_bfloat16"
    assert config.MIXED_PRECISION == "auto" and config.CPU_KERNELS["precision"] == "mixed_bfloat16"


def test_policy_name_rejects_other_values():
    config = tiny_config()
    config.MIXED_PRECISION = 1  # equal to True, but not a bool
    with pytest.raises(ConfigError, match="MIXED_PRECISION"):
        distribute.policy_name(config)


def test_precision_policy_is_restored_after_an_error():
    with pytest.raises(RuntimeError):
        with distribute.precision_policy(tiny_config(MIXED_PRECISION="mixed_bfloat16")):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"


@pytest.fixture(scope="module")
def bf16_inference(tmp_path_factory):
    return modellib.MaskRCNN("inference", tiny_config(MIXED_PRECISION="mixed_bfloat16"),
                             tmp_path_factory.mktemp("logs"))


def test_inference_model_computes_in_bfloat16_with_float32_outputs(bf16_inference):
    model = bf16_inference.keras_model
    assert keras.config.dtype_policy().name == "float32"  # not leaked to later models
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("fpn_p2").output.dtype == "bfloat16"
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    for name in FLOAT32_INFERENCE:
        outputs = model.get_layer(name).output
        for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            assert output.dtype == "float32", name


def test_bfloat16_detect_runs_and_returns_float32_scores(bf16_inference, rng):
    image = rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)
    result = bf16_inference.detect([image])[0]
    assert result["scores"].dtype == np.float32
    assert result["masks"].shape[:2] == (64, 64)
    assert np.all((result["scores"] >= 0) & (result["scores"] <= 1))
    # The same weights in float32 give close RPN probabilities (bfloat16 keeps ~3 significant digits).
    reference = modellib.MaskRCNN("inference", tiny_config(), bf16_inference.model_dir)
    reference.keras_model.set_weights(bf16_inference.keras_model.get_weights())
    molded, metas, _ = reference.mold_inputs([image])
    anchors = reference.get_anchors(molded[0].shape)[None]
    rpn_mixed = bf16_inference._predict(molded, metas, anchors)[5]
    rpn_float = reference._predict(molded, metas, anchors)[5]
    assert rpn_mixed.dtype == np.float32
    difference = np.abs(rpn_mixed - rpn_float)
    assert difference.mean() < 0.02 and difference.max() < 0.3
    assert not np.array_equal(rpn_mixed, rpn_float)  # the bfloat16 path really ran


@pytest.mark.parametrize("policy, scaled", [("mixed_float16", True), ("mixed_bfloat16", False)])
def test_training_step_under_mixed_precision(tmp_path, policy, scaled):
    config = tiny_config(MIXED_PRECISION=policy, USE_RPN_ROIS=False)
    mrcnn = modellib.MaskRCNN("training", config, tmp_path)
    assert keras.config.dtype_policy().name == "float32"
    model = mrcnn.keras_model
    mrcnn.compile(0.001, 0.9)
    # float16 needs loss scaling (Keras wraps the optimizer); bfloat16 has float32's range.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    batch = fixed_batch(config, with_rois=True)
    outputs = model(batch, training=False)
    # Logits, deltas and masks stay float32: the losses and box maths read them.
    for name in ("mrcnn_mask", "rpn_class_logits", "rpn_bbox", "mrcnn_class_logits", "mrcnn_bbox"):
        assert outputs[name].dtype == "float32", name
    losses = model.mrcnn_losses(batch, outputs)
    assert all(value.dtype == "float32" for value in losses.values())
    before = [w.numpy().copy() for w in model.trainable_weights]
    scale = float(model.optimizer.initial_scale) if scaled else None  # dynamic_scale exists after build
    logs = model.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["mrcnn_mask_loss"] > 0
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after) and all(w.dtype == "float32" for w in model.trainable_weights)
    stepped = any(not np.array_equal(a, b) for a, b in zip(before, after))
    if scaled:
        # Scaled float16 gradients of a random network may overflow: then the step is skipped and the
        # loss scale halved (never inf/NaN weights); otherwise the weights move.
        assert stepped != (float(model.optimizer.dynamic_scale) < scale)
    else:
        assert stepped

"""Under mixed_bfloat16 each layer stays within a stated tolerance of its float32 self, on the same weights.

bfloat16 keeps 8 significant bits (relative rounding 2**-9): a layer that rounds its input and output and
accumulates in float32 is off by about 0.5 %. The tolerances, as relative L2 errors ||bf16 - fp32|| / ||fp32||:
one layer 1.5 %, its gradients 3 %, the whole backbone + FPN + RPN of a random network 6 %. The gradients are taken
in traced functions, as training takes them (eager bias gradients of keras' own layers sum in bfloat16).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers_model import tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf.layers import PyramidROIAlign
from mrcnn_tf.layers.batch_norm import BatchNorm
from mrcnn_tf.layers.conv2d import Conv2D
from mrcnn_tf.layers.conv2d_transpose import Conv2DTranspose
from mrcnn_tf.layers.full_window_conv import FullWindowConv2D
from mrcnn_tf.ops.bias import add_bias

LAYER_TOLERANCE, GRADIENT_TOLERANCE, NETWORK_TOLERANCE = 0.015, 0.03, 0.06


def relative_error(mixed, reference):
    mixed, reference = (np.asarray(tf.cast(v, tf.float32)) for v in (mixed, reference))
    return float(np.linalg.norm(mixed - reference) / max(np.linalg.norm(reference), 1e-12))


def twin_layers(make, input_shape):
    """The layer built float32 and mixed_bfloat16 with the same weights."""
    reference, mixed = make(dtype="float32"), make(dtype="mixed_bfloat16")
    reference.build(input_shape)
    mixed.build(input_shape)
    mixed.set_weights(reference.get_weights())
    assert mixed.compute_dtype == "bfloat16" and all(w.dtype == "float32" for w in mixed.weights)
    return reference, mixed


def randomise(layer, rng):
    layer.set_weights([rng.normal(0.5 if w.ndim == 1 else 0, 0.2, size=w.shape).astype(np.float32)
                       for w in layer.get_weights()])


@pytest.mark.parametrize("make, shape", [
    (lambda **k: Conv2D(16, (3, 3), padding="same", **k), (2, 20, 20, 8)),
    (lambda **k: Conv2D(8, (1, 1), strides=2, **k), (1, 17, 15, 16)),
    (lambda **k: FullWindowConv2D(12, (7, 7), **k), (5, 7, 7, 6)),
    (lambda **k: Conv2DTranspose(6, (2, 2), strides=2, activation="relu", **k), (3, 14, 14, 5)),
    (lambda **k: BatchNorm(train_bn=False, **k), (2, 6, 6, 10)),
    (lambda **k: BatchNorm(train_bn=True, **k), (2, 6, 6, 10))])
def test_layer_and_its_gradients_stay_close_to_float32(rng, make, shape):
    reference, mixed = twin_layers(make, shape)
    randomise(reference, rng)
    mixed.set_weights(reference.get_weights())
    x = rng.normal(size=shape).astype(np.float32)
    outputs, gradients = [], []
    for layer in (reference, mixed):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
            return y, tape.gradient(loss, layer.trainable_weights)
        y, grads = step()
        outputs.append(y)
        gradients.append(grads)
    assert outputs[1].dtype == tf.bfloat16
    assert 0 < relative_error(outputs[1], outputs[0]) < LAYER_TOLERANCE  # > 0: bfloat16 really ran
    for mixed_grad, reference_grad in zip(gradients[1], gradients[0]):
        assert mixed_grad.dtype == tf.float32  # float32 variables get float32 gradients
        assert relative_error(mixed_grad, reference_grad) < GRADIENT_TOLERANCE


def test_roi_align_on_bfloat16_maps_stays_close_and_keeps_its_dtype(rng):
    maps = [rng.normal(size=(1, 64 // s, 64 // s, 4)).astype(np.float32) for s in (4, 8, 16, 32)]
    boxes = np.array([[[0.1, 0.1, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0], [0.4, 0.4, 0.42, 0.45], [0, 0, 0, 0]]],
                     np.float32)
    meta = np.array([[0, 64, 64, 3, 64, 64, 3, 0, 0, 64, 64, 1.0, 1, 1]], np.float32)
    layer = PyramidROIAlign([7, 7])
    reference = layer([boxes, meta] + maps)
    mixed = layer([boxes, meta] + [tf.cast(m, tf.bfloat16) for m in maps])
    assert mixed.dtype == tf.bfloat16
    # Only the maps' own rounding: crop_and_resize has no bfloat16 kernel, so it interpolates in float32.
    assert relative_error(mixed, reference) < LAYER_TOLERANCE
    # A point box (the padding row) samples one pixel: exactly the float32 value, rounded once.
    np.testing.assert_array_equal(np.asarray(tf.cast(mixed[0, 3], tf.float32)),
                                  np.asarray(tf.cast(tf.cast(reference[0, 3], tf.bfloat16), tf.float32)))


def test_the_networks_feature_and_rpn_outputs_stay_close_to_float32(tmp_path, rng):
    """Every floating output from the image to the RPN (the part before proposals are ranked and cut)."""
    mixed = modellib.MaskRCNN("inference", tiny_config(MIXED_PRECISION="mixed_bfloat16"), tmp_path)
    reference = modellib.MaskRCNN("inference", tiny_config(), tmp_path)
    reference.keras_model.set_weights(mixed.keras_model.get_weights())
    image = rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)
    molded, metas, _ = reference.mold_inputs([image])
    anchors = reference.get_anchors(molded[0].shape)[None]
    names = [layer.name for layer in reference.keras_model.layers
             if layer.name.startswith(("res", "fpn_p", "bn", "conv1")) or layer.name in ("rpn_class", "rpn_bbox")]
    assert len(names) > 20
    errors = {}
    for name in names:
        outputs = []
        for net in (reference, mixed):
            model = net.keras_model
            probe = keras.Model(model.inputs, model.get_layer(name).output)
            outputs.append(probe([molded, metas, anchors], training=False))
        errors[name] = relative_error(outputs[1], outputs[0])
    worst = max(errors, key=errors.get)
    assert errors[worst] < NETWORK_TOLERANCE, (worst, errors[worst])
    assert errors["rpn_bbox"] > 0  # the bfloat16 path really ran


@pytest.mark.parametrize("x_shape", [(3, 5, 4), (0, 4), (2, 0, 3, 4), (64, 64, 8)])
def test_add_bias_sums_its_gradient_in_float32(rng, x_shape):
    x = rng.normal(size=x_shape).astype(np.float32)
    bias = rng.normal(size=x_shape[-1]).astype(np.float32)
    upstream = rng.normal(1.0, 1.0, size=x_shape).astype(np.float32)
    for dtype, tolerance in ((tf.float32, 1e-5), (tf.bfloat16, LAYER_TOLERANCE)):
        xt, bt = tf.cast(x, dtype), tf.cast(bias, dtype)
        with tf.GradientTape() as tape:
            tape.watch([xt, bt])
            y = add_bias(xt, bt)
        dx, db = tape.gradient(y, [xt, bt], output_gradients=tf.cast(upstream, dtype))
        np.testing.assert_allclose(np.asarray(tf.cast(y, tf.float32)), x + bias, rtol=tolerance, atol=tolerance)
        reference = upstream.reshape(-1, x_shape[-1]).astype(np.float64).sum(0)  # zeros for an empty x
        assert db.dtype == dtype and dx.dtype == dtype
        np.testing.assert_allclose(np.asarray(tf.cast(db, tf.float64)), reference, rtol=tolerance,
                                   atol=tolerance * max(1.0, float(np.abs(reference).max(initial=0))))
        np.testing.assert_allclose(np.asarray(tf.cast(dx, tf.float32)), upstream, rtol=tolerance, atol=tolerance)


def test_mask_upsampler_bias_gradient_survives_bfloat16_on_a_mask_heads_maps(rng):
    """keras' own Conv2DTranspose sums this gradient in bfloat16 and loses ~90 % of it at this size."""
    shape = (40, 14, 14, 8)  # 40 ROIs of 14 x 14 -> 40 x 28 x 28 outputs per channel
    reference, mixed = twin_layers(lambda **k: Conv2DTranspose(8, (2, 2), strides=2, activation="relu", **k), shape)
    x = rng.normal(size=shape).astype(np.float32)
    weight = rng.normal(1.0, 1.0, size=(40, 28, 28, 8)).astype(np.float32)

    @tf.function
    def gradients(layer):  # a traced step, as training runs it
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32) * weight)
        return tape.gradient(loss, layer.trainable_weights)

    for mixed_grad, reference_grad in zip(gradients(mixed), gradients(reference)):
        assert relative_error(mixed_grad, reference_grad) < GRADIENT_TOLERANCE

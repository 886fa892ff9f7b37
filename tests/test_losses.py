"""The five Matterport losses and the L2 decay against slow, loop-based numpy references."""
import keras
import numpy as np
import pytest

from mrcnn_tf.nets import losses as L


# ---------------------------------------------------------------------- numpy references
def np_smooth_l1(y_true, y_pred):
    d = np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64))
    return np.where(d < 1, 0.5 * d * d, d - 0.5)


def np_softmax_ce(label, logits):
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max()
    return -(z[label] - np.log(np.exp(z).sum()))


def ref_rpn_class(rpn_match, logits):
    values = []
    for b in range(rpn_match.shape[0]):
        for a in range(rpn_match.shape[1]):
            m = rpn_match[b, a, 0]
            if m != 0:
                values.append(np_softmax_ce(1 if m == 1 else 0, logits[b, a]))
    return np.mean(values) if values else 0.0


def ref_rpn_bbox(target_bbox, rpn_match, rpn_bbox):
    values = []
    for b in range(rpn_match.shape[0]):
        row = 0
        for a in range(rpn_match.shape[1]):
            if rpn_match[b, a, 0] == 1:
                values.extend(np_smooth_l1(target_bbox[b, row], rpn_bbox[b, a]))
                row += 1
    return np.mean(values) if values else 0.0


def ref_mrcnn_class(target_ids, logits, active):
    num, den = 0.0, 0.0
    for b in range(target_ids.shape[0]):
        for t in range(target_ids.shape[1]):
            weight = active[b, int(np.argmax(logits[b, t]))]
            num += np_softmax_ce(target_ids[b, t], logits[b, t]) * weight
            den += weight
    return num / den if den else 0.0


def ref_mrcnn_bbox(target_bbox, target_ids, pred_bbox):
    values = []
    for b in range(target_ids.shape[0]):
        for t in range(target_ids.shape[1]):
            c = target_ids[b, t]
            if c > 0:
                values.extend(np_smooth_l1(target_bbox[b, t], pred_bbox[b, t, c]))
    return np.mean(values) if values else 0.0


def ref_mrcnn_mask(target_masks, target_ids, pred_masks):
    values = []
    for b in range(target_ids.shape[0]):
        for t in range(target_ids.shape[1]):
            c = target_ids[b, t]
            if c > 0:
                p = np.clip(pred_masks[b, t, :, :, c].astype(np.float64), 1e-7, 1 - 1e-7)
                y = target_masks[b, t].astype(np.float64)
                values.extend((-(y * np.log(p) + (1 - y) * np.log(1 - p))).ravel())
    return np.mean(values) if values else 0.0


def rpn_inputs(rng, batch=3, anchors=40, rows=10, no_positive=False):
    """rpn_match with at most rows/2 positives per image, packed targets as build_rpn_targets does."""
    rpn_match = rng.choice([-1, 0, 1], size=(batch, anchors, 1), p=[0.4, 0.4, 0.2]).astype(np.int32)
    for b in range(batch):
        pos = np.flatnonzero(rpn_match[b, :, 0] == 1)
        rpn_match[b, pos[rows // 2:], 0] = 0
    if no_positive:
        rpn_match[rpn_match == 1] = -1
    target = np.zeros((batch, rows, 4), np.float32)
    for b in range(batch):
        n = int((rpn_match[b, :, 0] == 1).sum())
        target[b, :n] = rng.normal(size=(n, 4))
    return rpn_match, target, rng.normal(scale=2, size=(batch, anchors, 4)).astype(np.float32)


# ---------------------------------------------------------------------- tests
def test_smooth_l1_matches_reference(rng):
    a, b = rng.normal(scale=2, size=(5, 4)), rng.normal(scale=2, size=(5, 4))
    np.testing.assert_allclose(np.asarray(L.smooth_l1_loss(a, b)), np_smooth_l1(a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["random", "all_neutral", "one_image"])
def test_rpn_class_loss(rng, case):
    rpn_match, _, _ = rpn_inputs(rng, batch=1 if case == "one_image" else 3)
    if case == "all_neutral":
        rpn_match[:] = 0
    logits = rng.normal(size=rpn_match.shape[:2] + (2,)).astype(np.float32)
    got = float(L.rpn_class_loss_graph(rpn_match, logits))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, ref_rpn_class(rpn_match, logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("no_positive", [False, True])
def test_rpn_bbox_loss_unpacks_each_image(rng, no_positive):
    rpn_match, target, pred = rpn_inputs(rng, no_positive=no_positive)
    got = float(L.rpn_bbox_loss_graph(target, rpn_match, pred))
    want = ref_rpn_bbox(target, rpn_match, pred)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if no_positive:
        assert got == 0.0


def test_rpn_bbox_loss_different_counts_per_image(rng):
    # Image 0 has 1 positive, image 1 has 4: a wrong unpacking would pair rows with other images.
    rpn_match = np.full((2, 12, 1), -1, np.int32)
    rpn_match[0, [5], 0] = 1
    rpn_match[1, [0, 3, 7, 11], 0] = 1
    target = np.zeros((2, 6, 4), np.float32)
    target[0, :1] = rng.normal(size=(1, 4))
    target[1, :4] = rng.normal(size=(4, 4))
    pred = rng.normal(size=(2, 12, 4)).astype(np.float32)
    np.testing.assert_allclose(float(L.rpn_bbox_loss_graph(target, rpn_match, pred)),
                               ref_rpn_bbox(target, rpn_match, pred), rtol=1e-5)


def test_mrcnn_class_loss_uses_each_images_active_ids(rng):
    batch, rois, nc = 3, 7, 5
    target = rng.integers(0, nc, size=(batch, rois)).astype(np.int32)
    logits = rng.normal(scale=3, size=(batch, rois, nc)).astype(np.float32)
    active = np.ones((batch, nc), np.float32)
    active[1, 2:] = 0  # image 1 comes from a source with classes 0-1 only
    active[2, 3] = 0
    got = float(L.mrcnn_class_loss_graph(target, logits, active))
    np.testing.assert_allclose(got, ref_mrcnn_class(target, logits, active), rtol=1e-5)
    # Matterport's active_class_ids[0] rule gives a different number on this mixed batch.
    assert abs(got - ref_mrcnn_class(target, logits, np.repeat(active[:1], batch, 0))) > 1e-4


def test_mrcnn_class_loss_no_active_prediction_is_zero(rng):
    target = np.zeros((2, 4), np.int32)
    logits = np.zeros((2, 4, 3), np.float32)
    logits[..., 2] = 5.0  # every prediction is class 2 ...
    active = np.array([[1, 1, 0], [1, 1, 0]], np.float32)  # ... which no image has
    assert float(L.mrcnn_class_loss_graph(target, logits, active)) == 0.0


@pytest.mark.parametrize("positives", ["some", "none"])
def test_mrcnn_bbox_and_mask_losses(rng, positives):
    batch, rois, nc, h = 2, 6, 4, 7
    target_ids = rng.integers(0, nc, size=(batch, rois)).astype(np.int32)
    target_ids[:, -2:] = 0  # zero padding rows
    if positives == "none":
        target_ids[:] = 0
    target_bbox = rng.normal(size=(batch, rois, 4)).astype(np.float32)
    pred_bbox = rng.normal(scale=2, size=(batch, rois, nc, 4)).astype(np.float32)
    target_masks = (rng.random((batch, rois, h, h)) > 0.5).astype(np.float32)
    pred_masks = rng.random((batch, rois, h, h, nc)).astype(np.float32)
    pred_masks[0, 0, 0, 0, :] = 0.0  # exercises the epsilon clip (log(0))
    got_bbox = float(L.mrcnn_bbox_loss_graph(target_bbox, target_ids, pred_bbox))
    got_mask = float(L.mrcnn_mask_loss_graph(target_masks, target_ids, pred_masks))
    assert np.isfinite(got_bbox) and np.isfinite(got_mask)
    np.testing.assert_allclose(got_bbox, ref_mrcnn_bbox(target_bbox, target_ids, pred_bbox), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_mask, ref_mrcnn_mask(target_masks, target_ids, pred_masks), rtol=1e-4, atol=1e-6)
    if positives == "none":
        assert got_bbox == 0.0 and got_mask == 0.0


def test_losses_cast_half_precision_to_float32(rng):
    target_ids = np.array([[1, 0]], np.int32)
    pred = rng.random((1, 2, 3, 3, 2)).astype(np.float16)
    target = (rng.random((1, 2, 3, 3)) > 0.5).astype(np.float32)
    out = L.mrcnn_mask_loss_graph(target, target_ids, pred)
    assert out.dtype.name == "float32"
    np.testing.assert_allclose(float(out), ref_mrcnn_mask(target, target_ids, pred.astype(np.float32)), rtol=1e-4)


def test_l2_weight_decay_divides_by_size_and_skips_batchnorm(rng):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    decay = 1e-3
    want = 0.0
    for w in model.trainable_weights:
        if w.name in ("gamma", "beta"):
            continue
        v = np.asarray(w, np.float64)
        want += decay * (v ** 2).sum() / v.size
    assert {w.name for w in model.trainable_weights} >= {"gamma", "beta", "kernel", "bias"}
    np.testing.assert_allclose(float(L.l2_weight_decay(model.trainable_weights, decay)), want, rtol=1e-5)
    assert float(L.l2_weight_decay([], decay)) == 0.0
    assert float(L.l2_weight_decay(model.trainable_weights, 0.0)) == 0.0


def test_build_optimizer_sgd_and_adam_clip_by_global_norm():
    import keras

    from mrcnn_tf.engine.training import build_optimizer

    sgd = build_optimizer(0.01, 0.9, 5.0)
    adam = build_optimizer(0.001, 0.9, 5.0, "adam")
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.global_clipnorm == 5.0
    assert isinstance(adam, keras.optimizers.Adam) and adam.global_clipnorm == 5.0
    assert build_optimizer(0.01, 0.9, None).global_clipnorm is None
    # One step of each on a gradient of norm 10 moves the weights by a clipped amount.
    for optimizer, expected in ((build_optimizer(1.0, 0.0, 5.0), 5.0), (build_optimizer(0.1, 0.9, 5.0, "adam"), None)):
        variable = keras.Variable(np.zeros(4, np.float32))
        optimizer.apply([np.full(4, 5.0, np.float32)], [variable])
        step = np.linalg.norm(keras.ops.convert_to_numpy(variable))
        if expected is not None:
            np.testing.assert_allclose(step, expected, rtol=1e-5)  # SGD: lr * clipped gradient
        else:
            np.testing.assert_allclose(step, 0.2, rtol=1e-3)  # Adam's first step: lr per coordinate


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_fused_momentum_matches_a_numpy_reference_and_keras(rng, nesterov):
    """ReplicaSumClipSGD's one-op update against plain momentum SGD in numpy and Keras' own SGD."""
    import tensorflow as tf

    from mrcnn_tf.engine.optimizers import ReplicaSumClipSGD

    shapes = [(3, 3, 2, 4), (4,), (1,)]
    start = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(4)]
    lr, momentum = 0.05, 0.9
    fused = [keras.Variable(w) for w in start]
    plain = [keras.Variable(w) for w in start]
    ours = ReplicaSumClipSGD(learning_rate=lr, momentum=momentum, nesterov=nesterov)
    theirs = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov)
    step = tf.function(lambda g: ours.apply(g, fused))  # traced, as in training
    want, velocity = [w.astype(np.float64) for w in start], [np.zeros(s) for s in shapes]
    for g in grads:
        step(g)
        theirs.apply(g, plain)
        for i, gi in enumerate(g):
            velocity[i] = momentum * velocity[i] - lr * gi
            want[i] += momentum * velocity[i] - lr * gi if nesterov else velocity[i]
    for f, p, w in zip(fused, plain, want):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(f), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(f), keras.ops.convert_to_numpy(p), rtol=1e-6, atol=1e-7)
    assert int(ours.iterations) == len(grads)
    kinds = [op.type for op in step.get_concrete_function(grads[0]).graph.get_operations()]
    assert kinds.count("ResourceApplyKerasMomentum") == len(shapes)  # the fused kernel, one per variable
    # No momentum: Keras' plain update (nothing to fuse); still the reference.
    variable = keras.Variable(start[1])
    ReplicaSumClipSGD(learning_rate=lr, momentum=0.0).apply([grads[0][1]], [variable])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), start[1] - lr * grads[0][1], rtol=1e-6)


def test_adam_fused_update_matches_a_numpy_reference_and_keras(rng):
    """ReplicaSumClipAdam's one-op update against Adam written out in numpy and Keras' own Adam."""
    import tensorflow as tf

    from mrcnn_tf.engine.optimizers import ReplicaSumClipAdam

    shapes = [(3, 3, 2, 4), (4,), (1,)]
    start = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(5)]
    grads[2][1][:] = 0.0  # a zero gradient still moves the weight by the momentum
    lr, beta_1, beta_2, eps = 0.01, 0.9, 0.999, 1e-7
    fused = [keras.Variable(w) for w in start]
    plain = [keras.Variable(w) for w in start]
    ours = ReplicaSumClipAdam(learning_rate=lr)
    theirs = keras.optimizers.Adam(learning_rate=lr)
    step = tf.function(lambda g: ours.apply(g, fused))
    want = [w.astype(np.float64) for w in start]
    m, v = [np.zeros(s) for s in shapes], [np.zeros(s) for s in shapes]
    for t, g in enumerate(grads, start=1):
        step(g)
        theirs.apply(g, plain)
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        for i, gi in enumerate(g):
            m[i] = beta_1 * m[i] + (1 - beta_1) * gi
            v[i] = beta_2 * v[i] + (1 - beta_2) * gi.astype(np.float64) ** 2
            want[i] -= alpha * m[i] / (np.sqrt(v[i]) + eps)
    for f, p, w in zip(fused, plain, want):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(f), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(f), keras.ops.convert_to_numpy(p), rtol=1e-5, atol=1e-6)
    assert int(ours.iterations) == len(grads)
    kinds = [op.type for op in step.get_concrete_function(grads[0]).graph.get_operations()]
    assert kinds.count("ResourceApplyAdam") == len(shapes)
    # AMSGrad has no one-op form here: Keras' update, which the fused path must not replace.
    amsgrad, reference = keras.Variable(start[0]), keras.Variable(start[0])
    ReplicaSumClipAdam(learning_rate=lr, amsgrad=True).apply([grads[0][0]], [amsgrad])
    keras.optimizers.Adam(learning_rate=lr, amsgrad=True).apply([grads[0][0]], [reference])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(amsgrad), keras.ops.convert_to_numpy(reference), rtol=1e-6)


def ref_nucleus_mask(target_nuclei, target_ids, pred_nuclei):
    """Slow BCE over the pixels of positive ROIs, one (class-agnostic) channel; 0 without positives."""
    values = []
    for b in range(target_ids.shape[0]):
        for r in range(target_ids.shape[1]):
            if target_ids[b, r] <= 0:
                continue
            p = np.clip(pred_nuclei[b, r, :, :, 0].astype(np.float64), 1e-7, 1 - 1e-7)
            t = target_nuclei[b, r].astype(np.float64)
            values.extend((-(t * np.log(p) + (1 - t) * np.log(1 - p))).ravel())
    return float(np.mean(values)) if values else 0.0


@pytest.mark.parametrize("positives", ["some", "one", "none"])
def test_mrcnn_nucleus_mask_loss(rng, positives):
    batch, rois, h = 2, 5, 7
    target_ids = rng.integers(1, 4, size=(batch, rois)).astype(np.int32)
    target_ids[:, -2:] = 0  # negatives / padding carry no loss
    if positives == "one":
        target_ids[:] = 0
        target_ids[1, 0] = 2
    elif positives == "none":
        target_ids[:] = 0
    target = (rng.random((batch, rois, h, h)) > 0.5).astype(np.float32)
    pred = rng.random((batch, rois, h, h, 1)).astype(np.float32)
    pred[0, 0, 0, 0, 0] = 0.0  # log(0) is clipped
    got = float(L.mrcnn_nucleus_mask_loss_graph(target, target_ids, pred))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, ref_nucleus_mask(target, target_ids, pred), rtol=1e-4, atol=1e-6)
    if positives == "none":
        assert got == 0.0
    # The class id does not pick a channel: any positive id gives the same loss.
    np.testing.assert_allclose(float(L.mrcnn_nucleus_mask_loss_graph(target, (target_ids > 0) * 5, pred)), got,
                               rtol=1e-6)
    # [B, T, h, w] predictions (no channel axis) are read alike.
    np.testing.assert_allclose(float(L.mrcnn_nucleus_mask_loss_graph(target, target_ids, pred[..., 0])), got, rtol=1e-6)

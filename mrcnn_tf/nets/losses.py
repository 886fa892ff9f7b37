"""The five Mask R-CNN losses of Matterport, the nucleus loss (NUCLEUS_MASKS), and Matterport's L2 weight
decay, as plain TF functions.

They are called from `MaskRCNNTrainModel.compute_loss` on concrete (or traced) tensors, never on
symbolic Keras tensors, so raw ``tf.*`` is fine here. Every loss is float32 (mixed-precision
outputs are cast first) and a scalar; a loss with nothing to average over (no positive anchor,
no positive ROI) is 0, not NaN, exactly like Matterport's ``K.switch(tf.size(loss) > 0, ...)``.

Shapes use B = images per batch, A = anchors, R = RPN_TRAIN_ANCHORS_PER_IMAGE, T = ROIs per image
(TRAIN_ROIS_PER_IMAGE), NC = NUM_CLASSES. Box deltas are (dy, dx, log dh, log dw) already divided
by the std-dev, so no coordinate convention applies.
"""
import numpy as np
import tensorflow as tf


def _float(x):
    return tf.cast(x, tf.float32)


def _masked_mean(values, weights, per_item=1):
    """sum(values * weights) / (sum(weights) * per_item), 0.0 when no weight is set.

    Every loss is written this way rather than with tf.where/gather on the selected rows: shapes
    stay static (XLA and GPU friendly) and an empty selection gives 0, not NaN, as Matterport's
    ``K.switch(tf.size(loss) > 0, K.mean(loss), 0)`` does.
    """
    weights = _float(weights)
    return tf.math.divide_no_nan(tf.reduce_sum(_float(values) * weights),
                                 tf.reduce_sum(weights) * float(per_item))


def smooth_l1_loss(y_true, y_pred):
    """Element-wise smooth-L1 (Huber with delta 1): 0.5 d^2 where |d| < 1, |d| - 0.5 elsewhere.

    Args:
        y_true, y_pred: tensors of the same shape.

    Returns:
        Tensor of that shape (float32), not reduced.
    """
    diff = tf.abs(_float(y_true) - _float(y_pred))
    less_than_one = tf.cast(diff < 1.0, tf.float32)
    return less_than_one * 0.5 * diff ** 2 + (1.0 - less_than_one) * (diff - 0.5)


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """RPN anchor classifier loss: softmax cross-entropy over non-neutral anchors.

    Args:
        rpn_match: [B, A, 1] (or [B, A]) int, 1 positive, -1 negative, 0 neutral anchor.
        rpn_class_logits: [B, A, 2] background/foreground logits.

    Returns:
        Scalar: the mean cross-entropy over anchors with rpn_match != 0 (0.0 when none).
    """
    rpn_match = tf.reshape(tf.cast(rpn_match, tf.int32), tf.shape(rpn_class_logits)[:2])
    labels = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=_float(rpn_class_logits))
    return _masked_mean(loss, tf.not_equal(rpn_match, 0))


def rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox):
    """RPN box regression loss: smooth-L1 over the positive anchors of each image.

    `target_bbox` holds, per image, the deltas of its positive anchors in anchor order, packed at
    the top and zero-padded (`build_rpn_targets`). Matterport unpacks it with a Python loop over
    IMAGES_PER_GPU (`batch_pack_graph`); here each positive anchor looks up the row of its rank
    among the image's positives, for any batch size in one op.

    Args:
        target_bbox: [B, R, 4] packed target deltas.
        rpn_match: [B, A, 1] (or [B, A]) int anchor labels (1 positive).
        rpn_bbox: [B, A, 4] predicted deltas.

    Returns:
        Scalar: mean smooth-L1 over all coordinates of positive anchors (0.0 when none).
    """
    rpn_match = tf.reshape(tf.cast(rpn_match, tf.int32), tf.shape(rpn_bbox)[:2])
    positive = tf.equal(rpn_match, 1)
    num_rows = tf.shape(target_bbox)[1]
    rank = tf.cumsum(tf.cast(positive, tf.int32), axis=1) - 1  # row of each positive anchor
    # More positives than rows cannot come from build_rpn_targets (it caps them at R/2); such
    # extra anchors are ignored so hand-made inputs fail soft instead of reading out of range.
    positive = tf.logical_and(positive, rank < num_rows)
    rows = tf.clip_by_value(rank, 0, num_rows - 1)
    target = tf.gather(_float(target_bbox), rows, axis=1, batch_dims=1)  # [B, A, 4]
    loss = tf.reduce_sum(smooth_l1_loss(target, rpn_bbox), axis=-1)
    return _masked_mean(loss, positive, per_item=4)


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
    """Classifier head loss: softmax cross-entropy, ignoring predictions of inactive classes.

    A prediction (argmax class) that is not among the active classes of its image's source
    dataset does not count, as in Matterport. Matterport reads `active_class_ids[0]`, i.e. it
    assumes every image of a batch comes from one source; here each image uses its own row, which
    equals Matterport's result for homogeneous batches and is right for mixed ones.

    Args:
        target_class_ids: [B, T] int (zero-padded ROIs are class 0 and count as background,
            as in Matterport).
        pred_class_logits: [B, T, NC].
        active_class_ids: [B, NC], 1 for classes of the image's source dataset, else 0.

    Returns:
        Scalar: sum of counted losses / number of counted predictions (0.0 when none).
    """
    logits = _float(pred_class_logits)
    target = tf.cast(target_class_ids, tf.int32)
    pred_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B, T]
    pred_active = tf.gather(_float(active_class_ids), pred_ids, axis=1, batch_dims=1)  # [B, T]
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    return _masked_mean(loss, pred_active)


def _at_target_class(values, target_class_ids):
    """values [B, T, NC, ...] -> [B, T, ...]: the slice of each ROI's target class."""
    ids = tf.maximum(tf.cast(target_class_ids, tf.int32), 0)
    return tf.gather(_float(values), ids, axis=2, batch_dims=2)


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Box head loss: smooth-L1 between targets and the deltas predicted for the GT class.

    Args:
        target_bbox: [B, T, 4] target deltas.
        target_class_ids: [B, T] int; only ROIs with class > 0 count.
        pred_bbox: [B, T, NC, 4] class-specific predicted deltas.

    Returns:
        Scalar: mean smooth-L1 over the 4 coordinates of positive ROIs (0.0 when none).
    """
    pred = _at_target_class(pred_bbox, target_class_ids)  # [B, T, 4]
    loss = tf.reduce_sum(smooth_l1_loss(target_bbox, pred), axis=-1)
    return _masked_mean(loss, tf.cast(target_class_ids, tf.int32) > 0, per_item=4)


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Mask head loss: binary cross-entropy on the GT-class channel of positive ROIs.

    Probabilities are clipped to [1e-7, 1 - 1e-7] as Keras' binary_crossentropy does.

    Args:
        target_masks: [B, T, h, w] in {0, 1}.
        target_class_ids: [B, T] int; only ROIs with class > 0 count.
        pred_masks: [B, T, h, w, NC] sigmoid probabilities.

    Returns:
        Scalar: mean BCE over all pixels of positive ROIs (0.0 when none).
    """
    channels_first = tf.transpose(_float(pred_masks), [0, 1, 4, 2, 3])  # [B, T, NC, h, w]
    pred = _at_target_class(channels_first, target_class_ids)  # [B, T, h, w]
    return _positive_roi_bce(target_masks, target_class_ids, pred)


def _positive_roi_bce(target_masks, target_class_ids, pred):
    """Mean binary cross-entropy over every pixel of the positive ROIs: [B, T, h, w] targets and probabilities."""
    eps = 1e-7
    pred = tf.clip_by_value(pred, eps, 1.0 - eps)
    target = _float(target_masks)
    bce = -(target * tf.math.log(pred) + (1.0 - target) * tf.math.log(1.0 - pred))
    pixels = tf.cast(tf.shape(pred)[2] * tf.shape(pred)[3], tf.float32)
    per_roi = tf.reduce_sum(bce, axis=[2, 3])
    weights = _float(tf.cast(target_class_ids, tf.int32) > 0)
    return tf.math.divide_no_nan(tf.reduce_sum(per_roi * weights), tf.reduce_sum(weights) * pixels)


def mrcnn_nucleus_mask_loss_graph(target_nucleus_masks, target_class_ids, pred_nucleus_masks):
    """Nucleus head loss: binary cross-entropy of the one (class-agnostic) nucleus channel on positive ROIs.

    The form of `mrcnn_mask_loss_graph` with one channel: probabilities clipped to [1e-7, 1 - 1e-7].

    Args:
        target_nucleus_masks: [B, T, h, w] in {0, 1}, the GT nucleus of each ROI's GT cell.
        target_class_ids: [B, T] int; only ROIs with class > 0 count.
        pred_nucleus_masks: [B, T, h, w, 1] (or [B, T, h, w]) sigmoid probabilities.

    Returns:
        Scalar: mean BCE over all pixels of positive ROIs (0.0 when none).
    """
    pred = _float(pred_nucleus_masks)
    if pred.shape.rank == 5:
        pred = pred[..., 0]
    return _positive_roi_bce(target_nucleus_masks, target_class_ids, pred)


def l2_weight_decay(trainable_weights, decay):
    """Matterport's L2 regulariser: sum of decay * sum(w^2) / size(w) over non-BN weights.

    Each tensor's penalty is divided by its element count (much weaker than ordinary weight
    decay) and BatchNorm gamma/beta are skipped, exactly as Matterport's ``compile`` does.

    Args:
        trainable_weights: iterable of Keras variables (or tf.Variables) with a `.name`.
        decay: float, WEIGHT_DECAY.

    Returns:
        Scalar float32 (0.0 for no weights or decay 0).
    """
    terms = []
    for weight in trainable_weights:
        name = weight.name.split("/")[-1]
        if "gamma" in name or "beta" in name:
            continue
        value = _float(weight)
        # L2Loss (sum(w^2) / 2) is one kernel forward and one multiply backward: a few hundred
        # weights make this sum, so its op count is part of every traced training step.
        terms.append(tf.nn.l2_loss(value) * (2.0 * decay / max(int(np.prod(weight.shape)), 1)))
    if not terms or decay == 0:
        return tf.constant(0.0)
    return tf.add_n(terms)


# ---------------------------------------------------------------- Matterport's signatures
def matterport_rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox):
    """`rpn_bbox_loss_graph` with Matterport's argument order (``modellib.rpn_bbox_loss_graph``).

    Matterport needed the config for IMAGES_PER_GPU (its Python loop over the batch); the loss here
    works on any batch size, so `config` is accepted and not read.
    """
    del config
    return rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox)

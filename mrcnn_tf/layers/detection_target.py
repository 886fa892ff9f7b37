"""Training targets for the heads: sample ROIs from the proposals and assign them GT boxes/masks."""
import keras
import numpy as np
import tensorflow as tf

from mrcnn_tf.ops.graph import box_refinement_graph, overlaps_graph, trim_zeros_graph

POSITIVE_IOU = 0.5  # a proposal with IoU >= 0.5 to some GT box is positive, below is negative
CROWD_IOU = 0.001  # negatives must not touch a crowd box at all


def _mini_mask_frame(rois, gt_boxes):
    """Express normalized ROIs in the frame of their GT box ([0, 1] spans the GT box).

    Mini masks only cover the GT box, so the crop box must be relative to it.
    """
    y1, x1, y2, x2 = tf.unstack(rois, axis=1)
    gy1, gx1, gy2, gx2 = tf.unstack(gt_boxes, axis=1)
    height, width = gy2 - gy1, gx2 - gx1
    return tf.stack([(y1 - gy1) / height, (x1 - gx1) / width, (y2 - gy1) / height, (x2 - gx1) / width], axis=1)


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class DetectionTargetLayer(keras.layers.Layer):
    """Sample training ROIs and build their class, box and mask targets (Matterport semantics).

    Per image: zero rows of proposals and GT boxes are dropped; GT rows with a negative class id
    are crowds (only used to block negatives), rows with class id 0 are padding. Positives are
    proposals with IoU >= 0.5 to a non-crowd GT box, at most ``int(T * roi_positive_ratio)`` of
    them chosen at random; negatives have IoU < 0.5 and crowd IoU < 0.001, and
    ``int(positives / ratio) - positives`` of them are chosen at random (so the set is often
    shorter than T and zero-padded; it is also capped at T). GT boxes are not added to the
    proposals. Each positive gets the GT box of highest IoU: its class, its box deltas divided
    by `bbox_std_dev`, and its mask cropped to the ROI and resized to `mask_shape` (bilinear,
    rounded to {0, 1}); with mini masks the ROI is first expressed in the GT box's frame. The
    chosen positives and negatives keep the proposals' order (positives first), so when every
    candidate is taken the result is deterministic. Images are processed with `tf.map_fn`.

    Args:
        train_rois_per_image: T, rows of every output (TRAIN_ROIS_PER_IMAGE).
        roi_positive_ratio: share of positives (ROI_POSITIVE_RATIO).
        bbox_std_dev: four numbers that divide the box targets (BBOX_STD_DEV).
        mask_shape: (height, width) of the mask targets (MASK_SHAPE).
        use_mini_mask: whether gt_masks are mini masks cropped to their GT box (USE_MINI_MASK).
        seed: optional int seed of the random sampling.
        nucleus_masks: also take each GT cell's nucleus masks (same layout as gt_masks: mini masks in
            the cell's GT box frame with USE_MINI_MASK) and return `target_nucleus_mask`, cropped and
            resized exactly as `target_mask` (NUCLEUS_MASKS).
        **kwargs: Layer arguments (name, dtype...); dtype defaults to float32.

    Call arguments:
        inputs: [proposals, gt_class_ids, gt_boxes, gt_masks]: proposals [B, P, 4] normalized
            (zero rows are padding), gt_class_ids [B, G] int (0 padding, < 0 crowd),
            gt_boxes [B, G, 4] normalized, gt_masks [B, mh, mw, G] bool (mini or full size);
            with `nucleus_masks` a fifth, gt_nucleus_masks [B, mh, mw, G] bool.

    Returns:
        [rois, target_class_ids, target_bbox, target_mask]: rois float32 [B, T, 4] normalized,
        target_class_ids int32 [B, T] (0 for negatives and padding), target_bbox float32
        [B, T, 4] (dy, dx, log(dh), log(dw)) / std (0 except positives), target_mask float32
        [B, T, MH, MW] in {0, 1}; with `nucleus_masks` a fifth, target_nucleus_mask float32
        [B, T, MH, MW] in {0, 1} (0 except positives).
    """

    def __init__(self, train_rois_per_image, roi_positive_ratio, bbox_std_dev, mask_shape, use_mini_mask,
                 seed=None, nucleus_masks=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.train_rois_per_image = int(train_rois_per_image)
        self.roi_positive_ratio = float(roi_positive_ratio)
        self.bbox_std_dev = [float(v) for v in np.asarray(bbox_std_dev).reshape(-1)]
        self.mask_shape = tuple(int(v) for v in mask_shape)
        self.use_mini_mask = bool(use_mini_mask)
        self.seed = None if seed is None else int(seed)
        self.nucleus_masks = bool(nucleus_masks)
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"DetectionTargetLayer bbox_std_dev={bbox_std_dev!r}: give four numbers")
        if int(self.train_rois_per_image * self.roi_positive_ratio) < 1:
            raise ValueError("DetectionTargetLayer: train_rois_per_image * roi_positive_ratio must be >= 1")

    def _sample(self, indices, count):
        """`count` random entries of `indices`, returned in ascending order."""
        chosen = tf.random.shuffle(indices, seed=self.seed)[:count]
        return tf.sort(chosen)

    def _targets_one(self, args):
        proposals, gt_class_ids, gt_boxes, gt_masks = args[:4]
        # The cell masks (and, with nucleus masks, each cell's nucleus) as channels: [h, w, G, 1 or 2].
        # One crop_and_resize of both keeps the nucleus target in exactly the cell target's frame.
        gt_masks = tf.stack([gt_masks, args[4]], axis=-1) if self.nucleus_masks else gt_masks[..., tf.newaxis]
        rois_total = self.train_rois_per_image
        proposals, _ = trim_zeros_graph(proposals, name="trim_proposals")
        gt_boxes, non_zeros = trim_zeros_graph(gt_boxes, name="trim_gt_boxes")
        gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros)
        gt_masks = tf.boolean_mask(gt_masks, non_zeros, axis=2)
        crowd_boxes = tf.boolean_mask(gt_boxes, gt_class_ids < 0)
        non_crowd = gt_class_ids > 0
        gt_class_ids = tf.boolean_mask(gt_class_ids, non_crowd)
        gt_boxes = tf.boolean_mask(gt_boxes, non_crowd)
        gt_masks = tf.boolean_mask(gt_masks, non_crowd, axis=2)

        overlaps = overlaps_graph(proposals, gt_boxes)
        # reduce_max over zero GT boxes gives the lowest float: no positives, all negatives.
        roi_iou_max = tf.reduce_max(overlaps, axis=1)
        no_crowd = tf.reduce_max(overlaps_graph(proposals, crowd_boxes), axis=1) < CROWD_IOU
        positive = tf.where(roi_iou_max >= POSITIVE_IOU)[:, 0]
        negative = tf.where(tf.logical_and(roi_iou_max < POSITIVE_IOU, no_crowd))[:, 0]
        positive = self._sample(positive, int(rois_total * self.roi_positive_ratio))
        positive_count = tf.shape(positive)[0]
        # float32 maths as Matterport, so the counts agree with it bit for bit.
        ratio_inverse = tf.constant(1.0 / self.roi_positive_ratio, tf.float32)
        negative_count = tf.cast(ratio_inverse * tf.cast(positive_count, tf.float32), tf.int32) - positive_count
        negative = self._sample(negative, tf.minimum(negative_count, rois_total - positive_count))

        positive_rois = tf.gather(proposals, positive)
        negative_rois = tf.gather(proposals, negative)
        # A -1 column keeps argmax defined when there are no GT boxes (then there are no positives).
        positive_overlaps = tf.gather(overlaps, positive)
        positive_overlaps = tf.concat([positive_overlaps, -tf.ones([positive_count, 1])], axis=1)
        assignment = tf.argmax(positive_overlaps, axis=1, output_type=tf.int32)
        roi_gt_boxes = tf.gather(gt_boxes, assignment)
        roi_gt_class_ids = tf.cast(tf.gather(gt_class_ids, assignment), tf.int32)
        deltas = box_refinement_graph(positive_rois, roi_gt_boxes) / tf.constant(self.bbox_std_dev)

        masks = tf.gather(tf.transpose(tf.cast(gt_masks, tf.float32), [2, 0, 1, 3]), assignment)
        crop_boxes = _mini_mask_frame(positive_rois, roi_gt_boxes) if self.use_mini_mask else positive_rois
        masks = tf.round(tf.image.crop_and_resize(masks, crop_boxes, tf.range(positive_count), self.mask_shape))

        rois = tf.concat([positive_rois, negative_rois], axis=0)
        padding = rois_total - tf.shape(rois)[0]
        target_padding = rois_total - positive_count
        mask_padding = [[0, target_padding], [0, 0], [0, 0]]
        outputs = (tf.pad(rois, [[0, padding], [0, 0]]),
                   tf.pad(roi_gt_class_ids, [[0, target_padding]]),
                   tf.pad(deltas, [[0, target_padding], [0, 0]]),
                   tf.pad(masks[..., 0], mask_padding))
        if self.nucleus_masks:
            outputs += (tf.pad(masks[..., 1], mask_padding),)
        return outputs

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs[:4]
        total = self.train_rois_per_image
        mask_spec = tf.TensorSpec([total, *self.mask_shape], tf.float32)
        signature = (tf.TensorSpec([total, 4], tf.float32), tf.TensorSpec([total], tf.int32),
                     tf.TensorSpec([total, 4], tf.float32), mask_spec) + ((mask_spec,) if self.nucleus_masks else ())
        elements = (tf.cast(proposals, tf.float32), tf.cast(gt_class_ids, tf.int32),
                    tf.cast(gt_boxes, tf.float32), tf.cast(gt_masks, tf.bool))
        if self.nucleus_masks:
            if len(inputs) < 5:
                raise ValueError("DetectionTargetLayer(nucleus_masks=True) takes a fifth input, gt_nucleus_masks")
            elements += (tf.cast(inputs[4], tf.bool),)
        outputs = tf.map_fn(self._targets_one, elements, fn_output_signature=signature)
        batch = proposals.shape[0]
        for tensor, spec in zip(outputs, signature):
            tensor.set_shape([batch, *spec.shape])
        return list(outputs)

    def compute_output_shape(self, input_shape):
        batch, total = input_shape[0][0], self.train_rois_per_image
        shapes = [(batch, total, 4), (batch, total), (batch, total, 4), (batch, total, *self.mask_shape)]
        return shapes + [(batch, total, *self.mask_shape)] * self.nucleus_masks

    def get_config(self):
        config = super().get_config()
        config.update(train_rois_per_image=self.train_rois_per_image, roi_positive_ratio=self.roi_positive_ratio,
                      bbox_std_dev=self.bbox_std_dev, mask_shape=list(self.mask_shape),
                      use_mini_mask=self.use_mini_mask, seed=self.seed, nucleus_masks=self.nucleus_masks)
        return config


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Matterport's per-image target function: `DetectionTargetLayer`'s rules for one image.

    Args:
        proposals: [N, 4] normalized proposals (zero rows are padding).
        gt_class_ids: [G] int class ids (0 padding, < 0 crowd).
        gt_boxes: [G, 4] normalized GT boxes.
        gt_masks: [h, w, G] bool masks (mini masks with USE_MINI_MASK).
        config: a `Config` (TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, BBOX_STD_DEV, MASK_SHAPE,
            USE_MINI_MASK).

    Returns:
        rois float32 [T, 4], class_ids int32 [T], deltas float32 [T, 4], masks float32 [T, MH, MW]
        (tensors, zero-padded; see `DetectionTargetLayer`).
    """
    layer = DetectionTargetLayer(config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV,
                                 config.MASK_SHAPE, config.USE_MINI_MASK)
    return layer._targets_one((tf.cast(proposals, tf.float32), tf.cast(gt_class_ids, tf.int32),
                               tf.cast(gt_boxes, tf.float32), tf.cast(gt_masks, tf.bool)))

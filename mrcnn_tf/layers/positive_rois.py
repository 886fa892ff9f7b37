"""The ROI slots the mask head must see in training: the positive ones, however many there are."""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class PositiveROIs(keras.layers.Layer):
    """Keep the first P ROI slots, P = the largest number of positive ROIs of any image in the batch.

    `DetectionTargetLayer` puts each image's positive ROIs first (then negatives, then zero padding),
    and only positive ROIs carry a mask loss, so the mask head needs the first P slots and nothing
    else. P is at most `max_slots` (int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)) and usually far
    fewer: a smear field with two cells gives a few dozen positives out of 168 slots at Matterport's
    settings, and the mask head (four 3x3 convs on 14x14 crops) was the largest cost of a CPU training
    step. P is rounded up to a power of two (capped at `max_slots`) so that the head sees a few shapes
    only, and is at least 1 so the head never runs on an empty batch; the extra slots hold negatives or
    padding (class 0) and carry no loss.

    Args:
        max_slots: the positive capacity of the target layer.
        **kwargs: Layer arguments.

    Call arguments:
        inputs: [rois [B, T, 4], target_class_ids [B, T] int (0 = negative or padding),
            target_mask [B, T, h, w], and optionally more per-ROI targets such as target_nucleus_mask
            [B, T, h, w] (NUCLEUS_MASKS)].

    Returns:
        rois [B, P, 4] and target_mask [B, P, h, w] (then the first P slots of each further input): with
        n = max_b #positives(b), P = min(max_slots, the smallest power of two >= max(n, 1)).
    """

    def __init__(self, max_slots, **kwargs):
        super().__init__(**kwargs)
        self.max_slots = int(max_slots)

    def call(self, inputs):
        rois, target_class_ids, target_mask = inputs[:3]
        positives = tf.reduce_sum(tf.cast(target_class_ids > 0, tf.int32), axis=1)
        count = tf.clip_by_value(tf.reduce_max(positives), 1, self.max_slots)
        # Round up to a power of two (at most max_slots): a handful of shapes, not one per step. Every
        # new shape costs oneDNN a new kernel and the allocator fresh pages (a step ran 2x slower).
        bucket = tf.bitwise.left_shift(1, tf.cast(tf.math.ceil(tf.math.log(tf.cast(count, tf.float32)) /
                                                               tf.math.log(2.0) - 1e-6), tf.int32))
        count = tf.minimum(tf.maximum(bucket, count), self.max_slots)
        return (rois[:, :count], target_mask[:, :count]) + tuple(more[:, :count] for more in inputs[3:])

    def compute_output_shape(self, input_shape):
        rois, _, *masks = input_shape
        return ((rois[0], None, *rois[2:]),) + tuple((mask[0], None, *mask[2:]) for mask in masks)

    def get_config(self):
        return {**super().get_config(), "max_slots": self.max_slots}

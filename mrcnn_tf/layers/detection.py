"""Final detections: refine the head's boxes, drop background / weak ones, NMS per class (or across classes)."""
import keras
import numpy as np
import tensorflow as tf

from mrcnn_tf.ops.graph import apply_box_deltas_graph, clip_boxes_graph, norm_boxes_graph, overlaps_graph
from mrcnn_tf.ops.graph import parse_image_meta_graph


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class DetectionLayer(keras.layers.Layer):
    """Turn ROIs and head outputs into detections (Matterport's refine_detections_graph, batched).

    Per image: each ROI takes its arg-max class and score, is refined by that class's deltas
    times `bbox_std_dev` and clipped to the image window (normalized, from image_meta); ROIs of
    class 0 or with score < `detection_min_confidence` are dropped; NMS runs per class (boxes of
    different classes never suppress each other; IoU > threshold suppresses); the best
    `detection_max_instances` by score are kept, zero-padded. One NMS over a class-masked IoU
    matrix gives the same set as Matterport's map over classes. With `class_agnostic_nms` one NMS
    runs over all classes instead, so one object is never reported under two types (a cell is
    one type; Matterport's COCO default lets a "cup" and a "bowl" share a box). Images run in
    `tf.map_fn`.

    Args:
        bbox_std_dev: four numbers that scale the head's deltas (BBOX_STD_DEV).
        detection_min_confidence: minimum class score (DETECTION_MIN_CONFIDENCE).
        detection_max_instances: D, detections per image (DETECTION_MAX_INSTANCES).
        detection_nms_threshold: per-class NMS IoU threshold (DETECTION_NMS_THRESHOLD).
        class_agnostic_nms: suppress overlapping boxes whatever their classes (DETECTION_NMS_CLASS_AGNOSTIC).
        **kwargs: Layer arguments (name, dtype...); dtype defaults to float32.

    Call arguments:
        inputs: [rois, mrcnn_class, mrcnn_bbox, image_meta]: rois [B, N, 4] normalized,
            mrcnn_class [B, N, NC] probabilities, mrcnn_bbox [B, N, NC, 4] deltas,
            image_meta [B, META] (window in pixels of the molded image).

    Returns:
        float32 [B, D, 6] rows (y1, x1, y2, x2 normalized, class_id, score) in descending score
        order; zero rows after the last detection.
    """

    def __init__(self, bbox_std_dev, detection_min_confidence, detection_max_instances, detection_nms_threshold,
                 class_agnostic_nms=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bbox_std_dev = [float(v) for v in np.asarray(bbox_std_dev).reshape(-1)]
        self.detection_min_confidence = float(detection_min_confidence)
        self.detection_max_instances = int(detection_max_instances)
        self.detection_nms_threshold = float(detection_nms_threshold)
        self.class_agnostic_nms = bool(class_agnostic_nms)
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"DetectionLayer bbox_std_dev={bbox_std_dev!r}: give four numbers")

    def _refine_one(self, args):
        rois, probs, deltas, window = args
        class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
        class_scores = tf.gather(probs, class_ids, batch_dims=1)
        class_deltas = tf.gather(deltas, class_ids, batch_dims=1)
        boxes = apply_box_deltas_graph(rois, class_deltas * tf.constant(self.bbox_std_dev))
        boxes = clip_boxes_graph(boxes, window)

        # Non-finite coordinates (a non-finite delta from a diverged network) are never a detection.
        finite = tf.reduce_all(tf.math.is_finite(boxes), axis=1)
        keep = tf.where(tf.logical_and(tf.logical_and(class_ids > 0, class_scores >= self.detection_min_confidence),
                                       finite))[:, 0]
        kept_ids = tf.gather(class_ids, keep)
        kept_scores = tf.gather(class_scores, keep)
        kept_boxes = tf.gather(boxes, keep)
        overlaps = overlaps_graph(kept_boxes, kept_boxes)
        if not self.class_agnostic_nms:
            # Zero IoU across classes makes one greedy NMS equal to a separate NMS per class.
            same_class = tf.equal(kept_ids[:, tf.newaxis], kept_ids[tf.newaxis, :])
            overlaps = tf.where(same_class, overlaps, 0.0)
        # The selection comes back in descending score order, so the first D are the top D.
        selected = tf.image.non_max_suppression_overlaps(
            overlaps, kept_scores, self.detection_max_instances, overlap_threshold=self.detection_nms_threshold)
        keep = tf.gather(keep, selected)
        detections = tf.concat([tf.gather(boxes, keep),
                                tf.cast(tf.gather(class_ids, keep), tf.float32)[:, tf.newaxis],
                                tf.gather(class_scores, keep)[:, tf.newaxis]], axis=1)
        padding = self.detection_max_instances - tf.shape(detections)[0]
        return tf.pad(detections, [[0, padding], [0, 0]])

    def call(self, inputs):
        rois, mrcnn_class, mrcnn_bbox, image_meta = inputs
        meta = parse_image_meta_graph(tf.cast(image_meta, tf.float32))
        windows = norm_boxes_graph(meta["window"], meta["image_shape"][:, :2])
        detections = tf.map_fn(
            self._refine_one,
            (tf.cast(rois, tf.float32), tf.cast(mrcnn_class, tf.float32), tf.cast(mrcnn_bbox, tf.float32), windows),
            fn_output_signature=tf.TensorSpec([self.detection_max_instances, 6], tf.float32))
        detections.set_shape([rois.shape[0], self.detection_max_instances, 6])
        return detections

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.detection_max_instances, 6)

    def get_config(self):
        config = super().get_config()
        config.update(bbox_std_dev=self.bbox_std_dev, detection_min_confidence=self.detection_min_confidence,
                      detection_max_instances=self.detection_max_instances,
                      detection_nms_threshold=self.detection_nms_threshold,
                      class_agnostic_nms=self.class_agnostic_nms)
        return config


def refine_detections_graph(rois, probs, deltas, window, config):
    """Matterport's per-image detection function: `DetectionLayer`'s rules for one image.

    Args:
        rois: [N, 4] normalized ROIs.
        probs: [N, NUM_CLASSES] class probabilities.
        deltas: [N, NUM_CLASSES, 4] class-specific box deltas.
        window: [4] normalized (y1, x1, y2, x2) of the image inside the padded input.
        config: a `Config` (BBOX_STD_DEV, DETECTION_MIN_CONFIDENCE, DETECTION_MAX_INSTANCES,
            DETECTION_NMS_THRESHOLD, DETECTION_NMS_CLASS_AGNOSTIC).

    Returns:
        float32 tensor [DETECTION_MAX_INSTANCES, 6] of (y1, x1, y2, x2 normalized, class_id, score),
        best first, zero rows after the last detection.
    """
    layer = DetectionLayer(config.BBOX_STD_DEV, config.DETECTION_MIN_CONFIDENCE, config.DETECTION_MAX_INSTANCES,
                           config.DETECTION_NMS_THRESHOLD,
                           class_agnostic_nms=getattr(config, "DETECTION_NMS_CLASS_AGNOSTIC", False))
    return layer._refine_one((tf.cast(rois, tf.float32), tf.cast(probs, tf.float32), tf.cast(deltas, tf.float32),
                              tf.cast(window, tf.float32)))

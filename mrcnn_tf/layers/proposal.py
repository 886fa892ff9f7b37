"""RPN proposals: score, refine, clip and non-max-suppress the anchors of every image."""
import keras
import numpy as np
import tensorflow as tf

from mrcnn_tf.ops.graph import apply_box_deltas_graph, clip_boxes_graph


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class ProposalLayer(keras.layers.Layer):
    """Region proposals from the RPN outputs (Matterport's ProposalLayer, batched).

    Per image: foreground score of every anchor, deltas times `rpn_bbox_std_dev`, keep the top
    ``min(pre_nms_limit, A)`` anchors by score, apply their deltas, clip to the image [0, 1],
    greedy NMS (IoU > `nms_threshold` suppresses) up to `proposal_count` boxes, zero-pad. Images
    are processed with `tf.map_fn`, so the batch size is not baked into the graph.

    Args:
        proposal_count: boxes kept per image (POST_NMS_ROIS_TRAINING / _INFERENCE).
        nms_threshold: IoU above which a lower-scored box is suppressed (RPN_NMS_THRESHOLD).
        pre_nms_limit: anchors kept by score before NMS (PRE_NMS_LIMIT).
        rpn_bbox_std_dev: four numbers that scale the RPN deltas (RPN_BBOX_STD_DEV).
        **kwargs: Layer arguments (name, dtype...); dtype defaults to float32 (box maths stay
            float32 under mixed precision).

    Call arguments:
        inputs: [rpn_class, rpn_bbox, anchors]: rpn_class [B, A, 2] (bg, fg) probabilities,
            rpn_bbox [B, A, 4] deltas (dy, dx, log(dh), log(dw)), anchors [B, A, 4] normalized.

    Returns:
        float32 [B, proposal_count, 4] normalized (y1, x1, y2, x2) proposals in descending score
        order, zero rows at the end when fewer survive NMS.
    """

    def __init__(self, proposal_count, nms_threshold, pre_nms_limit, rpn_bbox_std_dev, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(pre_nms_limit)
        self.rpn_bbox_std_dev = [float(v) for v in np.asarray(rpn_bbox_std_dev).reshape(-1)]
        if len(self.rpn_bbox_std_dev) != 4:
            raise ValueError(f"ProposalLayer rpn_bbox_std_dev={rpn_bbox_std_dev!r}: give four numbers")

    def _nms_one(self, args):
        boxes, scores = args
        keep = tf.image.non_max_suppression(boxes, scores, self.proposal_count, self.nms_threshold)
        proposals = tf.gather(boxes, keep)
        padding = self.proposal_count - tf.shape(proposals)[0]
        return tf.pad(proposals, [[0, padding], [0, 0]])

    def call(self, inputs):
        rpn_class, rpn_bbox, anchors = inputs
        scores = tf.cast(rpn_class[:, :, 1], tf.float32)
        deltas = tf.cast(rpn_bbox, tf.float32) * tf.constant(self.rpn_bbox_std_dev, shape=[1, 1, 4])
        anchors = tf.cast(anchors, tf.float32)
        # Keep only the best anchors before the (costly) box maths and NMS.
        limit = tf.minimum(self.pre_nms_limit, tf.shape(anchors)[1])
        top = tf.math.top_k(scores, k=limit, sorted=True).indices
        scores = tf.gather(scores, top, batch_dims=1)
        deltas = tf.gather(deltas, top, batch_dims=1)
        anchors = tf.gather(anchors, top, batch_dims=1)
        boxes = apply_box_deltas_graph(anchors, deltas)
        boxes = clip_boxes_graph(boxes, tf.constant([0.0, 0.0, 1.0, 1.0]))
        proposals = tf.map_fn(self._nms_one, (boxes, scores),
                              fn_output_signature=tf.TensorSpec([self.proposal_count, 4], tf.float32))
        proposals.set_shape([rpn_class.shape[0], self.proposal_count, 4])
        return proposals

    # ------------------------------------------------------------------ notebooks
    # The intermediate values Matterport's notebooks fetch by TF1 op name ("ROI/refined_anchors:0");
    # `MaskRCNN.ancestor` maps those names onto these keys.
    INSPECTION_STAGES = ("pre_nms_anchors", "refined_anchors", "refined_anchors_clipped", "rpn_non_max_suppression")

    def inspection_stages(self, inputs):
        """The steps of `call` for the same inputs, computed eagerly one image at a time (notebooks only).

        Kept apart from `call`, so the model's graph and speed do not depend on it; the tests check that
        its proposals equal `call`'s.

        Args:
            inputs: [rpn_class, rpn_bbox, anchors] values (arrays or tensors) as `call` takes them.

        Returns:
            dict of numpy arrays, K = min(pre_nms_limit, A): pre_nms_anchors [B, K, 4] (the best-scored
            anchors, best first, normalized), pre_nms_scores [B, K], refined_anchors [B, K, 4] (after their
            deltas), refined_anchors_clipped [B, K, 4] (clipped to [0, 1]), rpn_non_max_suppression int32
            [B, proposal_count] (rows of the K kept by NMS, best first; -1 pads) and proposals
            [B, proposal_count, 4] (`call`'s output).
        """
        rpn_class, rpn_bbox, anchors = (np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in inputs)
        limit = min(self.pre_nms_limit, anchors.shape[1])
        stages = {key: [] for key in ("pre_nms_anchors", "pre_nms_scores", "refined_anchors",
                                      "refined_anchors_clipped", "rpn_non_max_suppression", "proposals")}
        for scores, deltas, image_anchors in zip(rpn_class[:, :, 1], rpn_bbox, anchors):
            top = tf.math.top_k(scores, k=limit, sorted=True).indices
            deltas = tf.gather(deltas * np.float32(self.rpn_bbox_std_dev), top)
            pre_nms = tf.gather(image_anchors, top)
            refined = apply_box_deltas_graph(pre_nms, deltas)
            clipped = clip_boxes_graph(refined, tf.constant([0.0, 0.0, 1.0, 1.0]))
            top_scores = tf.gather(scores, top)
            keep = tf.image.non_max_suppression(clipped, top_scores, self.proposal_count, self.nms_threshold)
            padding = self.proposal_count - int(keep.shape[0])
            for key, value in (("pre_nms_anchors", pre_nms), ("pre_nms_scores", top_scores),
                               ("refined_anchors", refined), ("refined_anchors_clipped", clipped),
                               ("rpn_non_max_suppression", tf.pad(keep, [[0, padding]], constant_values=-1)),
                               ("proposals", tf.pad(tf.gather(clipped, keep), [[0, padding], [0, 0]]))):
                stages[key].append(value.numpy())
        return {key: np.stack(values) for key, values in stages.items()}

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.proposal_count, 4)

    def get_config(self):
        config = super().get_config()
        config.update(proposal_count=self.proposal_count, nms_threshold=self.nms_threshold,
                      pre_nms_limit=self.pre_nms_limit, rpn_bbox_std_dev=self.rpn_bbox_std_dev)
        return config

"""`MaskRCNNTrainModel`: the training graph as a Keras 3 functional model that computes its own loss.

Matterport wired its five losses in with ``add_loss`` and ``metrics_tensors`` on symbolic tensors,
which Keras 3 no longer has. Here the graph only produces predictions and targets (a dict, see
docs/architecture.md "Graph contract") and `compute_loss` turns them into Matterport's loss::

    loss = sum(LOSS_WEIGHTS[name] * name_loss) + sum(WEIGHT_DECAY * sum(w^2) / size(w))

The stock Keras 3 `train_step` / `test_step` do the rest (gradient tape, loss scaling for mixed
precision, ``optimizer.apply``, per-replica loss scaling under `tf.distribute`), so
MirroredStrategy and ``jit_compile`` work unchanged. Each weighted loss is reported under its
Matterport name (``rpn_class_loss`` ... ``mrcnn_mask_loss``, ``val_`` prefixed in validation)
beside ``loss``; the progress bar, CSVLogger and TensorBoard pick them up from the logs.

Gradient clipping: Matterport used Keras 2.0.8's ``SGD(clipnorm=GRADIENT_CLIP_NORM)``, which
scaled all gradients together by their *global* norm (later tf.keras made `clipnorm` per tensor).
The Keras 3 equivalent is the optimizer's ``global_clipnorm``; `training.build_optimizer` sets it.
Clipping belongs in the optimizer rather than here because it must see unscaled gradients
(mixed precision's LossScaleOptimizer unscales before its inner optimizer clips).
"""
import keras
import tensorflow as tf

from mrcnn_tf.nets import losses as L
from mrcnn_tf.config import LOSS_NAMES, NUCLEUS_LOSS_NAME
from mrcnn_tf.engine.distribute import worker_count
from mrcnn_tf.errors import ConfigError

# Graph-contract order of the training inputs (Matterport's order).
INPUT_NAMES = ("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
               "input_gt_class_ids", "input_gt_boxes", "input_gt_masks")
# image_meta = id(1) + original shape(3) + molded shape(3) + window(4) + scale(1) + active ids(NC).
META_ACTIVE_CLASS_START = 12


class MaskRCNNTrainModel(keras.Model):
    """Functional Mask R-CNN training model whose `compute_loss` applies Matterport's losses.

    Construct it like any functional model, then tell it the loss settings::

        model = MaskRCNNTrainModel(inputs=inputs, outputs=outputs, name="mask_rcnn")
        model.configure_losses(config)   # LOSS_WEIGHTS, WEIGHT_DECAY

    Args:
        inputs: the 7 training inputs in `INPUT_NAMES` order (list).
        outputs: dict with at least rpn_class_logits, rpn_bbox, mrcnn_class_logits, mrcnn_bbox,
            mrcnn_mask, target_class_ids, target_bbox, target_mask; with mrcnn_nucleus_mask and
            target_nucleus_mask too (NUCLEUS_MASKS), a sixth loss, ``mrcnn_nucleus_mask_loss``, is added.
        name: model name; "mask_rcnn" by convention.
        loss_weights: optional dict loss name -> float (default 1.0 each).
        weight_decay: optional float, the L2 factor (default 0.0 until configured).

    Call arguments:
        x: the 7 inputs as a list/tuple in `INPUT_NAMES` order, or a dict keyed by those names.
        training: bool; forwarded to the layers (frozen BatchNorm ignores it by design).

    Returns:
        The output dict of the graph. `compute_loss` returns the scalar total loss (scaled by
        1/replicas under tf.distribute, as Keras' own losses are).
    """

    def __init__(self, *args, loss_weights=None, weight_decay=0.0, **kwargs):
        outputs = kwargs.get("outputs", args[1] if len(args) > 1 else None)
        super().__init__(*args, **kwargs)
        # The nucleus loss exists only when the graph has the nucleus head (Config.NUCLEUS_MASKS).
        nucleus = isinstance(outputs, dict) and "mrcnn_nucleus_mask" in outputs
        self.loss_names = LOSS_NAMES + ((NUCLEUS_LOSS_NAME,) if nucleus else ())
        self.mrcnn_loss_weights = {name: 1.0 for name in self.loss_names}
        self.set_loss_weights(loss_weights or {})
        self.weight_decay = float(weight_decay)
        # The functional constructor locks layer tracking; metrics are not layers of the graph.
        self._tracker.unlock()
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]
        self._tracker.lock()

    # ------------------------------------------------------------------ settings
    def set_loss_weights(self, loss_weights):
        """Update the per-loss weights; unknown names are a ConfigError (a nucleus weight without the
        nucleus head is ignored: Config.NUCLEUS_MASKS is off)."""
        unknown = set(loss_weights) - set(LOSS_NAMES) - {NUCLEUS_LOSS_NAME}
        if unknown:
            raise ConfigError(f"LOSS_WEIGHTS has unknown loss names {sorted(unknown)}: "
                              f"use {', '.join(self.loss_names)}")
        self.mrcnn_loss_weights.update({k: float(v) for k, v in loss_weights.items() if k in self.loss_names})

    def configure_losses(self, config):
        """Take LOSS_WEIGHTS and WEIGHT_DECAY from a `Config`; returns self."""
        self.set_loss_weights(config.LOSS_WEIGHTS)
        self.weight_decay = float(config.WEIGHT_DECAY)
        return self

    # ------------------------------------------------------------------ losses
    @staticmethod
    def _inputs_by_name(x):
        if isinstance(x, dict):
            missing = [n for n in INPUT_NAMES[1:4] if n not in x]
            if missing:
                raise ValueError(f"training inputs lack {missing}; expected keys {INPUT_NAMES}")
            return x
        if len(x) < len(INPUT_NAMES):
            raise ValueError(f"the training model takes {len(INPUT_NAMES)} inputs {INPUT_NAMES}, got {len(x)}")
        return dict(zip(INPUT_NAMES, x))

    def mrcnn_losses(self, x, y_pred):
        """The five weighted Matterport losses (six with the nucleus head) as a dict name -> scalar float32 tensor."""
        inputs = self._inputs_by_name(x)
        active_class_ids = tf.cast(inputs["input_image_meta"], tf.float32)[:, META_ACTIVE_CLASS_START:]
        raw = {
            "rpn_class_loss": L.rpn_class_loss_graph(inputs["input_rpn_match"], y_pred["rpn_class_logits"]),
            "rpn_bbox_loss": L.rpn_bbox_loss_graph(inputs["input_rpn_bbox"], inputs["input_rpn_match"],
                                                   y_pred["rpn_bbox"]),
            "mrcnn_class_loss": L.mrcnn_class_loss_graph(y_pred["target_class_ids"],
                                                         y_pred["mrcnn_class_logits"], active_class_ids),
            "mrcnn_bbox_loss": L.mrcnn_bbox_loss_graph(y_pred["target_bbox"], y_pred["target_class_ids"],
                                                       y_pred["mrcnn_bbox"]),
            # The mask head ran on the first (positive) ROI slots only: see nets/graph.py.
            "mrcnn_mask_loss": L.mrcnn_mask_loss_graph(
                y_pred["target_mask"], y_pred["target_class_ids"][:, :tf.shape(y_pred["mrcnn_mask"])[1]],
                y_pred["mrcnn_mask"]),
        }
        if NUCLEUS_LOSS_NAME in self.loss_names:
            # The nucleus head shares the mask head's (positive) ROI slots.
            raw[NUCLEUS_LOSS_NAME] = L.mrcnn_nucleus_mask_loss_graph(
                y_pred["target_nucleus_mask"],
                y_pred["target_class_ids"][:, :tf.shape(y_pred["mrcnn_nucleus_mask"])[1]],
                y_pred["mrcnn_nucleus_mask"])
        # Matterport reports (and sums) each loss already multiplied by its LOSS_WEIGHTS entry.
        return {name: raw[name] * self.mrcnn_loss_weights[name] for name in self.loss_names}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted sum of the five (six) losses + L2 decay (+ any `add_loss` terms); updates trackers."""
        del y, sample_weight  # the targets are inputs of the graph, not Keras `y`
        weighted = self.mrcnn_losses(x, y_pred)
        total = tf.add_n(list(weighted.values()))
        if self.weight_decay:
            total += L.l2_weight_decay(self.trainable_weights, self.weight_decay)
        for extra in self.losses:
            total += tf.reduce_sum(tf.cast(extra, tf.float32))
        for tracker in self.loss_trackers:
            tracker.update_state(weighted[tracker.name])
        # Keras divides each replica's loss by the replica count so that summed gradients average.
        return _scale_for_replicas(total)

    def train_step(self, data):
        return _reducible_across_workers(super().train_step(data))

    def test_step(self, data):
        return _reducible_across_workers(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' build-before-fit under a strategy, with one replica's slice as the sample batch.

        Keras 3.15 averages a distributed batch over the replicas (``strategy.reduce("MEAN")``) only
        to get shapes for the symbolic build; that fails on the bool / int inputs (gt masks, class
        ids) with "AddN ... bool". Any replica's slice has the right shapes and dtypes.
        """
        if self._distribute_strategy is not None and iterator is not None:
            strategy = self._distribute_strategy
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _reducible_across_workers(logs):
    """The step's logs, shaped so that Keras can average them over the replicas of several workers.

    Keras 3.15 reduces multi-worker logs with ``strategy.reduce("MEAN", value, axis=0)``, which fails
    on scalars ("Invalid reduction dimension 0 for input with 0 dimensions"); as [1] vectors each is
    averaged over all replicas and comes back a scalar. One worker: unchanged.
    """
    if worker_count(tf.distribute.get_strategy()) <= 1:
        return logs
    return {name: tf.reshape(value, [1]) if tf.is_tensor(value) and value.shape.rank == 0 else value
            for name, value in logs.items()}


def _scale_for_replicas(loss):
    """Divide by the number of replicas under tf.distribute (no-op otherwise), as Keras losses do."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / float(replicas) if replicas > 1 else loss

"""`data_generator`: Matterport's Python generator of training batches, as a thin loop over `DataGenerator`.

Training uses `DataGenerator` (a Keras 3 `PyDataset`); this generator is for code written against
Matterport's ``modellib.data_generator``, notebooks above all::

    g = modellib.data_generator(dataset, config, shuffle=True, random_rois=2000, batch_size=4,
                                detection_targets=True)
    inputs, [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask] = next(g)

With Config.NUCLEUS_MASKS the inputs carry `DataGenerator`'s gt_nucleus_masks and the outputs gain the
nucleus targets, each after Matterport's own; without it both are exactly Matterport's.
"""
import warnings

import numpy as np

from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.roi_targets import build_detection_targets

# Seed-stream tag of the head-target sampling (DataGenerator's per-image draws use tag 1).
_TARGETS_STREAM = 2


def data_generator(dataset, config, shuffle=True, augment=False, augmentation=None, random_rois=0, batch_size=1,
                   detection_targets=False, no_augmentation_sources=None, seed=None):
    """An endless generator of ``(inputs, outputs)`` training batches (Matterport's ``data_generator``).

    Batches are `DataGenerator`'s (same images, order, augmentation and RPN targets for a seed);
    passes over the dataset follow each other without end. Invalid datasets fail here, not at the
    first ``next``.

    Args:
        dataset: a prepared `Dataset`.
        config: a `Config`.
        shuffle: shuffle the image order every pass.
        augment: Matterport's old flag (random horizontal flips).
        augmentation: imgaug augmenter or None.
        random_rois: if > 0, also yield that many random pixel ROIs per image (`generate_random_rois`).
        batch_size: images per batch (Matterport's default 1, not BATCH_SIZE).
        detection_targets: with random_rois, also yield the heads' targets for those ROIs
            (`build_detection_targets`); without random_rois there are no ROIs and it is ignored,
            as in Matterport (with a warning).
        no_augmentation_sources: dataset sources whose images are never augmented.
        seed: seed of the order and every random draw (None: a fresh random one, as Matterport).

    Yields:
        inputs: list [images float32 [B, H, W, 3] molded, image_meta [B, META], rpn_match int32 [B, A, 1],
            rpn_bbox [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4], gt_class_ids int32 [B, MAX_GT_INSTANCES],
            gt_boxes [B, MAX_GT_INSTANCES, 4] pixels, gt_masks bool [B, h, w, MAX_GT_INSTANCES]]
            (`DataGenerator`'s seven), then rpn_rois [B, random_rois, 4] with random_rois, then
            gt_nucleus_masks bool (the layout of gt_masks) with Config.NUCLEUS_MASKS, then
            rois [B, TRAIN_ROIS_PER_IMAGE, 4] (the ROIs chosen for the targets) with detection_targets.
        outputs: [] or, with detection targets, [mrcnn_class_ids int32 [B, T, 1],
            mrcnn_bbox float32 [B, T, NUM_CLASSES, 4], mrcnn_mask float32 [B, T, mh, mw, NUM_CLASSES]]
            (Matterport's extra last axis on the class ids included); with Config.NUCLEUS_MASKS a fourth,
            mrcnn_nucleus_mask float32 [B, T, mh, mw, 1] in {0, 1} (`build_detection_targets`).
    """
    if detection_targets and not random_rois:
        warnings.warn("data_generator(detection_targets=True) builds the heads' targets for random ROIs; with "
                      "random_rois=0 there are none, so no targets are yielded (set random_rois, e.g. 2000)",
                      stacklevel=2)
    generator = DataGenerator(dataset, config, shuffle=shuffle, augmentation=augmentation, augment=augment,
                              random_rois=random_rois, batch_size=batch_size, seed=seed,
                              no_augmentation_sources=no_augmentation_sources)
    return _batches(generator, config, bool(random_rois and detection_targets))


def _batches(generator, config, with_targets):
    while True:
        for index in range(len(generator)):
            inputs = list(generator.inputs(index))
            outputs = []
            if with_targets:
                rng = np.random.default_rng([generator.seed, generator.epoch, index, _TARGETS_STREAM])
                rois, class_ids, *targets = (np.stack(t) for t in zip(*[
                    _image_targets(inputs, b, config, rng) for b in range(generator.batch_size)]))
                inputs.append(rois)
                outputs = [class_ids[..., None], *targets]  # bboxes, masks (and nucleus masks)
            yield inputs, outputs
        generator.on_epoch_end()


def _image_targets(inputs, b, config, rng):
    """`build_detection_targets` for image `b` of a batch, its GT padding removed."""
    class_ids, boxes, masks, rpn_rois = inputs[4][b], inputs[5][b], inputs[6][b], inputs[7][b]
    real = class_ids != 0  # DataGenerator zero-pads; crowds (< 0) stay
    # With Config.NUCLEUS_MASKS, DataGenerator's last array (after rpn_rois) holds the nuclei.
    nuclei = inputs[8][b][:, :, real] if getattr(config, "NUCLEUS_MASKS", False) else None
    return build_detection_targets(rpn_rois, class_ids[real], boxes[real], masks[:, :, real], config, rng=rng,
                                   gt_nucleus_masks=nuclei)

"""A fixed, hand-made training batch for the tiny model (no data pipeline involved).

Images hold bright rectangles on a dark background; the targets follow Matterport's rules written
out plainly here (RPN: IoU >= 0.7 or best anchor positive, < 0.3 negative), so the loss tests do
not depend on `mrcnn_tf.data`.
"""
import numpy as np

from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn_tf.ops.boxes import box_refinement, compute_overlaps
from mrcnn_tf.ops.image import compose_image_meta
from mrcnn_tf.ops.masks import minimize_mask


def rpn_targets(anchors, gt_boxes, config, rng):
    """rpn_match [A] (1 / -1 / 0) and packed rpn_bbox [R, 4] (pixel boxes in, deltas / std out)."""
    overlaps = compute_overlaps(anchors, gt_boxes)
    best = overlaps.max(axis=1)
    match = np.zeros(len(anchors), np.int32)
    match[best < 0.3] = -1
    match[np.argmax(overlaps, axis=0)] = 1
    match[best >= 0.7] = 1
    rows = config.RPN_TRAIN_ANCHORS_PER_IMAGE
    pos = np.flatnonzero(match == 1)
    if len(pos) > rows // 2:
        match[rng.choice(pos, len(pos) - rows // 2, replace=False)] = 0
    neg = np.flatnonzero(match == -1)
    extra = len(neg) - (rows - int((match == 1).sum()))
    if extra > 0:
        match[rng.choice(neg, extra, replace=False)] = 0
    rpn_bbox = np.zeros((rows, 4), np.float32)
    pos = np.flatnonzero(match == 1)
    deltas = box_refinement(anchors[pos], gt_boxes[np.argmax(overlaps[pos], axis=1)])
    rpn_bbox[:len(pos)] = deltas / np.asarray(config.RPN_BBOX_STD_DEV, np.float32)
    return match, rpn_bbox


def random_rois(gt_boxes, count, size, rng):
    """Pixel ROIs: two jittered around each GT box (positives), the rest anywhere.

    Few positive candidates keep DetectionTargetLayer's random subsampling from changing the
    positives between steps, so a fixed batch gives (nearly) fixed head targets.
    """
    rois = []
    for i in range(count):
        if i < 2 * len(gt_boxes):
            y1, x1, y2, x2 = gt_boxes[i % len(gt_boxes)] + rng.integers(-3, 4, size=4)
        else:
            y1, x1 = rng.integers(0, size - 8, size=2)
            y2, x2 = y1 + rng.integers(6, size - y1 + 1), x1 + rng.integers(6, size - x1 + 1)
        y1, x1 = max(0, y1), max(0, x1)
        rois.append([y1, x1, max(y1 + 2, min(size, y2)), max(x1 + 2, min(size, x2))])
    return np.array(rois, np.float32)


def fixed_batch(config, seed=0, with_rois=False):
    """The 7 training inputs (+ input_roi when `with_rois`) for BATCH_SIZE images, as a list."""
    rng = np.random.default_rng(seed)
    size = int(config.IMAGE_SHAPE[0])
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                       compute_backbone_shapes(config, config.IMAGE_SHAPE),
                                       config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    columns = {k: [] for k in ("image", "meta", "match", "rpn_bbox", "ids", "boxes", "masks", "rois")}
    g = config.MAX_GT_INSTANCES
    for b in range(config.BATCH_SIZE):
        image = rng.integers(0, 40, size=(size, size, 3)).astype(np.float32)
        boxes = np.array([[6, 8, 30, 34], [34, 30, 58, 60]][:1 + b % 2], np.int32)
        ids = np.array([1 + (b % (config.NUM_CLASSES - 1)), config.NUM_CLASSES - 1][:len(boxes)], np.int32)
        full = np.zeros((size, size, len(boxes)), bool)
        for i, (y1, x1, y2, x2) in enumerate(boxes):
            full[y1:y2, x1:x2, i] = True
            full[y1:y1 + 4, x1:x1 + 4, i] = False  # a notch, so masks are not plain boxes
            image[full[..., i]] = [200, 120 + 40 * ids[i], 80]
        masks = minimize_mask(boxes, full, config.MINI_MASK_SHAPE) if config.USE_MINI_MASK else full
        match, rpn_bbox = rpn_targets(anchors, boxes.astype(np.float32), config, rng)
        padded_ids = np.zeros(g, np.int32)
        padded_ids[:len(ids)] = ids
        padded_boxes = np.zeros((g, 4), np.float32)
        padded_boxes[:len(boxes)] = boxes
        padded_masks = np.zeros(masks.shape[:2] + (g,), bool)
        padded_masks[..., :len(boxes)] = masks
        meta = compose_image_meta(b, image.shape, image.shape, (0, 0, size, size), 1.0,
                                  np.ones(config.NUM_CLASSES, np.int32))
        for key, value in zip(columns, (image - np.asarray(config.MEAN_PIXEL, np.float32), meta,
                                        match[:, None], rpn_bbox, padded_ids, padded_boxes, padded_masks,
                                        random_rois(boxes, config.POST_NMS_ROIS_TRAINING, size, rng))):
            columns[key].append(value)
    batch = [np.stack(columns[k]) for k in columns]
    batch[1] = batch[1].astype(np.float32)
    return batch if with_rois else batch[:7]

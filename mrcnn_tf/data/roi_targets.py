"""ROIs for the heads without the RPN, and the heads' targets for them, in numpy (Matterport's
`generate_random_rois` and `build_detection_targets`: the ``USE_RPN_ROIS = False`` path and the numpy twin of
`DetectionTargetLayer` that ``data_generator(..., detection_targets=True)`` yields for notebooks).

All boxes here are pixel boxes (y1, x1, y2, x2) with y2/x2 exclusive, in the resized (molded) image.
Every random choice comes from a numpy Generator passed in, so a seeded pipeline repeats exactly.
"""
import numpy as np

from mrcnn_tf.data.targets import CROWD_IOU, _rng
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.ops.boxes import box_refinement, compute_overlaps

ROI_POSITIVE_IOU = 0.5  # a head ROI with IoU >= 0.5 to a GT box is positive, below is negative


def generate_random_rois(image_shape, count, gt_class_ids, gt_boxes, rng=None):
    """Random ROIs for training the heads without the RPN (Matterport's `USE_RPN_ROIS = False` path).

    90% of them lie around the GT boxes (corners drawn within one box size of each box), the rest anywhere
    in the image.

    Args:
        image_shape: [H, W, ...] of the molded image.
        count: number of ROIs.
        gt_class_ids: [N] class ids (unused; Matterport's signature).
        gt_boxes: [N, 4] pixel GT boxes.
        rng: numpy Generator.

    Returns:
        int32 [count, 4] pixel boxes (y1, x1, y2, x2), each at least 1 px high and wide.
    """
    rng = _rng(rng)
    height, width = int(image_shape[0]), int(image_shape[1])
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    rois = np.zeros((count, 4), dtype=np.int32)
    per_box = int(0.9 * count / gt_boxes.shape[0]) if gt_boxes.shape[0] else 0
    for i, box in enumerate(gt_boxes):
        y1, x1, y2, x2 = (int(v) for v in box)
        h, w = y2 - y1, x2 - x1
        rois[i * per_box:(i + 1) * per_box] = _random_boxes(
            rng, per_box, max(y1 - h, 0), min(y2 + h, height), max(x1 - w, 0), min(x2 + w, width))
    used = per_box * gt_boxes.shape[0]
    rois[used:] = _random_boxes(rng, count - used, 0, height, 0, width)
    return rois


def _random_boxes(rng, count, y_lo, y_hi, x_lo, x_hi):
    """`count` boxes with both corners uniform in [y_lo, y_hi] x [x_lo, x_hi] and sides >= 1 px."""
    if count <= 0:
        return np.zeros((0, 4), dtype=np.int32)
    y_hi, x_hi = max(y_hi, y_lo + 1), max(x_hi, x_lo + 1)
    ys = np.sort(rng.integers(y_lo, y_hi + 1, size=(count, 2)), axis=1)
    xs = np.sort(rng.integers(x_lo, x_hi + 1, size=(count, 2)), axis=1)
    # A zero side (both corners equal) is widened by one pixel, inside the range.
    ys[:, 1] = np.where(ys[:, 1] == ys[:, 0], ys[:, 0] + 1, ys[:, 1])
    xs[:, 1] = np.where(xs[:, 1] == xs[:, 0], xs[:, 0] + 1, xs[:, 1])
    ys[:, 0] = np.minimum(ys[:, 0], y_hi - 1)
    ys[:, 1] = np.minimum(ys[:, 1], y_hi)
    xs[:, 0] = np.minimum(xs[:, 0], x_hi - 1)
    xs[:, 1] = np.minimum(xs[:, 1], x_hi)
    return np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1).astype(np.int32)


def _graph_frame(boxes):
    """Pixel boxes (y2/x2 exclusive) in the frame the training graph computes IoU and deltas in.

    `NormBoxes` turns pixel y2/x2 into y2 - 1, x2 - 1 and divides by (H - 1, W - 1). IoU and box deltas
    do not change under that division, so on these boxes they equal the graph's values without the
    image size being known (mini masks do not tell it).
    """
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - np.array([0.0, 0.0, 1.0, 1.0])


def _sample_axis(low, high, count, size):
    """Sample positions of tf.image.crop_and_resize along one axis, as (floor, ceil, fraction, inside)."""
    if count == 1:
        points = np.array([0.5 * (low + high)])
    else:
        points = low + (high - low) * np.arange(count) / (count - 1)
    inside = (points >= 0) & (points <= size - 1)  # NaN (a degenerate GT box) counts as outside
    points = np.nan_to_num(points)
    floor = np.clip(np.floor(points), 0, size - 1).astype(np.int64)
    ceil = np.clip(np.ceil(points), 0, size - 1).astype(np.int64)
    return floor, ceil, points - np.floor(points), inside


def _crop_and_resize(mask, box, shape):
    """tf.image.crop_and_resize of one [H, W] mask, bilinear, outside samples 0.

    `box` (y1, x1, y2, x2) is in the mask's pixel coordinates and both ends are sampled, as the graph
    samples a normalized box.
    """
    mask = mask.astype(np.float64)
    top, bottom, fy, inside_y = _sample_axis(box[0], box[2], shape[0], mask.shape[0])
    left, right, fx, inside_x = _sample_axis(box[1], box[3], shape[1], mask.shape[1])
    upper = mask[top][:, left] * (1 - fx) + mask[top][:, right] * fx
    lower = mask[bottom][:, left] * (1 - fx) + mask[bottom][:, right] * fx
    out = upper * (1 - fy)[:, None] + lower * fy[:, None]
    return out * inside_y[:, None] * inside_x[None, :]


def _choose(rng, indices, count):
    """`count` random entries of `indices` (all of them if there are fewer), in ascending order."""
    if indices.size <= count:
        return indices
    return np.sort(rng.choice(indices, count, replace=False))


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=None, gt_nucleus_masks=None):
    """Targets of the classifier and mask heads for given ROIs, in numpy (Matterport's debugging twin).

    The numpy twin of `DetectionTargetLayer` that Matterport's ``data_generator(random_rois=...,
    detection_targets=True)`` yields for notebooks. Rules as the layer: a ROI is positive if its IoU
    with a GT box (class id > 0) is >= 0.5, negative if below 0.5 and it does not touch a crowd box
    (class id < 0, IoU >= 0.001); each positive takes its best GT box's class, deltas / BBOX_STD_DEV
    and mask (bilinear crop to MASK_SHAPE, rounded to {0, 1}; mini masks in the GT box's frame). IoU,
    deltas and mask crops are computed as the graph does on `NormBoxes`-normalized inputs, so they equal
    the layer's values (applied to pixel ROIs, the deltas land within a pixel of the GT box).
    Sampling as Matterport's numpy version: at most int(T * ROI_POSITIVE_RATIO) positives, negatives
    fill the other rows, and when there are too few ROIs the chosen negatives repeat (at random) so
    all T rows are ROIs; rows are zero only when there is no negative to repeat. With Config.NUCLEUS_MASKS
    each positive also takes its GT cell's nucleus, cropped with the same box as the cell's mask (as the
    layer's `target_nucleus_mask`).

    Args:
        rpn_rois: [N, 4] pixel ROIs (y1, x1, y2, x2), e.g. from `generate_random_rois`.
        gt_class_ids: [G] int class ids (0 padding, < 0 crowd).
        gt_boxes: [G, 4] pixel GT boxes.
        gt_masks: [h, w, G] bool, mini masks with USE_MINI_MASK, else full size.
        config: a `Config` (TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES, MASK_SHAPE,
            BBOX_STD_DEV, USE_MINI_MASK).
        rng: numpy Generator for the sampling.
        gt_nucleus_masks: with Config.NUCLEUS_MASKS (and only then), each GT instance's nucleus: bool, the
            layout of `gt_masks` (mini masks in the frame of the cell's box).

    Returns:
        rois [T, 4] (ROIs of `rpn_rois`, its dtype: positives first, in ROI order), class_ids int32 [T]
        (0 for negatives), bboxes float32 [T, NUM_CLASSES, 4] (deltas in the slot of the GT class),
        masks float32 [T, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES] (in the slot of the GT class); with
        Config.NUCLEUS_MASKS a fifth, nucleus_masks float32 [T, MASK_SHAPE[0], MASK_SHAPE[1], 1] in {0, 1}
        (the nucleus head's one class-agnostic channel; zero for negatives and padding).
    """
    rng = _rng(rng)
    rpn_rois = np.asarray(rpn_rois)
    if rpn_rois.ndim != 2 or rpn_rois.shape[1] != 4 or rpn_rois.shape[0] == 0:
        raise MrcnnError(f"build_detection_targets: rpn_rois of shape {rpn_rois.shape}; give [N, 4] pixel "
                         "boxes with N >= 1 (e.g. generate_random_rois)")
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1).astype(np.int64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_masks = np.asarray(gt_masks).astype(bool)
    if gt_masks.ndim != 3 or not gt_masks.shape[-1] == gt_boxes.shape[0] == gt_class_ids.shape[0]:
        raise MrcnnError(f"build_detection_targets: {gt_class_ids.shape[0]} class ids, {gt_boxes.shape[0]} boxes "
                         f"and masks of shape {gt_masks.shape}; give [G], [G, 4] and [h, w, G]")
    nucleus = bool(getattr(config, "NUCLEUS_MASKS", False))
    if nucleus != (gt_nucleus_masks is not None):
        raise MrcnnError("build_detection_targets: Config.NUCLEUS_MASKS is " + ("on: pass gt_nucleus_masks"
                         if nucleus else "off: set it to True for nucleus targets, or leave out gt_nucleus_masks"))
    if nucleus:
        gt_nucleus_masks = np.asarray(gt_nucleus_masks).astype(bool)
        if gt_nucleus_masks.shape != gt_masks.shape:
            raise MrcnnError(f"build_detection_targets: gt_nucleus_masks of shape {gt_nucleus_masks.shape} for "
                             f"masks of shape {gt_masks.shape}; give one nucleus per instance, the masks' layout")
    total = int(config.TRAIN_ROIS_PER_IMAGE)
    num_classes = int(config.NUM_CLASSES)
    mask_shape = tuple(int(v) for v in config.MASK_SHAPE)

    rois = _graph_frame(rpn_rois)
    real = gt_class_ids > 0
    crowd = gt_class_ids < 0
    class_ids, boxes, masks = gt_class_ids[real], _graph_frame(gt_boxes[real]), gt_masks[:, :, real]
    nuclei = gt_nucleus_masks[:, :, real] if nucleus else None
    overlaps = compute_overlaps(rois, boxes)  # [N, G]
    best_gt = overlaps.argmax(axis=1) if boxes.shape[0] else np.zeros(len(rois), dtype=np.int64)
    best_iou = overlaps.max(axis=1) if boxes.shape[0] else np.zeros(len(rois))
    touches_crowd = compute_overlaps(rois, _graph_frame(gt_boxes[crowd])).max(axis=1, initial=0.0) >= CROWD_IOU

    positive = _choose(rng, np.flatnonzero(best_iou >= ROI_POSITIVE_IOU), int(total * config.ROI_POSITIVE_RATIO))
    negative = _choose(rng, np.flatnonzero((best_iou < ROI_POSITIVE_IOU) & ~touches_crowd), total - positive.size)
    repeats = total - positive.size - negative.size
    if repeats > 0 and negative.size:
        negative = np.concatenate([negative, rng.choice(negative, repeats, replace=True)])
    keep = np.concatenate([positive, negative]).astype(np.int64)

    out_rois = np.zeros((total, 4), dtype=rpn_rois.dtype)
    out_rois[:keep.size] = rpn_rois[keep]
    out_class_ids = np.zeros(total, dtype=np.int32)
    out_bboxes = np.zeros((total, num_classes, 4), dtype=np.float32)
    out_masks = np.zeros((total, *mask_shape, num_classes), dtype=np.float32)
    out_nuclei = np.zeros((total, *mask_shape, 1), dtype=np.float32) if nucleus else None
    std_dev = np.asarray(config.BBOX_STD_DEV, dtype=np.float32)
    for row, roi_index in enumerate(positive):
        gt_index = best_gt[roi_index]
        class_id = int(class_ids[gt_index])
        roi, gt_box = rois[roi_index], boxes[gt_index]
        out_class_ids[row] = class_id
        out_bboxes[row, class_id] = box_refinement(roi[None], gt_box[None])[0] / std_dev
        mask = masks[:, :, gt_index]
        if config.USE_MINI_MASK:
            # A mini mask spans its GT box: express the ROI in that box's frame, then in mini-mask pixels.
            with np.errstate(divide="ignore", invalid="ignore"):
                frame = (roi - gt_box[[0, 1, 0, 1]]) / (gt_box[[2, 3, 2, 3]] - gt_box[[0, 1, 0, 1]])
            crop = frame * (np.array(mask.shape * 2) - 1)
        else:
            crop = roi
        out_masks[row, :, :, class_id] = np.round(_crop_and_resize(mask, crop, mask_shape))
        if nucleus:
            # The cell's crop box: the nucleus target lies in exactly the cell target's frame.
            out_nuclei[row, :, :, 0] = np.round(_crop_and_resize(nuclei[:, :, gt_index], crop, mask_shape))
    if nucleus:
        return out_rois, out_class_ids, out_bboxes, out_masks, out_nuclei
    return out_rois, out_class_ids, out_bboxes, out_masks

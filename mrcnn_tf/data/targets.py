"""Training targets in numpy: `load_image_gt`, `build_rpn_targets`, `generate_random_rois`,
`build_detection_targets` (Matterport's).

All boxes here are pixel boxes (y1, x1, y2, x2) with y2/x2 exclusive, in the resized (molded) image.
Every random choice comes from a numpy Generator passed in, so a seeded pipeline repeats exactly.
"""
import numpy as np

from mrcnn_tf.data.augment import augment_image_and_masks
from mrcnn_tf.data.dataset import check_nucleus_masks
from mrcnn_tf.errors import DatasetError, MrcnnError
from mrcnn_tf.ops.boxes import box_refinement, compute_overlaps, extract_bboxes
from mrcnn_tf.ops.image import compose_image_meta, resize_image
from mrcnn_tf.ops.masks import minimize_mask, resize_mask

RPN_NEGATIVE_IOU = 0.3  # an anchor below this IoU with every GT box is a negative
RPN_POSITIVE_IOU = 0.7  # at or above this with some GT box it is a positive
CROWD_IOU = 0.001  # anchors (and head ROIs) touching a crowd box by this much are never negatives
ROI_POSITIVE_IOU = 0.5  # a head ROI with IoU >= 0.5 to a GT box is positive, below is negative


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


def _nucleus_stack(dataset, image_id, mask, class_ids):
    """`dataset.load_nucleus_mask(image_id)` checked against the cell masks and clipped to its cells."""
    where = dataset.image_reference(image_id) or image_id
    check_nucleus_masks(dataset, True, name=f"{type(dataset).__name__}, image {where}")
    nucleus, nucleus_ids = dataset.load_nucleus_mask(image_id)
    nucleus = np.asarray(nucleus).astype(bool)
    if nucleus.shape[-1] == 0 and mask.shape[-1] == 0:
        return np.zeros(mask.shape, dtype=bool)
    if nucleus.shape != mask.shape or not np.array_equal(np.asarray(nucleus_ids).reshape(-1), class_ids):
        raise DatasetError(f"{where}: load_nucleus_mask returned {nucleus.shape} masks for load_mask's {mask.shape}; "
                           "return one nucleus per instance of load_mask, same order and class ids")
    return nucleus & mask


def _load_resized(dataset, config, image_id, rng, nucleus=False):
    """The image and masks of `image_id`, checked and resized to the config (the deterministic part of
    `load_image_gt` except in "crop" mode): (image, mask, class_ids, original_shape, window, scale).
    With `nucleus` the mask is [H, W, 2N]: the N cells, then their N nuclei (each clipped to its cell),
    so that every later geometric step moves both alike."""
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    mask = np.asarray(mask).astype(bool)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    original_shape = image.shape
    if mask.ndim != 3 or mask.shape[-1] != class_ids.shape[0]:
        raise DatasetError(f"{dataset.image_reference(image_id) or image_id}: load_mask returned masks of shape "
                           f"{mask.shape} and {class_ids.shape[0]} class ids; return bool [H, W, N] and [N] ids")
    if mask.shape[-1] == 0:
        mask = np.zeros(image.shape[:2] + (0,), dtype=bool)  # Matterport's default returns [0, 0, 0]
    if mask.shape[:2] != image.shape[:2]:
        raise DatasetError(f"{dataset.image_reference(image_id) or image_id}: masks are {mask.shape[:2]} but the "
                           f"image is {image.shape[:2]}; masks must be in image coordinates")
    if nucleus:
        mask = np.concatenate([mask, _nucleus_stack(dataset, image_id, mask, class_ids)], axis=-1)
    image, window, scale, padding, crop = resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE, max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE, rng=rng)
    mask = resize_mask(mask, scale, padding, crop)
    return image, mask, class_ids, original_shape, window, scale


def load_image_gt(dataset, config, image_id, augment=False, augmentation=None, use_mini_mask=False, rng=None,
                  cache=None, nucleus_masks=False):
    """Load an image and its ground truth, resized (and augmented) for training.

    Args:
        dataset: a prepared `Dataset`.
        config: a `Config` (IMAGE_* resize settings, NUM_CLASSES, MINI_MASK_SHAPE).
        image_id: internal image id.
        augment: Matterport's old flag: a horizontal flip half of the time.
        augmentation: an imgaug augmenter, applied after resizing to the image and (geometric parts only)
            to the masks with one random draw; see `augment.augment_image_and_masks`.
        use_mini_mask: crop each mask to its box and resize it to MINI_MASK_SHAPE.
        rng: numpy Generator for the crop, flip and augmentation draws.
        cache: a `ResizedImageCache` (data/image_cache.py) holding the loaded, resized image and masks
            by id between calls (None: load and resize every time). Not for the random "crop" mode.
        nucleus_masks: also return each instance's nucleus (`dataset.load_nucleus_mask`, clipped to its
            cell), moved by exactly the cell masks' resize, crop, flips and augmentation (Config.NUCLEUS_MASKS).

    Returns:
        image: uint8 [H, W, 3] resized image (not molded).
        image_meta: float [IMAGE_META_SIZE], see `compose_image_meta`.
        class_ids: int32 [N] of the instances that survived resizing and augmentation.
        bbox: int32 [N, 4] pixel boxes computed from the masks.
        mask: bool [H, W, N], or [mini_h, mini_w, N] with `use_mini_mask`.
        nucleus_mask (only with `nucleus_masks`): bool, the layout of `mask` (mini masks in the frame of
        the cell's box), inside its cell.
    """
    rng = _rng(rng)
    key = (image_id, "nucleus") if nucleus_masks else image_id
    resized = None if cache is None else cache.get(key)
    if resized is None:
        resized = _load_resized(dataset, config, image_id, rng, nucleus=nucleus_masks)
        if cache is not None:
            resized = cache.put(key, resized)
    image, mask, class_ids, original_shape, window, scale = resized

    if augment and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if augmentation is not None:
        image, mask = augment_image_and_masks(augmentation, image, mask, rng)
    nucleus = None
    if nucleus_masks:
        count = class_ids.shape[0]
        # An interpolating augmenter may move a nucleus edge a pixel past its cell's: clip again.
        mask, nucleus = mask[:, :, :count], mask[:, :, count:] & mask[:, :, :count]

    # Instances cropped or pushed out of the frame have no pixels left: drop them.
    keep = np.flatnonzero(mask.any(axis=(0, 1)))
    mask, class_ids = np.ascontiguousarray(mask[:, :, keep]), class_ids[keep]
    bbox = extract_bboxes(mask).astype(np.int32)
    if nucleus is not None:
        nucleus = np.ascontiguousarray(nucleus[:, :, keep])

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1
    if use_mini_mask:
        mask = minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)
        if nucleus is not None:
            nucleus = minimize_mask(bbox, nucleus, config.MINI_MASK_SHAPE)  # the cell's box, not the nucleus's
    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale, active_class_ids)
    # Not augmented, the image may still be the cache's read-only array: the caller gets its own.
    image = np.array(image) if not image.flags.writeable else np.ascontiguousarray(image)
    if nucleus_masks:
        return image, image_meta, class_ids, bbox, mask, nucleus
    return image, image_meta, class_ids, bbox, mask


def _deltas(anchors, gt_boxes, std_dev):
    """Refinement (dy, dx, log dh, log dw) from anchors to their GT boxes, divided by `std_dev`."""
    a_h = anchors[:, 2] - anchors[:, 0]
    a_w = anchors[:, 3] - anchors[:, 1]
    g_h = gt_boxes[:, 2] - gt_boxes[:, 0]
    g_w = gt_boxes[:, 3] - gt_boxes[:, 1]
    deltas = np.stack([
        (gt_boxes[:, 0] + 0.5 * g_h - anchors[:, 0] - 0.5 * a_h) / a_h,
        (gt_boxes[:, 1] + 0.5 * g_w - anchors[:, 1] - 0.5 * a_w) / a_w,
        np.log(g_h / a_h),
        np.log(g_w / a_w),
    ], axis=1)
    return deltas / np.asarray(std_dev, dtype=np.float64)


def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config, rng=None):
    """RPN training targets by Matterport's rules.

    An anchor is positive if its IoU with some GT box is >= 0.7, or if it is (one of) the best anchor(s)
    of a GT box (ties all count; a GT box that overlaps no anchor adds none); negative if its IoU with
    every GT box is < 0.3 and it does not touch a crowd box (class id < 0, IoU > 0.001); otherwise
    neutral. Positives are capped at RPN_TRAIN_ANCHORS_PER_IMAGE / 2 and negatives fill the rest of
    RPN_TRAIN_ANCHORS_PER_IMAGE, both by random sub-sampling (surplus anchors become neutral).

    Args:
        image_shape: [H, W, C] of the molded image (unused; kept for Matterport's signature).
        anchors: [A, 4] pixel anchors.
        gt_class_ids: [N] class ids (negative for crowd boxes).
        gt_boxes: [N, 4] pixel GT boxes.
        config: a `Config` (RPN_TRAIN_ANCHORS_PER_IMAGE, RPN_BBOX_STD_DEV).
        rng: numpy Generator for the sub-sampling.

    Returns:
        rpn_match: int32 [A], 1 positive, -1 negative, 0 neutral.
        rpn_bbox: float32 [RPN_TRAIN_ANCHORS_PER_IMAGE, 4] deltas (dy, dx, log dh, log dw) / RPN_BBOX_STD_DEV
            of the positive anchors in anchor order, zero-padded.
    """
    rng = _rng(rng)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    total = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    rpn_match = np.zeros([anchors.shape[0]], dtype=np.int32)
    rpn_bbox = np.zeros([total, 4], dtype=np.float32)

    crowd = gt_class_ids < 0
    not_crowd_touching = np.ones([anchors.shape[0]], dtype=bool)
    if crowd.any():
        crowd_overlaps = compute_overlaps(anchors, gt_boxes[crowd])
        not_crowd_touching = crowd_overlaps.max(axis=1) < CROWD_IOU
        gt_boxes = gt_boxes[~crowd]

    if gt_boxes.shape[0]:
        overlaps = compute_overlaps(anchors, gt_boxes)  # [A, G]
        anchor_best_gt = overlaps.argmax(axis=1)
        anchor_best_iou = overlaps[np.arange(anchors.shape[0]), anchor_best_gt]
        rpn_match[(anchor_best_iou < RPN_NEGATIVE_IOU) & not_crowd_touching] = -1
        # Every GT box's best anchor(s) become positive, even below 0.7, so no box goes unmatched.
        gt_best = overlaps.max(axis=0)
        best_rows, best_cols = np.nonzero((overlaps == gt_best[None, :]) & (gt_best[None, :] > 0))
        rpn_match[best_rows] = 1
        rpn_match[anchor_best_iou >= RPN_POSITIVE_IOU] = 1
    else:
        anchor_best_gt = np.zeros([anchors.shape[0]], dtype=np.int64)
        rpn_match[not_crowd_touching] = -1

    positives = np.flatnonzero(rpn_match == 1)
    extra = positives.size - total // 2
    if extra > 0:
        rpn_match[rng.choice(positives, extra, replace=False)] = 0
    negatives = np.flatnonzero(rpn_match == -1)
    extra = negatives.size - (total - int(np.sum(rpn_match == 1)))
    if extra > 0:
        rpn_match[rng.choice(negatives, extra, replace=False)] = 0

    positives = np.flatnonzero(rpn_match == 1)
    if positives.size:
        # A best-anchor match may be the GT box of a tie, but the regression target follows the anchor's
        # own best GT box, as Matterport.
        rpn_bbox[:positives.size] = _deltas(anchors[positives], gt_boxes[anchor_best_gt[positives]],
                                            config.RPN_BBOX_STD_DEV)
    return rpn_match, rpn_bbox


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


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=None):
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
    all T rows are ROIs; rows are zero only when there is no negative to repeat.

    Args:
        rpn_rois: [N, 4] pixel ROIs (y1, x1, y2, x2), e.g. from `generate_random_rois`.
        gt_class_ids: [G] int class ids (0 padding, < 0 crowd).
        gt_boxes: [G, 4] pixel GT boxes.
        gt_masks: [h, w, G] bool, mini masks with USE_MINI_MASK, else full size.
        config: a `Config` (TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES, MASK_SHAPE,
            BBOX_STD_DEV, USE_MINI_MASK).
        rng: numpy Generator for the sampling.

    Returns:
        rois [T, 4] (ROIs of `rpn_rois`, its dtype: positives first, in ROI order), class_ids int32 [T]
        (0 for negatives), bboxes float32 [T, NUM_CLASSES, 4] (deltas in the slot of the GT class),
        masks float32 [T, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES] (in the slot of the GT class).
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
    total = int(config.TRAIN_ROIS_PER_IMAGE)
    num_classes = int(config.NUM_CLASSES)
    mask_shape = tuple(int(v) for v in config.MASK_SHAPE)

    rois = _graph_frame(rpn_rois)
    real = gt_class_ids > 0
    crowd = gt_class_ids < 0
    class_ids, boxes, masks = gt_class_ids[real], _graph_frame(gt_boxes[real]), gt_masks[:, :, real]
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
    return out_rois, out_class_ids, out_bboxes, out_masks

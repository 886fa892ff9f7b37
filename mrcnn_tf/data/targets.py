"""Training targets in numpy: `load_image_gt` and `build_rpn_targets` (Matterport's); the random ROIs and the
heads' targets for them are in `roi_targets`.

All boxes here are pixel boxes (y1, x1, y2, x2) with y2/x2 exclusive, in the resized (molded) image.
Every random choice comes from a numpy Generator passed in, so a seeded pipeline repeats exactly.
"""
import numpy as np

from mrcnn_tf.data.augment import augment_image_and_masks
from mrcnn_tf.data.dataset import check_nucleus_masks
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.ops.boxes import compute_overlaps, extract_bboxes
from mrcnn_tf.ops.image import compose_image_meta, resize_image
from mrcnn_tf.ops.masks import minimize_mask, resize_mask

RPN_NEGATIVE_IOU = 0.3  # an anchor below this IoU with every GT box is a negative
RPN_POSITIVE_IOU = 0.7  # at or above this with some GT box it is a positive
CROWD_IOU = 0.001  # anchors (and head ROIs) touching a crowd box by this much are never negatives


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

"""Box arithmetic in numpy (Matterport's ``utils`` box functions).

Boxes are ``(y1, x1, y2, x2)`` rows. Unless a docstring says "normalized", coordinates are pixels
with y2/x2 exclusive (one past the last row/column), so a box's height is ``y2 - y1``.
"""
import numpy as np


def extract_bboxes(mask):
    """Tight pixel boxes around each instance mask.

    Args:
        mask: [H, W, N] array, non-zero where the instance is.

    Returns:
        int32 [N, 4] pixel boxes (y1, x1, y2, x2), y2/x2 exclusive; an empty mask gives (0, 0, 0, 0).
    """
    mask = np.asarray(mask)
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i]
        rows = np.flatnonzero(np.any(m, axis=1))
        cols = np.flatnonzero(np.any(m, axis=0))
        if rows.size:
            # +1 makes y2/x2 exclusive, as Matterport.
            boxes[i] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return boxes


def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one box with many (pixel or normalized coordinates, as long as all agree).

    Args:
        box: [4] (y1, x1, y2, x2).
        boxes: [N, 4].
        box_area: float, area of `box`.
        boxes_area: [N] areas of `boxes`.

    Returns:
        [N] IoU values; 0 where the union is empty (two degenerate boxes) instead of NaN.
    """
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = box_area + boxes_area - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)
    return iou


def compute_overlaps(boxes1, boxes2):
    """IoU matrix between two sets of boxes.

    Args:
        boxes1: [N1, 4] (y1, x1, y2, x2), pixels or normalized.
        boxes2: [N2, 4] in the same coordinates.

    Returns:
        float [N1, N2]; either side may be empty (N1 or N2 = 0).
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = _areas(boxes1)
    area2 = _areas(boxes2)
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    # One column per box of boxes2 keeps memory at N1 per step (boxes2 is usually the short list).
    for j in range(boxes2.shape[0]):
        overlaps[:, j] = compute_iou(boxes2[j], boxes1, area2[j], area1)
    return overlaps


def compute_overlaps_masks(masks1, masks2):
    """IoU matrix between two sets of masks (values above 0.5 count as inside).

    Args:
        masks1: [H, W, N1] masks (bool or scores in [0, 1]).
        masks2: [H, W, N2] masks of the same height and width.

    Returns:
        float32 [N1, N2]; zeros of that shape when either set is empty, 0 where both masks are empty.
    """
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2), dtype=np.float32)
    flat1 = (masks1.reshape(-1, n1) > 0.5).astype(np.float32)
    flat2 = (masks2.reshape(-1, n2) > 0.5).astype(np.float32)
    area1 = flat1.sum(axis=0)
    area2 = flat2.sum(axis=0)
    intersections = flat1.T @ flat2
    union = area1[:, None] + area2[None, :] - intersections
    return np.where(union > 0, intersections / np.maximum(union, 1), 0).astype(np.float32)


def non_max_suppression(boxes, scores, threshold):
    """Greedy NMS: keep the best-scoring box, drop those overlapping it by more than `threshold`.

    Args:
        boxes: [N, 4] (y1, x1, y2, x2), pixels or normalized.
        scores: [N] box scores.
        threshold: IoU above which a lower-scoring box is suppressed.

    Returns:
        int32 [K] indices of kept boxes, best score first (ties: lower index first); empty for N = 0.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros([0], dtype=np.int32)
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)
    areas = _areas(boxes)
    # A stable sort on -score makes ties deterministic (Matterport's quicksort left them arbitrary).
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iou = compute_iou(boxes[i], boxes[rest], areas[i], areas[rest])
        order = rest[iou <= threshold]
    return np.array(keep, dtype=np.int32)


# The largest log(dh), log(dw) a refinement applies (a box grows at most 1000/16 times), torchvision's and detectron2's
# bbox_xform_clip. Matterport has none: an untrained anchor's delta of ~90 overflowed exp() in float32, inf - inf gave
# NaN proposals and the NaN reached the weights (seen on Tecom-WBC training from scratch).
BOX_SCALE_CLIP = float(np.log(1000.0 / 16))


def apply_box_deltas(boxes, deltas):
    """Move and resize boxes by refinement deltas (the inverse of `box_refinement`).

    Args:
        boxes: [N, 4] (y1, x1, y2, x2), pixels or normalized.
        deltas: [N, 4] (dy, dx, log(dh), log(dw)); dy/dx are fractions of the box height/width.

    Returns:
        float32 [N, 4] refined boxes in the coordinates of `boxes`; log(dh) and log(dw) are capped at `BOX_SCALE_CLIP`.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    deltas = np.asarray(deltas, dtype=np.float32).reshape(-1, 4)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * np.exp(np.minimum(deltas[:, 2], BOX_SCALE_CLIP))
    width = width * np.exp(np.minimum(deltas[:, 3], BOX_SCALE_CLIP))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1).astype(np.float32)


def box_refinement(box, gt_box):
    """Deltas that turn `box` into `gt_box`.

    Args:
        box: [N, 4] (y1, x1, y2, x2) source boxes, pixels or normalized, non-zero height and width.
        gt_box: [N, 4] target boxes in the same coordinates.

    Returns:
        float32 [N, 4] (dy, dx, log(dh), log(dw)).
    """
    box = np.asarray(box, dtype=np.float32).reshape(-1, 4)
    gt_box = np.asarray(gt_box, dtype=np.float32).reshape(-1, 4)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1).astype(np.float32)


def _norm_scale_shift(shape):
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return scale, shift


def norm_boxes(boxes, shape):
    """Pixel boxes to Matterport's normalized coordinates (the graph's convention).

    y2/x2 are shifted by -1 (exclusive -> inclusive) and everything is divided by (H - 1, W - 1),
    so (0, 0, H, W) becomes (0, 0, 1, 1).

    Args:
        boxes: [..., 4] pixel boxes (y1, x1, y2, x2), y2/x2 exclusive.
        shape: (height, width[, ...]) of the image in pixels.

    Returns:
        float32 [..., 4] normalized boxes.
    """
    scale, shift = _norm_scale_shift(shape)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Normalized boxes back to integer pixel boxes (inverse of `norm_boxes`, rounded).

    Args:
        boxes: [..., 4] normalized boxes (y1, x1, y2, x2).
        shape: (height, width[, ...]) of the image in pixels.

    Returns:
        int32 [..., 4] pixel boxes, y2/x2 exclusive.
    """
    scale, shift = _norm_scale_shift(shape)
    return np.around(np.asarray(boxes, dtype=np.float64) * scale + shift).astype(np.int32)


def trim_zeros(x):
    """Drop all-zero rows (the padding of fixed-size box and detection arrays).

    Args:
        x: [N, C] array.

    Returns:
        [M, C] the rows of `x` that hold at least one non-zero value.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]

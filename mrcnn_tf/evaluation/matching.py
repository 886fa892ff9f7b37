"""Matterport's per-image detection metrics: greedy matching on mask IoU, VOC-style AP, box recall.

Boxes are pixel ``(y1, x1, y2, x2)`` rows (y2/x2 exclusive); masks are ``[H, W, N]`` arrays. As in
Matterport, ``compute_matches`` and ``compute_ap`` score instances by **mask** IoU, while
``compute_recall`` uses box IoU (it measures proposals, which have no masks).

Where Matterport divided by zero (an image without ground truth) these functions return 0 instead
of NaN, so a mean over a dataset never turns into NaN.
"""
import numpy as np

from mrcnn_tf.ops.boxes import compute_overlaps, compute_overlaps_masks, trim_zeros

# COCO's IoU thresholds 0.50:0.05:0.95 (Matterport's default for compute_ap_range).
COCO_IOU_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


def _trim(boxes, masks, *per_instance):
    """Drop zero-padding rows of `boxes` and the same trailing instances of the other arrays."""
    boxes = trim_zeros(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    count = boxes.shape[0]
    masks = np.asarray(masks)[..., :count]
    return (boxes, masks) + tuple(np.asarray(a)[:count] for a in per_instance)


def compute_matches(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Greedily match predictions to ground truth, best score first, on mask IoU.

    Each prediction, in decreasing score order, takes the unmatched ground-truth instance with the
    highest mask IoU that has the same class; candidates below `iou_threshold` end the search.
    A ground-truth instance of another class does not stop the search (a lower-IoU instance of the
    right class may still match), exactly as Matterport.

    Args:
        gt_boxes: [G, 4] pixel boxes (zero rows are padding and dropped).
        gt_class_ids: [G] int class ids.
        gt_masks: [H, W, G] masks.
        pred_boxes: [P, 4] pixel boxes (zero rows dropped).
        pred_class_ids: [P] int class ids.
        pred_scores: [P] confidence scores.
        pred_masks: [H, W, P] masks (bool or scores; > 0.5 counts as inside).
        iou_threshold: the least mask IoU of a match.
        score_threshold: predictions scoring below it are never matched. (Matterport compared this
            value to IoUs by mistake; with its default 0 both readings agree.)

    Returns:
        gt_match: int [G], for each ground-truth instance the index of its match in the
            score-sorted predictions, or -1.
        pred_match: int [P], for each prediction in decreasing score order the index of its
            ground-truth match, or -1.
        overlaps: float32 [P, G] mask IoUs, rows in decreasing score order.
    """
    gt_boxes, gt_masks, gt_class_ids = _trim(gt_boxes, gt_masks, gt_class_ids)
    pred_boxes, pred_masks, pred_class_ids, pred_scores = _trim(pred_boxes, pred_masks, pred_class_ids,
                                                                pred_scores)
    # Stable sort: equal scores keep their input order, so results are reproducible.
    order = np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable")
    pred_class_ids = pred_class_ids[order]
    pred_scores = pred_scores[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    gt_match = np.full(gt_boxes.shape[0], -1, dtype=np.int64)
    pred_match = np.full(pred_boxes.shape[0], -1, dtype=np.int64)
    for i in range(pred_boxes.shape[0]):
        if pred_scores[i] < score_threshold:
            continue
        # Candidates by decreasing IoU; ties go to the lower ground-truth index.
        for j in np.argsort(-overlaps[i], kind="stable"):
            if overlaps[i, j] < iou_threshold:
                break
            if gt_match[j] > -1:
                continue
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def ap_from_matches(pred_match, gt_count):
    """VOC all-point interpolated AP from a score-ordered match list.

    Args:
        pred_match: [P] ground-truth index or -1 per prediction, in decreasing score order.
        gt_count: number of ground-truth instances.

    Returns:
        (ap, precisions [P + 2], recalls [P + 2]) with Matterport's sentinels: precisions start and
        end with 0 (then made monotone), recalls start with 0 and end with 1. AP is 0 when there is
        no ground truth.
    """
    hits = np.cumsum(np.asarray(pred_match) > -1)
    ranks = np.arange(1, len(hits) + 1)
    precisions = hits / np.maximum(ranks, 1)
    recalls = hits / gt_count if gt_count else np.zeros(len(hits))
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    # Interpolate: each precision becomes the best precision at any higher recall.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.flatnonzero(recalls[:-1] != recalls[1:]) + 1
    ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps])) if gt_count else 0.0
    return ap, precisions, recalls


def compute_ap(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision of one image at one mask-IoU threshold (Matterport's ``utils.compute_ap``).

    Args:
        as `compute_matches`.

    Returns:
        mAP: float AP in [0, 1] (0 for an image without ground truth or without predictions).
        precisions: [P + 2] interpolated precisions (with 0 sentinels).
        recalls: [P + 2] recalls (with 0 and 1 sentinels).
        overlaps: [P, G] mask IoUs, predictions in decreasing score order.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold=iou_threshold)
    ap, precisions, recalls = ap_from_matches(pred_match, len(gt_match))
    return ap, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean of `compute_ap` over IoU thresholds (default COCO's 0.50:0.05:0.95).

    Args:
        gt_box ... pred_mask: as `compute_matches`.
        iou_thresholds: iterable of thresholds, or None for 0.5, 0.55, ..., 0.95.
        verbose: print each threshold's AP and the mean, as Matterport.

    Returns:
        float mean AP over the thresholds.
    """
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(list(iou_thresholds), float)
    aps = []
    for threshold in thresholds:
        ap, _, _, _ = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                                 iou_threshold=threshold)
        if verbose:
            print(f"AP @{threshold:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean = float(np.mean(aps)) if aps else 0.0
    if verbose and aps:
        print(f"AP @{thresholds[0]:.2f}-{thresholds[-1]:.2f}:\t {mean:.3f}")
    return mean


def compute_recall(pred_boxes, gt_boxes, iou):
    """Share of ground-truth boxes that some prediction overlaps by box IoU >= `iou`.

    Args:
        pred_boxes: [P, 4] pixel boxes (e.g. RPN proposals).
        gt_boxes: [G, 4] pixel boxes.
        iou: the least box IoU that counts as found.

    Returns:
        recall: float in [0, 1] (0 when there is no ground truth or no prediction).
        positive_ids: int [K] indices of the predictions whose best IoU reaches `iou`.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    if overlaps.size == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    best_iou = overlaps.max(axis=1)
    best_gt = overlaps.argmax(axis=1)
    positive_ids = np.flatnonzero(best_iou >= iou)
    found = np.unique(best_gt[positive_ids])
    return len(found) / overlaps.shape[1], positive_ids

"""Leukocyte typing and outline quality: best-match pairing, confusion matrix, accuracy, Dice.

Each ground-truth cell is paired with the detection whose mask overlaps it most (mask IoU, class
ignored). A pair counts when that IoU reaches `iou_threshold`; otherwise the cell is "missed". The
type is right when the paired detection's class equals the cell's. Masks are ``[H, W, N]`` arrays.
"""
import numpy as np

from mrcnn_tf.ops.boxes import compute_overlaps_masks

MISSED = 0  # confusion-matrix column of cells no detection found (the background id)


def best_matches(gt_masks, pred_masks, iou_threshold=0.5):
    """For each ground-truth mask, the detection with the highest mask IoU.

    Args:
        gt_masks: [H, W, G] masks.
        pred_masks: [H, W, P] masks.
        iou_threshold: the least IoU of a pair.

    Returns:
        match: int [G], detection index or -1 when the best IoU is below the threshold (or P = 0).
        iou: float [G], the best IoU (0 without detections).
    """
    overlaps = compute_overlaps_masks(gt_masks, pred_masks)
    count = overlaps.shape[0]
    if overlaps.shape[1] == 0:
        return np.full(count, -1, dtype=np.int64), np.zeros(count, dtype=np.float32)
    best = overlaps.argmax(axis=1)
    iou = overlaps[np.arange(count), best]
    return np.where(iou >= iou_threshold, best, -1).astype(np.int64), iou


def dice(mask1, mask2):
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two [H, W] masks (1 when both are empty)."""
    a = np.asarray(mask1) > 0.5
    b = np.asarray(mask2) > 0.5
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


class TypingScore:
    """Accumulates the confusion matrix and Dice of paired masks over images.

    Args:
        num_classes: classes including background (NUM_CLASSES); ids 1..num_classes-1 are types.
        iou_threshold: least mask IoU for a detection to count as the cell's match.

    Attributes:
        confusion: int [num_classes, num_classes]; row = true type id, column = detected type id,
            column 0 (`MISSED`) = no detection matched the cell. Row 0 stays empty.
        dice_values: Dice of every paired (cell, detection) mask.
    """

    def __init__(self, num_classes, iou_threshold=0.5):
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.dice_values = []

    def add(self, gt_class_ids, gt_masks, pred_class_ids, pred_masks):
        """Score one image."""
        gt_class_ids = np.asarray(gt_class_ids, dtype=np.int64)
        pred_class_ids = np.asarray(pred_class_ids, dtype=np.int64)
        match, _ = best_matches(gt_masks, pred_masks, self.iou_threshold)
        for g, p in enumerate(match):
            detected = MISSED if p < 0 else pred_class_ids[p]
            self.confusion[gt_class_ids[g], detected] += 1
            if p >= 0:
                self.dice_values.append(dice(gt_masks[:, :, g], pred_masks[:, :, p]))

    @property
    def cells(self):
        """Number of ground-truth cells seen."""
        return int(self.confusion.sum())

    @property
    def correct(self):
        """Number of ground-truth cells whose best-matching detection has the right type."""
        return int(np.trace(self.confusion[1:, 1:]))

    @property
    def accuracy(self):
        """Share of ground-truth cells whose best-matching detection has the right type (0 if no cells)."""
        return self.correct / self.cells if self.cells else 0.0

    @property
    def mean_dice(self):
        """Mean Dice over paired masks, or None when nothing was paired."""
        return float(np.mean(self.dice_values)) if self.dice_values else None

    def per_class_recall(self):
        """{class id: share of that type's cells detected with the right type, None if absent}."""
        result = {}
        for class_id in range(1, self.num_classes):
            total = self.confusion[class_id].sum()
            result[class_id] = float(self.confusion[class_id, class_id] / total) if total else None
        return result


def format_confusion(confusion, class_names):
    """The confusion matrix as a fixed-width text table (rows: true type; columns: detected type).

    Args:
        confusion: [K, K] counts from `TypingScore.confusion`.
        class_names: K names, index 0 the background (shown as the "missed" column).

    Returns:
        str, one line per true type.
    """
    names = ["missed"] + [str(n) for n in class_names[1:]]
    width = max(8, max(len(n) for n in names) + 1)
    lines = ["true \\ detected".ljust(width + 4) + "".join(n[:width - 1].rjust(width) for n in names[1:])
             + names[0].rjust(width)]
    for row in range(1, len(class_names)):
        counts = list(confusion[row, 1:]) + [confusion[row, MISSED]]
        lines.append(names[row].ljust(width + 4) + "".join(str(int(c)).rjust(width) for c in counts))
    return "\n".join(lines)

"""Nucleus quality of matched cells: Dice of the nucleus and error of the nucleus-to-cell area ratio.

A haematologist reads a white cell by its nucleus. For a model with Config.NUCLEUS_MASKS on a dataset
with nucleus masks (`has_nucleus`), each ground-truth cell is paired with a detection exactly as for
typing accuracy and Dice (`classification.best_matches`: the detection of highest mask IoU, at least
`iou_threshold`); over the pairs:

- ``nucleus_dice``: mean Dice of the predicted nucleus against the true nucleus;
- ``nc_ratio_mae``: mean |predicted nucleus area / predicted cell area - true nucleus area / true cell
  area| (areas in pixels of the original image).

Masks are ``[H, W, N]`` bool arrays.
"""
import numpy as np

from mrcnn_tf.evaluation.classification import best_matches, dice


def nc_ratio(nucleus, cell):
    """Nucleus area / cell area of [H, W] masks (0 for an empty cell)."""
    cell_area = int(np.count_nonzero(cell))
    return float(np.count_nonzero(np.logical_and(nucleus, cell))) / cell_area if cell_area else 0.0


class NucleusScore:
    """Accumulates nucleus Dice and N:C ratio errors of matched cells over images.

    Args:
        iou_threshold: least cell-mask IoU for a detection to count as the cell's match.

    Attributes:
        dice_values: nucleus Dice of every matched (cell, detection) pair.
        ratio_errors: |predicted - true| N:C area ratio of every matched pair.
    """

    def __init__(self, iou_threshold=0.5):
        self.iou_threshold = float(iou_threshold)
        self.dice_values = []
        self.ratio_errors = []

    def add(self, gt_masks, gt_nuclei, pred_masks, pred_nuclei):
        """Score one image: gt_masks / gt_nuclei [H, W, G], pred_masks / pred_nuclei [H, W, P] bool."""
        gt_masks, gt_nuclei = np.asarray(gt_masks, bool), np.asarray(gt_nuclei, bool)
        pred_masks, pred_nuclei = np.asarray(pred_masks, bool), np.asarray(pred_nuclei, bool)
        match, _ = best_matches(gt_masks, pred_masks, self.iou_threshold)
        for g, p in enumerate(match):
            if p < 0:
                continue
            self.dice_values.append(dice(gt_nuclei[:, :, g], pred_nuclei[:, :, p]))
            self.ratio_errors.append(abs(nc_ratio(pred_nuclei[:, :, p], pred_masks[:, :, p])
                                         - nc_ratio(gt_nuclei[:, :, g], gt_masks[:, :, g])))

    @property
    def mean_dice(self):
        """Mean nucleus Dice over matched cells, or None when nothing was matched."""
        return float(np.mean(self.dice_values)) if self.dice_values else None

    @property
    def nc_ratio_mae(self):
        """Mean absolute N:C ratio error over matched cells, or None when nothing was matched."""
        return float(np.mean(self.ratio_errors)) if self.ratio_errors else None

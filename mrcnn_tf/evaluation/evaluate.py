"""Score a model on a dataset: Matterport mAP50, COCO AP/AR (segm and bbox), per-class AP50,
typing accuracy, confusion matrix and Dice (and the nucleus's Dice and N:C ratio error when both the
dataset and the model have nuclei), as the dict that ``mrcnn-tf evaluate --json`` writes.

Images are scored at their original resolution: ``dataset.load_image`` goes through
``model.detect`` (which resizes and unmolds), and ``dataset.load_mask`` gives the ground truth.
"""
import numpy as np

from mrcnn_tf.evaluation.classification import TypingScore, format_confusion
from mrcnn_tf.evaluation.coco import CocoEvaluator
from mrcnn_tf.evaluation.intervals import bootstrap_interval, wilson_interval
from mrcnn_tf.evaluation.matching import COCO_IOU_THRESHOLDS, compute_ap
from mrcnn_tf.evaluation.nucleus import NucleusScore
from mrcnn_tf.ops.boxes import extract_bboxes


def _batches(ids, size):
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def detect_batch(model, images):
    """`model.detect` on any number of images, in chunks of the model's BATCH_SIZE.

    Matterport's detect wants exactly BATCH_SIZE images; a short last chunk is filled with copies
    of its last image whose results are dropped.
    """
    size = max(1, int(getattr(model.config, "BATCH_SIZE", 1)))
    results = []
    for chunk in _batches(list(images), size):
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        results.extend(model.detect(padded, verbose=0)[:len(chunk)])
    return results


def _mean(values):
    return float(np.mean(values)) if values else None


def evaluate_dataset(model, dataset, image_ids=None, progress=None, iou_threshold=0.5):
    """Detect on every image of a prepared dataset and score the detections.

    Args:
        model: an inference `MaskRCNN` (anything with ``config`` and ``detect(images, verbose=0)``
            returning Matterport's result dicts).
        dataset: a prepared `Dataset` (``image_ids``, ``class_names``, ``load_image``, ``load_mask``).
        image_ids: internal image ids to score; all of the dataset when None.
        progress: optional callable ``progress(done, total)`` called after each image.
        iou_threshold: mask IoU for Matterport's AP and for pairing cells in accuracy and Dice.

    Returns:
        dict (JSON-ready): ``images``; ``mAP50`` (mean over images with ground truth of
        `compute_ap` at `iou_threshold`, mask IoU) and ``mAP50_95`` (the same averaged over COCO's
        thresholds); COCO ``segm`` ``AP, AP50, AP75, AR`` (AR at 100 detections) and the full
        ``segm`` stats; ``bbox_AP, bbox_AP50, bbox_AP75, bbox_AR`` and the full ``bbox`` stats;
        ``per_class`` (class name -> segm AP50, None if the class has no ground truth) and
        ``per_class_bbox``; ``accuracy`` (share of ground-truth cells whose best-matching detection
        has the right type); ``per_class_accuracy``; ``dice`` (mean Dice of paired masks);
        ``confusion_matrix`` ({"labels": [...], "rows": counts, row = true type, column = detected
        type, last column = missed}); ``cells`` and ``detections`` counts; ``mAP50_ci95`` (bootstrap over
        the images) and ``accuracy_ci95`` (Wilson, over the cells), 95 % intervals [lo, hi] or None. When the
        dataset has nucleus masks (``has_nucleus``) and the model's results carry ``nucleus_masks``
        (Config.NUCLEUS_MASKS): ``nucleus_dice`` (mean Dice of predicted vs true nucleus over matched cells)
        and ``nc_ratio_mae`` (mean |predicted - true| nucleus-area / cell-area over matched cells); see
        evaluation/nucleus.py.
    """
    ids = list(dataset.image_ids if image_ids is None else image_ids)
    class_names = list(dataset.class_names)
    coco = CocoEvaluator({cid: name for cid, name in enumerate(class_names) if cid > 0})
    typing = TypingScore(len(class_names), iou_threshold=iou_threshold)
    nucleus = NucleusScore(iou_threshold=iou_threshold) if getattr(dataset, "has_nucleus", False) is True else None
    nucleus_scored = False
    ap50, ap_range = [], []
    detections = 0
    size = max(1, int(getattr(model.config, "BATCH_SIZE", 1)))
    done = 0
    for chunk in _batches(ids, size):
        images = [dataset.load_image(i) for i in chunk]
        for image_id, image, r in zip(chunk, images, detect_batch(model, images)):
            gt_masks, gt_class_ids = dataset.load_mask(image_id)
            gt_masks = np.asarray(gt_masks, dtype=bool)
            gt_class_ids = np.asarray(gt_class_ids, dtype=np.int32)
            # Crowd regions (negative ids, COCO's iscrowd) are not objects to find, as in Matterport's targets.
            gt_masks, gt_class_ids = gt_masks[..., gt_class_ids > 0], gt_class_ids[gt_class_ids > 0]
            gt_boxes = extract_bboxes(gt_masks)
            rois, class_ids, scores = np.asarray(r["rois"]), np.asarray(r["class_ids"]), np.asarray(r["scores"])
            masks = np.asarray(r["masks"], dtype=bool).reshape(image.shape[:2] + (len(class_ids),))
            detections += len(class_ids)
            if len(gt_class_ids):
                # An image without ground truth has no AP (Matterport's would be NaN): leave it out.
                args = (gt_boxes, gt_class_ids, gt_masks, rois, class_ids, scores, masks)
                ap50.append(compute_ap(*args, iou_threshold=iou_threshold)[0])
                ap_range.append(np.mean([compute_ap(*args, iou_threshold=t)[0] for t in COCO_IOU_THRESHOLDS]))
            coco.add(image_id, gt_boxes, gt_class_ids, gt_masks, rois, class_ids, scores, masks)
            typing.add(gt_class_ids, gt_masks, class_ids, masks)
            if nucleus is not None and "nucleus_masks" in r:
                # Aligned with load_mask's instances, crowds included: keep the same (non-crowd) ones.
                gt_nuclei, nucleus_ids = dataset.load_nucleus_mask(image_id)
                gt_nuclei = np.asarray(gt_nuclei, dtype=bool).reshape(gt_masks.shape[:2] + (-1,))
                gt_nuclei = gt_nuclei[..., np.asarray(nucleus_ids).reshape(-1) > 0]
                nuclei = np.asarray(r["nucleus_masks"], dtype=bool).reshape(masks.shape)
                nucleus.add(gt_masks, gt_nuclei, masks, nuclei)
                nucleus_scored = True
            done += 1
            if progress is not None:
                progress(done, len(ids))

    segm, per_class = coco.run("segm")
    bbox, per_class_bbox = coco.run("bbox")
    labels = class_names[1:] + ["missed"]
    rows = [[int(c) for c in list(typing.confusion[k, 1:]) + [typing.confusion[k, 0]]]
            for k in range(1, len(class_names))]
    extra = {}
    if nucleus_scored:
        extra = {"nucleus_dice": nucleus.mean_dice, "nc_ratio_mae": nucleus.nc_ratio_mae}
    return {
        "images": len(ids),
        "cells": typing.cells,
        "detections": detections,
        "mAP50": _mean(ap50),
        "mAP50_ci95": bootstrap_interval(ap50),
        "mAP50_95": _mean(ap_range),
        "AP": segm["AP"], "AP50": segm["AP50"], "AP75": segm["AP75"], "AR": segm["AR100"],
        "bbox_AP": bbox["AP"], "bbox_AP50": bbox["AP50"], "bbox_AP75": bbox["AP75"], "bbox_AR": bbox["AR100"],
        "per_class": per_class,
        "per_class_bbox": per_class_bbox,
        "accuracy": typing.accuracy,
        "accuracy_ci95": wilson_interval(typing.correct, typing.cells),
        "per_class_accuracy": {class_names[k]: v for k, v in typing.per_class_recall().items()},
        "dice": typing.mean_dice,
        "confusion_matrix": {"labels": labels, "rows": rows},
        "segm": segm,
        "bbox": bbox,
        "iou_threshold": float(iou_threshold),
        **extra,
    }


def _fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


def format_report(results):
    """A plain-text table of `evaluate_dataset`'s results (what ``mrcnn-tf evaluate`` prints)."""
    lines = [f"images {results['images']}   cells {results['cells']}   detections {results['detections']}", ""]
    rows = [("mAP50 (Matterport, mask IoU)", results["mAP50"]),
            ("mAP50:95 (Matterport)", results["mAP50_95"]),
            ("COCO segm AP", results["AP"]), ("COCO segm AP50", results["AP50"]),
            ("COCO segm AP75", results["AP75"]), ("COCO segm AR100", results["AR"]),
            ("COCO bbox AP", results["bbox_AP"]), ("COCO bbox AP50", results["bbox_AP50"]),
            ("COCO bbox AP75", results["bbox_AP75"]),
            ("typing accuracy", results["accuracy"]), ("Dice of matched masks", results["dice"])]
    if "nucleus_dice" in results:
        rows += [("nucleus Dice (matched cells)", results["nucleus_dice"]),
                 ("N:C ratio MAE (matched cells)", results["nc_ratio_mae"])]
    width = max(len(name) for name, _ in rows) + 2
    lines += [name.ljust(width) + _fmt(value) for name, value in rows]
    for key, name in (("mAP50_ci95", "mAP50"), ("accuracy_ci95", "typing accuracy")):
        if results.get(key):
            lines.append(f"{name} 95% interval".ljust(width) + "{:.3f}-{:.3f}".format(*results[key]))
    lines += ["", "class".ljust(width) + "AP50 segm".rjust(10) + "AP50 bbox".rjust(10) + "accuracy".rjust(10)]
    for name, value in results["per_class"].items():
        lines.append(name.ljust(width) + _fmt(value).rjust(10) + _fmt(results["per_class_bbox"].get(name)).rjust(10)
                     + _fmt(results["per_class_accuracy"].get(name)).rjust(10))
    matrix = results["confusion_matrix"]
    counts = np.zeros((len(matrix["labels"]), len(matrix["labels"])), dtype=np.int64)
    for k, row in enumerate(matrix["rows"], start=1):
        counts[k, 1:] = row[:-1]
        counts[k, 0] = row[-1]
    lines += ["", "confusion matrix (rows: true type, columns: detected type)",
              format_confusion(counts, ["BG"] + matrix["labels"][:-1])]
    return "\n".join(lines)

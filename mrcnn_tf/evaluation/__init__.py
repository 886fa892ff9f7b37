"""Evaluation: Matterport's per-image AP (mask IoU), COCO AP/AR, typing accuracy, confusion matrix, Dice.

``matching`` is numpy only and imported eagerly (``mrcnn_tf.utils`` re-exports it); the pycocotools
parts load on first use.
"""
import importlib

from mrcnn_tf.evaluation.matching import compute_ap, compute_ap_range, compute_matches, compute_recall

_LAZY = {
    "CocoEvaluator": "mrcnn_tf.evaluation.coco",
    "detections_to_coco": "mrcnn_tf.evaluation.coco",
    "mask_to_rle": "mrcnn_tf.evaluation.coco",
    "TypingScore": "mrcnn_tf.evaluation.classification",
    "dice": "mrcnn_tf.evaluation.classification",
    "evaluate_dataset": "mrcnn_tf.evaluation.evaluate",
    "format_report": "mrcnn_tf.evaluation.evaluate",
}

__all__ = ["compute_ap", "compute_ap_range", "compute_matches", "compute_recall", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mrcnn_tf.evaluation' has no attribute {name!r}")

"""COCO-style AP/AR through pycocotools, fed from numpy ground truth and detections.

`CocoEvaluator` collects per-image ground truth and detections (pixel boxes ``(y1, x1, y2, x2)``,
y2/x2 exclusive, and ``[H, W, N]`` masks), converts them to COCO's ``[x, y, w, h]`` boxes and RLE
masks, and runs ``COCOeval`` for ``segm`` and ``bbox``. Category ids are the dataset's class ids.
"""
import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The 12 numbers COCOeval.summarize() prints, in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def mask_to_rle(mask):
    """One binary mask as COCO RLE with a JSON-friendly ``counts`` string.

    Args:
        mask: [H, W] array, non-zero inside.

    Returns:
        {"size": [H, W], "counts": str}.
    """
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask) > 0, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def box_to_xywh(box):
    """Pixel (y1, x1, y2, x2), y2/x2 exclusive, to COCO [x, y, width, height] floats."""
    y1, x1, y2, x2 = (float(v) for v in box[:4])
    return [x1, y1, x2 - x1, y2 - y1]


def detections_to_coco(image_id, rois, class_ids, scores, masks):
    """One image's detections as COCO result records (the format of ``COCO.loadRes``).

    Args:
        image_id: int COCO image id.
        rois: [N, 4] pixel boxes (y1, x1, y2, x2).
        class_ids: [N] category ids.
        scores: [N] scores.
        masks: [H, W, N] masks, or None for bbox-only records.

    Returns:
        list of N dicts with image_id, category_id, bbox, score (and segmentation RLE when masks
        are given).
    """
    records = []
    for i in range(len(class_ids)):
        record = {"image_id": int(image_id), "category_id": int(class_ids[i]),
                  "bbox": box_to_xywh(rois[i]), "score": float(scores[i])}
        if masks is not None:
            record["segmentation"] = mask_to_rle(masks[:, :, i])
        records.append(record)
    return records


def _silently(function, *args):
    """Run a pycocotools call without its prints (they would drown the CLI's table)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


class CocoEvaluator:
    """Accumulates images, then scores them with pycocotools.

    Args:
        categories: {category_id: name} of the classes to score (background excluded).

    Attributes:
        images, annotations, results: the COCO dicts built so far.
    """

    def __init__(self, categories):
        self.categories = {int(k): str(v) for k, v in categories.items()}
        self.images = []
        self.annotations = []
        self.results = []

    def add(self, image_id, gt_boxes, gt_class_ids, gt_masks, rois, class_ids, scores, masks):
        """Add one image's ground truth and detections (pixel boxes, [H, W, N] masks)."""
        gt_masks = np.asarray(gt_masks)
        height, width = gt_masks.shape[:2]
        self.images.append({"id": int(image_id), "height": int(height), "width": int(width)})
        for i in range(len(gt_class_ids)):
            rle = mask_to_rle(gt_masks[:, :, i])
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": int(image_id), "category_id": int(gt_class_ids[i]),
                "bbox": box_to_xywh(gt_boxes[i]), "segmentation": rle,
                "area": float(mask_utils.area(_bytes_rle(rle))), "iscrowd": 0})
        self.results.extend(detections_to_coco(image_id, rois, class_ids, scores, masks))

    def _ground_truth(self):
        coco = COCO()
        coco.dataset = {"images": list(self.images), "annotations": list(self.annotations),
                        "categories": [{"id": k, "name": v} for k, v in sorted(self.categories.items())]}
        _silently(coco.createIndex)
        return coco

    def run(self, iou_type):
        """Evaluate one kind of IoU ("segm" or "bbox").

        Returns:
            stats: {name: value} for the 12 STAT_NAMES; None where COCO has nothing to score (no
                ground truth in that size range, pycocotools' -1). With ground truth but no
                detections every value is 0.
            per_class_ap50: {class name: AP50 or None when the class has no ground truth}.
        """
        if not self.annotations:
            return {name: None for name in STAT_NAMES}, {name: None for name in self.categories.values()}
        gt = self._ground_truth()
        present = {a["category_id"] for a in self.annotations}
        if not self.results:
            # loadRes cannot load an empty list; no detection means no precision and no recall.
            stats = {name: 0.0 for name in STAT_NAMES}
            return stats, {name: (0.0 if cid in present else None) for cid, name in self.categories.items()}
        dt = _silently(gt.loadRes, [dict(r) for r in self.results])
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = [image["id"] for image in self.images]
        evaluator.params.catIds = sorted(self.categories)
        _silently(evaluator.evaluate)
        _silently(evaluator.accumulate)
        _silently(evaluator.summarize)
        stats = {name: (None if value < 0 else float(value)) for name, value in zip(STAT_NAMES, evaluator.stats)}
        return stats, self._per_class_ap50(evaluator)

    def _per_class_ap50(self, evaluator):
        # precision: [T iou thresholds, R recall points, K classes, A area ranges, M max-dets];
        # IoU 0.5 is T=0, area "all" is A=0, maxDets 100 is the last M. -1 marks "no ground truth".
        precision = evaluator.eval["precision"]
        t50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
        result = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[t50, :, k, 0, -1]
            values = values[values > -1]
            result[self.categories[category_id]] = float(values.mean()) if values.size else None
        return result


def _bytes_rle(rle):
    """pycocotools' C functions want bytes counts."""
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}

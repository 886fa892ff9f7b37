"""CocoEvaluator against pycocotools called directly, hand-computed cases, and empty inputs."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn_tf.evaluation.coco import STAT_NAMES, CocoEvaluator, box_to_xywh, detections_to_coco, mask_to_rle

CATEGORIES = {1: "Basophil", 2: "Eosinophil", 3: "Lymphocyte"}


def rect_masks(shape, boxes):
    masks = np.zeros(tuple(shape) + (len(boxes),), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def random_image(rng, shape=(40, 48)):
    count = int(rng.integers(1, 4))
    y1 = rng.integers(0, 30, count)
    x1 = rng.integers(0, 36, count)
    gt_boxes = np.stack([y1, x1, y1 + rng.integers(4, 10, count), x1 + rng.integers(4, 12, count)], axis=1)
    gt_ids = rng.integers(1, 4, count)
    pred_boxes = np.clip(gt_boxes + rng.integers(-2, 3, gt_boxes.shape), 0, 40)
    pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
    pred_ids = np.where(rng.random(count) < 0.7, gt_ids, rng.integers(1, 4, count))
    scores = rng.random(count)
    return gt_boxes, gt_ids, rect_masks(shape, gt_boxes), pred_boxes, pred_ids, scores, rect_masks(shape, pred_boxes)


def direct_pycocotools(images, iou_type):
    """Build the COCO dicts by hand (no mrcnn_tf code) and run COCOeval."""
    gt_json = {"images": [], "annotations": [], "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()]}
    results = []
    for image_id, (gb, gi, gm, pb, pi, ps, pm) in enumerate(images, start=1):
        gt_json["images"].append({"id": image_id, "height": gm.shape[0], "width": gm.shape[1]})
        for k in range(len(gi)):
            rle = mask_utils.encode(np.asfortranarray(gm[:, :, k].astype(np.uint8)))
            y1, x1, y2, x2 = gb[k]
            gt_json["annotations"].append({"id": len(gt_json["annotations"]) + 1, "image_id": image_id,
                                           "category_id": int(gi[k]), "segmentation": rle, "iscrowd": 0,
                                           "area": float(gm[:, :, k].sum()),
                                           "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
        for k in range(len(pi)):
            y1, x1, y2, x2 = pb[k]
            results.append({"image_id": image_id, "category_id": int(pi[k]), "score": float(ps[k]),
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "segmentation": mask_utils.encode(np.asfortranarray(pm[:, :, k].astype(np.uint8)))})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_json
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def fill(evaluator, images):
    for image_id, image in enumerate(images, start=1):
        evaluator.add(image_id, *image)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_matches_direct_pycocotools(rng, iou_type):
    images = [random_image(rng) for _ in range(5)]
    evaluator = CocoEvaluator(CATEGORIES)
    fill(evaluator, images)
    stats, per_class = evaluator.run(iou_type)
    expected = direct_pycocotools(images, iou_type)
    for name, value in zip(STAT_NAMES, expected):
        assert stats[name] == (None if value < 0 else pytest.approx(value)), name
    assert 0 < stats["AP50"] < 1  # the random case is neither perfect nor empty
    assert set(per_class) == set(CATEGORIES.values())


def test_perfect_predictions_score_one(rng):
    evaluator = CocoEvaluator(CATEGORIES)
    for image_id in range(1, 4):
        gb, gi, gm, *_ = random_image(rng)
        evaluator.add(image_id, gb, gi, gm, gb, gi, np.linspace(1, 0.5, len(gi)), gm)
    for iou_type in ("segm", "bbox"):
        stats, per_class = evaluator.run(iou_type)
        assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
        assert stats["AP75"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
        assert all(v is None or v == pytest.approx(1.0) for v in per_class.values())


def test_hand_computed_per_class_ap50():
    # Class 1: found; class 2: detected as class 3 -> class 2 AP50 0, class 3 has no ground truth.
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    gm = rect_masks((32, 32), gt_boxes)
    evaluator = CocoEvaluator(CATEGORIES)
    evaluator.add(1, gt_boxes, [1, 2], gm, gt_boxes, [1, 3], [0.9, 0.8], gm)
    stats, per_class = evaluator.run("segm")
    assert per_class == {"Basophil": pytest.approx(1.0), "Eosinophil": 0.0, "Lymphocyte": None}
    assert stats["AP50"] == pytest.approx(0.5)


def test_empty_predictions_score_zero():
    gt_boxes = np.array([[0, 0, 10, 10]])
    evaluator = CocoEvaluator(CATEGORIES)
    evaluator.add(1, gt_boxes, [1], rect_masks((16, 16), gt_boxes), np.zeros((0, 4)), [], [],
                  np.zeros((16, 16, 0), bool))
    stats, per_class = evaluator.run("segm")
    assert all(v == 0.0 for v in stats.values())
    assert per_class["Basophil"] == 0.0 and per_class["Eosinophil"] is None


def test_no_ground_truth_gives_none():
    stats, per_class = CocoEvaluator(CATEGORIES).run("bbox")
    assert all(v is None for v in stats.values()) and all(v is None for v in per_class.values())


def test_conversions_round_trip():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str)
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, mask)
    assert box_to_xywh([2, 3, 5, 8]) == [3.0, 2.0, 5.0, 3.0]
    records = detections_to_coco(7, np.array([[2, 3, 5, 8]]), [2], [0.5], mask[:, :, None])
    assert records[0]["image_id"] == 7 and records[0]["category_id"] == 2 and records[0]["bbox"] == [3, 2, 5, 3]

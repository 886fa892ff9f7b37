"""nucleus_dice and nc_ratio_mae of evaluate_dataset, with a scripted model and hand-computed values."""
import numpy as np
import pytest

from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
from mrcnn_tf.evaluation.nucleus import NucleusScore, nc_ratio
from mrcnn_tf.ops.boxes import extract_bboxes


class NucleusDataset(Dataset):
    """One 40x48 image: cell A rows 2:12 cols 2:12 (100 px) with nucleus rows 2:12 cols 2:7 (50 px), cell B
    rows 20:30 cols 20:40 (200 px) with nucleus rows 22:28 cols 25:35 (60 px), and a crowd region (no cell)."""

    has_nucleus = True

    def __init__(self, with_nucleus=True):
        super().__init__()
        self.has_nucleus = with_nucleus
        self.add_class("mem", 1, "Lymphocyte")
        self.add_class("mem", 2, "Monocyte")
        masks = np.zeros((40, 48, 3), bool)
        nuclei = np.zeros_like(masks)
        masks[2:12, 2:12, 0], nuclei[2:12, 2:7, 0] = True, True
        masks[20:30, 20:40, 1], nuclei[22:28, 25:35, 1] = True, True
        masks[32:38, 0:6, 2] = True  # crowd: negative id, no nucleus
        self.add_image("mem", 0, None, image=np.zeros((40, 48, 3), np.uint8), masks=masks, nuclei=nuclei,
                       class_ids=np.array([1, 2, -1], np.int32))
        self.prepare()

    def load_image(self, image_id):
        return self.image_info[image_id]["image"]

    def load_mask(self, image_id):
        return self.image_info[image_id]["masks"], self.image_info[image_id]["class_ids"]

    def load_nucleus_mask(self, image_id):
        return self.image_info[image_id]["nuclei"], self.image_info[image_id]["class_ids"]


class Scripted:
    def __init__(self, result):
        self.config = type("C", (), {"BATCH_SIZE": 1})()
        self.result = result

    def detect(self, images, verbose=0):
        return [dict(self.result) for _ in images]


def answer(masks, nuclei=None):
    result = {"rois": extract_bboxes(masks), "class_ids": np.array([1, 2][:masks.shape[-1]], np.int32),
              "scores": np.full(masks.shape[-1], 0.9, np.float32), "masks": masks}
    if nuclei is not None:
        result["nucleus_masks"] = nuclei
    return result


def test_true_nuclei_give_dice_one_and_no_ratio_error():
    dataset = NucleusDataset()
    masks, nuclei = dataset.image_info[0]["masks"][..., :2], dataset.image_info[0]["nuclei"][..., :2]
    # Detections in the other order: pairing is by mask overlap, not by index.
    results = evaluate_dataset(Scripted(answer(masks[..., ::-1], nuclei[..., ::-1])), dataset)
    assert results["nucleus_dice"] == 1.0 and results["nc_ratio_mae"] == 0.0
    report = format_report(results)
    assert "nucleus Dice" in report and "N:C ratio MAE" in report


def test_shifted_nucleus_by_hand():
    dataset = NucleusDataset()
    masks = dataset.image_info[0]["masks"][..., :2].copy()
    nuclei = dataset.image_info[0]["nuclei"][..., :2].copy()
    # Cell A: the nucleus moved 2 px right (rows 2:12, cols 4:9): overlap 10x3 = 30 px, Dice 2*30/(50+50) = 0.6,
    # ratio 50/100 as before (error 0). Cell B: predicted nucleus rows 22:28 cols 25:30 (30 px), the cell
    # predicted as drawn: Dice 2*30/(60+30) = 2/3, ratio 30/200 vs 60/200 (error 0.15).
    nuclei[:, :, 0] = False
    nuclei[2:12, 4:9, 0] = True
    nuclei[:, :, 1] = False
    nuclei[22:28, 25:30, 1] = True
    results = evaluate_dataset(Scripted(answer(masks, nuclei)), dataset)
    assert results["nucleus_dice"] == pytest.approx((0.6 + 2 / 3) / 2)
    assert results["nc_ratio_mae"] == pytest.approx((0.0 + 0.15) / 2)


def test_unmatched_cells_are_left_out_and_a_smaller_predicted_cell_changes_the_ratio():
    dataset = NucleusDataset()
    masks = np.zeros((40, 48, 1), bool)
    masks[20:30, 20:36, 0] = True  # cell B as 160 px (IoU 0.8); cell A not detected
    nuclei = np.zeros_like(masks)
    nuclei[22:28, 25:35, 0] = True  # B's true nucleus: Dice 1, ratio 60/160 vs 60/200
    results = evaluate_dataset(Scripted(answer(masks, nuclei)), dataset)
    assert results["nucleus_dice"] == 1.0
    assert results["nc_ratio_mae"] == pytest.approx(60 / 160 - 60 / 200)


def test_no_keys_without_nucleus_on_either_side():
    dataset = NucleusDataset()
    masks, nuclei = dataset.image_info[0]["masks"][..., :2], dataset.image_info[0]["nuclei"][..., :2]
    plain = evaluate_dataset(Scripted(answer(masks)), dataset)  # a model without the nucleus head
    assert "nucleus_dice" not in plain and "nc_ratio_mae" not in plain
    assert "nucleus Dice" not in format_report(plain)
    no_truth = evaluate_dataset(Scripted(answer(masks, nuclei)), NucleusDataset(with_nucleus=False))
    assert "nucleus_dice" not in no_truth
    empty = evaluate_dataset(Scripted(answer(np.zeros((40, 48, 0), bool), np.zeros((40, 48, 0), bool))), dataset)
    assert empty["nucleus_dice"] is None and empty["nc_ratio_mae"] is None  # nothing matched


def test_nucleus_score_and_ratio_helpers():
    cell = np.zeros((4, 4), bool)
    assert nc_ratio(cell, cell) == 0.0
    cell[:2] = True
    nucleus = np.zeros((4, 4), bool)
    nucleus[0, :2] = True
    nucleus[3, 3] = True  # outside the cell: not counted
    assert nc_ratio(nucleus, cell) == 2 / 8
    score = NucleusScore()
    assert score.mean_dice is None and score.nc_ratio_mae is None

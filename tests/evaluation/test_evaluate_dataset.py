"""evaluate_dataset with a scripted model: perfect, empty and partly wrong detections."""
import json

import numpy as np
import pytest

from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
from mrcnn_tf.ops.boxes import extract_bboxes

NAMES = ["Basophil", "Eosinophil", "Lymphocyte"]


class MemoryDataset(Dataset):
    def __init__(self, rng, count=3):
        super().__init__()
        for i, name in enumerate(NAMES, start=1):
            self.add_class("mem", i, name)
        for i in range(count):
            shape = (40 + 8 * i, 48)  # images of different sizes
            masks = np.zeros(shape + (2,), bool)
            masks[2:14, 3:15, 0] = True
            masks[20:34, 20:40, 1] = True
            self.add_image("mem", i, None, image=rng.integers(0, 255, shape + (3,), dtype=np.uint8),
                           masks=masks, class_ids=np.array([1 + i % 3, 1 + (i + 1) % 3], np.int32))
        self.prepare()

    def load_image(self, image_id):
        return self.image_info[image_id]["image"]

    def load_mask(self, image_id):
        return self.image_info[image_id]["masks"], self.image_info[image_id]["class_ids"]


class ScriptedModel:
    """Returns whatever `answer(image_index)` gives; checks that it receives BATCH_SIZE images."""

    def __init__(self, dataset, answer, batch_size=2):
        self.config = type("C", (), {"BATCH_SIZE": batch_size})()
        self.dataset = dataset
        self.answer = answer
        self.calls = 0

    def detect(self, images, verbose=0):
        assert len(images) == self.config.BATCH_SIZE
        results = []
        for image in images:
            index = next(i for i in self.dataset.image_ids if self.dataset.load_image(i) is image)
            results.append(self.answer(index))
            self.calls += 1
        return results


def perfect(dataset):
    def answer(i):
        masks, ids = dataset.load_mask(i)
        return {"rois": extract_bboxes(masks), "class_ids": ids, "scores": np.array([0.9, 0.8]), "masks": masks}
    return answer


def test_perfect_predictions(rng):
    dataset = MemoryDataset(rng)
    seen = []
    result = evaluate_dataset(ScriptedModel(dataset, perfect(dataset)), dataset,
                              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result["images"] == 3 and result["cells"] == 6 and result["detections"] == 6
    for key in ("mAP50", "mAP50_95", "AP", "AP50", "AP75", "AR", "bbox_AP", "accuracy", "dice"):
        assert result[key] == pytest.approx(1.0), key
    assert result["per_class"] == {name: pytest.approx(1.0) for name in NAMES}
    assert result["confusion_matrix"]["labels"] == NAMES + ["missed"]
    assert np.trace(np.array(result["confusion_matrix"]["rows"])[:, :3]) == 6
    json.dumps(result)  # JSON-ready
    assert "typing accuracy" in format_report(result)


def test_empty_predictions(rng):
    dataset = MemoryDataset(rng)

    def nothing(i):
        h, w = dataset.load_image(i).shape[:2]
        return {"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
                "scores": np.zeros(0, np.float32), "masks": np.zeros((h, w, 0), bool)}

    result = evaluate_dataset(ScriptedModel(dataset, nothing), dataset)
    for key in ("mAP50", "AP", "AP50", "AP75", "AR", "bbox_AP", "accuracy"):
        assert result[key] == 0.0, key
    assert result["dice"] is None
    assert [row[-1] for row in result["confusion_matrix"]["rows"]] == [2, 2, 2]
    format_report(result)


def test_wrong_types_lower_accuracy_but_not_dice(rng):
    dataset = MemoryDataset(rng)
    right = perfect(dataset)

    def swapped(i):
        r = right(i)
        if i == 0:  # first image: both cells typed as the other
            r = dict(r, class_ids=r["class_ids"][::-1].copy())
        return r

    model = ScriptedModel(dataset, swapped, batch_size=1)
    result = evaluate_dataset(model, dataset, image_ids=[0, 1])
    assert model.calls == 2 and result["images"] == 2
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["dice"] == pytest.approx(1.0)
    assert result["mAP50"] == pytest.approx(0.5)  # image 0 scores 0, image 1 scores 1

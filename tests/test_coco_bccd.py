"""Real smears: every BCCD-WBC annotation decoded by `CocoDataset` equals pycocotools' `annToMask`
(and every nucleus its own RLE decode), on the fields copied into tests/data/bccd and, where the
project's workspace has it, on the whole set."""
import pathlib

import numpy as np
import pytest
from helpers_coco import BCCD_FIELDS
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_tf.coco import CocoDataset
from mrcnn_tf.data.lisc_format import CLASS_NAMES

FULL_SET = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd-wbc"
SETS = {"copied fields": BCCD_FIELDS, "full bccd-wbc": FULL_SET}


@pytest.mark.parametrize("subset", ["train", "val"])
@pytest.mark.parametrize("name", list(SETS))
def test_every_annotation_equals_pycocotools(name, subset):
    root = SETS[name]
    if not (root / "annotations" / f"instances_{subset}.json").is_file():
        pytest.skip(f"{root} is not here (only the project's workspace has the full set)")
    coco = COCO(str(root / "annotations" / f"instances_{subset}.json"))
    dataset = CocoDataset()
    dataset.load_coco(root, subset)
    dataset.prepare()
    assert dataset.num_images == len(coco.dataset["images"])  # every BCCD-WBC field has a cell
    assert dataset.class_names == ["BG"] + list(CLASS_NAMES) and dataset.has_nucleus
    decoded = 0
    for image_id in dataset.image_ids:
        info = dataset.image_info[image_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]], iscrowd=None))
        masks, class_ids = dataset.load_mask(image_id)
        nuclei, nucleus_ids = dataset.load_nucleus_mask(image_id)
        assert masks.shape == (info["height"], info["width"], len(anns)) == nuclei.shape
        assert list(class_ids) == list(nucleus_ids) == [a["category_id"] for a in anns]  # LISC ids already
        for k, ann in enumerate(anns):
            assert np.array_equal(masks[..., k], coco.annToMask(ann).astype(bool)), (info["file_name"], ann["id"])
            assert np.array_equal(nuclei[..., k], mask_utils.decode(ann["nucleus"]).astype(bool))
            assert not np.any(nuclei[..., k] & ~masks[..., k])  # a nucleus lies inside its cell
            decoded += 1
    assert decoded == len(coco.dataset["annotations"])


def test_copied_fields_cover_every_type():
    counts = {}
    for subset in ("train", "val"):
        dataset = CocoDataset()
        dataset.load_coco(BCCD_FIELDS, subset)
        dataset.prepare()
        for name, n in dataset.instance_counts().items():
            counts[name] = counts.get(name, 0) + n
    assert counts == {"Basophil": 1, "Eosinophil": 1, "Lymphocyte": 1, "Monocyte": 1, "Neutrophil": 4}
    assert (BCCD_FIELDS / "LICENSE").is_file()
    assert sum(p.stat().st_size for p in BCCD_FIELDS.rglob("*") if p.is_file()) < 1_000_000

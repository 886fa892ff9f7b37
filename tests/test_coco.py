"""`CocoDataset`: polygons, uncompressed and compressed RLE, crowds, nucleus masks, class mapping,
the two loading forms, and every bad-input error and warning (checked against pycocotools and
plain numpy references)."""
import json
import warnings

import numpy as np
import pytest
from helpers_coco import (LISC_CATEGORIES, decode_uncompressed, disc, polygon_ann, rle_ann, uncompressed_rle,
                          write_coco)
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_tf.coco import CocoDataset, coco_subsets, is_coco_layout
from mrcnn_tf.data.coco_format import string_counts
from mrcnn_tf.errors import DatasetError

H, W = 48, 64


def load(root, subset="train", **kwargs):
    dataset = CocoDataset()
    dataset.load_coco(root, subset, **kwargs)
    dataset.prepare()
    return dataset


def reference_masks(root, subset="train"):
    """pycocotools' own annToMask of every annotation, per image file name, in file order."""
    coco = COCO(str(root / "annotations" / f"instances_{subset}.json"))
    out = {}
    for image in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], iscrowd=None))
        out[image["file_name"]] = [coco.annToMask(a).astype(bool) for a in anns]
    return out


# ------------------------------------------------------------------------------------- RLE string reference
@pytest.mark.parametrize("kind", ["random", "blobs", "empty", "full", "one_pixel"])
def test_string_counts_matches_plain_runs(kind, rng):
    masks = {"random": rng.random((7, 9)) < 0.5, "blobs": disc(30, 40, 12, 20, 9) | disc(30, 40, 25, 5, 4),
             "empty": np.zeros((5, 6), bool), "full": np.ones((5, 6), bool),
             "one_pixel": np.pad(np.ones((1, 1), bool), ((3, 1), (2, 4)))}
    mask = masks[kind]
    encoded = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"].decode("ascii")
    assert string_counts(encoded) == uncompressed_rle(mask)["counts"]
    assert np.array_equal(decode_uncompressed(uncompressed_rle(mask)), mask)


@pytest.mark.parametrize("text", ["0P", "\x7f1"])
def test_string_counts_refuses_damaged_strings(text):
    with pytest.raises(ValueError):
        string_counts(text)


# ------------------------------------------------------------------------------------- decoding
def test_every_segmentation_kind_equals_pycocotools_and_plain_references(tmp_path, rng):
    cell = disc(H, W, 20, 30, 9)
    crowd = disc(H, W, 35, 50, 6)
    speckle = rng.random((H, W)) < 0.3
    anns = [polygon_ann(5, "a.png", [10, 10, 30, 12, 25, 30, 8, 28]),            # one polygon
            polygon_ann(3, "a.png", [40, 5, 50, 5, 50, 15], [55, 30, 63, 30, 63, 47, 55, 47]),  # two parts
            rle_ann(2, "b.png", cell),                                          # uncompressed RLE
            rle_ann(4, "b.png", speckle, compressed=True),                      # compressed RLE
            rle_ann(1, "b.png", crowd, iscrowd=1)]                              # crowd region
    root = write_coco(tmp_path, {"a.png": (H, W), "b.png": (H, W)}, anns)
    dataset = load(root)
    reference = reference_masks(root)
    assert dataset.num_images == 2
    for image_id in dataset.image_ids:
        info = dataset.image_info[image_id]
        masks, class_ids = dataset.load_mask(image_id)
        assert masks.dtype == bool and class_ids.dtype == np.int32 and masks.shape[:2] == (H, W)
        assert masks.shape[-1] == len(reference[info["file_name"]])
        for k, expected in enumerate(reference[info["file_name"]]):
            assert np.array_equal(masks[..., k], expected), (info["file_name"], k)
    masks, class_ids = dataset.load_mask(1)
    assert list(class_ids) == [2, 4, -1]  # the crowd region's class is negative (Matterport)
    assert np.array_equal(masks[..., 0], cell) and np.array_equal(masks[..., 1], speckle)
    assert np.array_equal(masks[..., 2], crowd)
    assert list(dataset.load_mask(0)[1]) == [5, 3]
    assert dataset.instance_counts() == {"Basophil": 0, "Eosinophil": 1, "Lymphocyte": 1, "Monocyte": 1,
                                         "Neutrophil": 1}  # the crowd is not a cell


def test_crowd_regions_leave_training_targets_and_scores(tmp_path):
    from types import SimpleNamespace

    from helpers_model import tiny_config

    from mrcnn_tf.data.targets import build_rpn_targets, load_image_gt
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset
    from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors

    cell, crowd = disc(64, 64, 20, 20, 10), disc(64, 64, 45, 45, 12)
    root = write_coco(tmp_path, {"a.png": (64, 64)}, [rle_ann(5, "a.png", cell), rle_ann(2, "a.png", crowd,
                                                                                      iscrowd=1)])
    dataset = load(root)
    config = tiny_config(NUM_CLASSES=6)
    _, _, class_ids, boxes, _ = load_image_gt(dataset, config, 0)
    assert list(class_ids) == [5, -2]
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                       compute_backbone_shapes(config, config.IMAGE_SHAPE),
                                       config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    match, _ = build_rpn_targets(config.IMAGE_SHAPE, anchors, class_ids, boxes, config)
    from mrcnn_tf.ops.boxes import compute_overlaps
    touching_crowd = compute_overlaps(anchors, boxes[1:]).max(axis=1) > 0.001
    assert not np.any(match[touching_crowd] == -1)  # never background where the crowd is

    class Exact:  # detects the one cell perfectly
        config = SimpleNamespace(BATCH_SIZE=1)

        def detect(self, images, verbose=0):
            return [{"rois": np.array([[10, 10, 31, 31]]), "class_ids": np.array([5]), "scores": np.array([0.9]),
                     "masks": cell[..., None]}]

    results = evaluate_dataset(Exact(), dataset)
    assert results["cells"] == 1 and results["mAP50"] == 1.0 and results["accuracy"] == 1.0


def test_nucleus_masks_follow_the_instances(tmp_path):
    cells = [disc(H, W, 20, 20, 10), disc(H, W, 25, 45, 8)]
    nuclei = [disc(H, W, 20, 20, 4), disc(H, W, 25, 45, 3)]
    anns = [rle_ann(3, "a.png", cells[0], nucleus=uncompressed_rle(nuclei[0])),
            rle_ann(5, "a.png", cells[1], compressed=True,
                    nucleus=rle_ann(0, "", nuclei[1], compressed=True)["segmentation"])]
    dataset = load(write_coco(tmp_path, {"a.png": (H, W)}, anns))
    assert dataset.has_nucleus
    masks, class_ids = dataset.load_mask(0)
    nucleus, nucleus_ids = dataset.load_nucleus_mask(0)
    assert list(nucleus_ids) == list(class_ids) == [3, 5]
    for k in range(2):
        assert np.array_equal(masks[..., k], cells[k]) and np.array_equal(nucleus[..., k], nuclei[k])

    plain = load(write_coco(tmp_path / "plain", {"a.png": (H, W)}, [rle_ann(3, "a.png", cells[0])]))
    assert not plain.has_nucleus
    with pytest.raises(DatasetError, match=r"instances_train.json: annotation 1 \(image 1, 'a.png'\): no 'nucleus'"):
        plain.load_nucleus_mask(0)


def test_lisc_names_map_onto_lisc_ids_in_any_case_and_order(tmp_path):
    categories = [{"id": 1, "name": "neutrophil"}, {"id": 7, "name": "LYMPHOCYTE"}]
    anns = [polygon_ann(1, "a.png", [5, 5, 20, 5, 20, 20]), polygon_ann(7, "a.png", [30, 30, 50, 30, 50, 45])]
    dataset = load(write_coco(tmp_path, {"a.png": (H, W)}, anns, categories=categories))
    assert dataset.class_names == ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
    assert list(dataset.load_mask(0)[1]) == [5, 3]


def test_other_categories_keep_their_own_classes_in_id_order(tmp_path):
    categories = [{"id": 9, "name": "platelet"}, {"id": 2, "name": "Neutrophil"}, {"id": 4, "name": "red cell"}]
    anns = [polygon_ann(9, "a.png", [5, 5, 9, 5, 9, 9]), polygon_ann(4, "a.png", [30, 30, 50, 30, 50, 45]),
            polygon_ann(2, "a.png", [40, 2, 60, 2, 60, 20])]
    root = write_coco(tmp_path, {"a.png": (H, W)}, anns, categories=categories)
    dataset = load(root)
    assert dataset.class_names == ["BG", "Neutrophil", "red cell", "platelet"]
    assert list(dataset.load_mask(0)[1]) == [3, 2, 1]
    assert dataset.get_source_class_id(3, "coco") == 9
    only = load(root, class_ids=[4])  # Matterport's class_ids: these categories only
    assert only.class_names == ["BG", "red cell"] and list(only.load_mask(0)[1]) == [1]


def test_second_form_json_file_and_image_folder_and_return_coco(tmp_path):
    anns = [polygon_ann(2, "a.png", [5, 5, 20, 5, 20, 20])]
    root = write_coco(tmp_path / "set", {"a.png": (H, W)}, anns, image_dir="smears")
    dataset = CocoDataset()
    coco = dataset.load_coco_file(root / "annotations" / "instances_train.json", root / "smears", return_coco=True)
    dataset.prepare()
    assert isinstance(coco, COCO) and coco.getAnnIds(imgIds=[1]) == [1]
    assert dataset.image_reference(0) == str(root / "smears" / "a.png")
    assert np.array_equal(dataset.load_mask(0)[0][..., 0], coco.annToMask(coco.anns[1]).astype(bool))
    with pytest.raises(DatasetError, match=r"nowhere: image folder not found"):
        CocoDataset().load_coco_file(root / "annotations" / "instances_train.json", tmp_path / "nowhere")


def test_image_folders_file_name_paths_and_matterport_year_layout(tmp_path):
    anns = [polygon_ann(2, "a.png", [5, 5, 20, 5, 20, 20])]
    coco_style = write_coco(tmp_path / "c", {"a.png": (H, W)}, anns, subset="val2017", image_dir="val2017")
    assert load(coco_style, "val", year="2017").image_reference(0).endswith("val2017/a.png")
    nested = write_coco(tmp_path / "n", {"a.png": (H, W)}, anns)
    path = nested / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "images/a.png"
    path.write_text(json.dumps(data))
    assert load(nested).image_reference(0) == str(nested / "images/a.png")
    assert is_coco_layout(nested) and not is_coco_layout(tmp_path / "absent") and coco_subsets(nested) == ["train"]


def test_width_and_height_are_read_from_the_file_when_absent(tmp_path):
    root = write_coco(tmp_path, {"a.png": (H, W)}, [rle_ann(2, "a.png", disc(H, W, 10, 10, 5))])
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    del data["images"][0]["width"], data["images"][0]["height"]
    path.write_text(json.dumps(data))
    for verify in (True, False):
        dataset = load(root, verify=verify)
        assert (dataset.image_info[0]["height"], dataset.image_info[0]["width"]) == (H, W)
        assert dataset.load_mask(0)[0].shape == (H, W, 1)


# ------------------------------------------------------------------------------------- warnings
def test_images_without_annotations_are_left_out_with_a_warning(tmp_path):
    anns = [polygon_ann(2, "a.png", [5, 5, 20, 5, 20, 20])]
    root = write_coco(tmp_path, {"a.png": (H, W), "bare.png": (H, W)}, anns)
    with pytest.warns(UserWarning, match=r"instances_train.json: 1 image\(s\) have no annotation and are left out, "
                                         r"as Matterport's load_coco does .*: bare.png"):
        dataset = load(root)
    assert dataset.num_images == 1
    with pytest.warns(UserWarning, match="kept as background-only images: bare.png"):
        kept = load(root, keep_empty_images=True)
    assert kept.num_images == 2
    masks, class_ids = kept.load_mask(1)
    assert masks.shape == (H, W, 0) and class_ids.shape == (0,)


def test_annotations_covering_no_pixel_are_skipped_with_a_warning(tmp_path):
    sliver = [10.0, 10.0, 10.0, 10.0, 10.0, 10.0]  # three times the same point: no area
    anns = [polygon_ann(2, "a.png", sliver), polygon_ann(3, "a.png", [5, 5, 20, 5, 20, 20]),
            polygon_ann(4, "b.png", sliver)]
    root = write_coco(tmp_path, {"a.png": (H, W), "b.png": (H, W)}, anns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load(root)
    messages = [str(w.message) for w in caught if w.category is UserWarning]  # not pycocotools' numpy notes
    assert len(messages) == 2, messages
    assert "2 annotation(s) cover no pixel and are skipped, as Matterport does: annotation 1 of 'a.png', " \
           "annotation 3 of 'b.png'" in messages[0]
    assert "1 image(s) are left with no usable annotation and are kept as background-only images" in messages[1]
    assert list(dataset.load_mask(0)[1]) == [3] and dataset.load_mask(1)[0].shape == (H, W, 0)


# ------------------------------------------------------------------------------------- errors
def edit_json(root, change):
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def good_set(tmp_path):
    anns = [polygon_ann(2, "a.png", [5, 5, 20, 5, 20, 20]), rle_ann(5, "b.png", disc(H, W, 20, 30, 8))]
    return write_coco(tmp_path, {"a.png": (H, W), "b.png": (H, W)}, anns)


def set_key(section, index, key, value):
    def change(data):
        data[section][index][key] = value
    return change


BAD_ENTRIES = [
    ("unknown image id", set_key("annotations", 0, "image_id", 99),
     "annotation 1: image_id 99 is not in 'images'; fix the annotation or add the image"),
    ("unknown category id", set_key("annotations", 1, "category_id", 9),
     "annotation 2 (image 2, 'b.png'): category_id 9 is not in 'categories' (ids 1, 2, 3, 4, 5)"),
    ("polygon outside the image", set_key("annotations", 0, "segmentation", [[5, 5, 90, 5, 20, 20]]),
     "annotation 1 (image 1, 'a.png'): polygon 0 point (90, 5) lies outside the 64x48 image (x must be within 0-64)"),
    ("RLE of another size", set_key("annotations", 1, "segmentation", uncompressed_rle(np.ones((10, 10), bool))),
     "annotation 2 (image 2, 'b.png'): RLE size is [10, 10] (height, width) but the image is [48, 64]; "
     "the mask lies outside the image"),
    ("RLE runs not covering the image", set_key("annotations", 1, "segmentation", {"size": [H, W], "counts": [5, 7]}),
     "annotation 2 (image 2, 'b.png'): RLE runs cover 12 pixels but the image has 48x64 = 3072"),
    ("damaged compressed RLE", set_key("annotations", 1, "segmentation", {"size": [H, W], "counts": "0P"}),
     "annotation 2 (image 2, 'b.png'): compressed RLE counts are damaged (the string ends inside a count)"),
    ("empty segmentation", set_key("annotations", 0, "segmentation", []),
     "annotation 1 (image 1, 'a.png'): empty segmentation ([]); draw the object's outline or remove the annotation"),
    ("polygon of two points", set_key("annotations", 0, "segmentation", [[5, 5, 20, 5]]),
     "annotation 1 (image 1, 'a.png'): polygon 0 has 4 numbers; a polygon needs at least 3 points"),
    ("no segmentation", lambda d: d["annotations"][0].pop("segmentation"),
     "annotation 1 (image 1, 'a.png'): no 'segmentation'"),
    ("bad iscrowd", set_key("annotations", 0, "iscrowd", 2), "annotation 1 (image 1, 'a.png'): iscrowd is 2"),
    ("duplicate image id", set_key("images", 1, "id", 1), "image 1 is listed twice in 'images'"),
    ("duplicate category name", set_key("categories", 1, "name", "basophil"),
     "categories 1 and 2 are both named 'basophil'"),
    ("size in the file differs", set_key("images", 0, "width", 65),
     "image 1 ('a.png') is listed as 65x48 but"),
    ("no images list", lambda d: d.pop("images"), "'images' is missing; a COCO instance file needs a list of images"),
]


@pytest.mark.parametrize("case, change, message", BAD_ENTRIES, ids=[c[0] for c in BAD_ENTRIES])
def test_bad_entries_are_one_line_errors_naming_file_and_entry(tmp_path, case, change, message):
    path = edit_json(good_set(tmp_path), change)
    with pytest.raises(DatasetError) as info:
        load(tmp_path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and message in text, text


def test_bad_masks_fail_at_load_mask_when_not_verified(tmp_path):
    path = edit_json(good_set(tmp_path), set_key("annotations", 0, "segmentation", [[5, 5, 90, 5, 20, 20]]))
    dataset = load(tmp_path, verify=False)  # structure checked, masks not decoded yet
    with pytest.raises(DatasetError, match=f"^{path}: annotation 1 .* lies outside"):
        dataset.load_mask(0)


def test_bad_files_and_folders_are_one_line_errors(tmp_path):
    root = good_set(tmp_path / "set")
    path = root / "annotations" / "instances_train.json"
    path.write_text('{"images": [], ')
    with pytest.raises(DatasetError, match=rf"^{path}: not valid JSON \(Expecting property name enclosed in double "
                                           r"quotes at line 1 column 16\); fix the file"):
        load(root)
    root = good_set(tmp_path / "missing")
    (root / "images" / "b.png").unlink()
    with pytest.raises(DatasetError, match=rf"image 2 \('b.png'\) not found at {root / 'images' / 'b.png'} "
                                           r"\(1 of 2 images missing\); copy the images there or fix file_name"):
        load(root)
    with pytest.raises(DatasetError, match=rf"instances_val.json: not found; this folder has the subset\(s\) train"):
        load(root, "val")
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    assert is_coco_layout(tmp_path / "only_images")
    with pytest.raises(DatasetError, match="has images/ but no annotations/ folder"):
        load(tmp_path / "only_images")
    (tmp_path / "only_images" / "annotations").mkdir()
    with pytest.raises(DatasetError, match="annotations: no instances_<subset>.json file"):
        load(tmp_path / "only_images")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load(tmp_path / "absent")
    with pytest.raises(DatasetError, match="class_ids \\[8\\] are not in its categories"):
        load(good_set(tmp_path / "ids"), class_ids=[8])


def test_nucleus_rle_feeds_training_targets_and_scores(tmp_path):
    """NUCLEUS_MASKS on a COCO set: each cell's `nucleus` RLE follows it into the training targets (a crowd region
    has none), and a model that returns the true nuclei scores nucleus_dice 1, nc_ratio_mae 0."""
    from types import SimpleNamespace

    from helpers_model import tiny_config
    from mrcnn_tf.data.pipeline import DataGenerator
    from mrcnn_tf.data.targets import load_image_gt
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset

    cell, nucleus, crowd = disc(64, 64, 20, 20, 10), disc(64, 64, 20, 17, 5), disc(64, 64, 45, 45, 12)
    root = write_coco(tmp_path, {"a.png": (64, 64)}, [rle_ann(5, "a.png", cell, nucleus=uncompressed_rle(nucleus)),
                                                      rle_ann(2, "a.png", crowd, iscrowd=1)])
    dataset = load(root)
    assert dataset.has_nucleus
    config = tiny_config(NUM_CLASSES=6, NUCLEUS_MASKS=True, IMAGE_CACHE_MB=0)
    _, _, class_ids, _, masks, nuclei = load_image_gt(dataset, config, 0, nucleus_masks=True)
    assert list(class_ids) == [5, -2]
    np.testing.assert_array_equal(nuclei[..., 0], nucleus & cell)
    assert not nuclei[..., 1].any()
    x = DataGenerator(dataset, config, shuffle=False).inputs(0)
    assert len(x) == 8 and x[7][0, :, :, 0].any() and not x[7][0, :, :, 1:].any()

    class Exact:
        config = SimpleNamespace(BATCH_SIZE=1)

        def detect(self, images, verbose=0):
            return [{"rois": np.array([[10, 10, 31, 31]]), "class_ids": np.array([5]), "scores": np.array([0.9]),
                     "masks": cell[..., None], "nucleus_masks": (nucleus & cell)[..., None]}]

    results = evaluate_dataset(Exact(), dataset)
    assert results["nucleus_dice"] == 1.0 and results["nc_ratio_mae"] == 0.0

"""`mrcnn-tf detect`, `evaluate` and `export` end to end on a tiny random-weight checkpoint and a
synthetic LISC set: files written, JSON keys present, counts consistent, overlays drawn."""
import csv
import json

import keras
import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner
from helpers_model import tiny_config
from pycocotools.coco import COCO

from mrcnn_tf.engine.checkpoints import save_checkpoint
from mrcnn_tf.cli import cli
from mrcnn_tf.cli._common import list_images, load_config
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.wbc.synth import write_lisc

TYPES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_lisc(root / "data", per_class=1)
    keras.utils.set_random_seed(7)
    config = tiny_config(NUM_CLASSES=6, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=5,
                         MEAN_PIXEL=np.array([211.0, 171.0, 178.0]))
    model = MaskRCNN("inference", config, str(root / "logs"))
    # Zero box deltas: anchor-sized boxes, so the overlays show real masks.
    for layer in model.keras_model.layers:
        if layer.name == "mrcnn_bbox_fc":
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        if layer.name == "mrcnn_mask":
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.full_like(bias, 3.0)])  # masks fill their boxes
    run = root / "logs" / "tiny20250101T0000"
    run.mkdir(parents=True)
    checkpoint = save_checkpoint(model.keras_model, config, run / "mask_rcnn_tiny_0001.weights.h5")
    return root, checkpoint


def invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_config_comes_from_beside_the_checkpoint(setup):
    _, checkpoint = setup
    config = load_config(checkpoint, ["DETECTION_MIN_CONFIDENCE=0.25"])
    assert config.NAME == "tiny" and config.IMAGE_MAX_DIM == 64 and config.BATCH_SIZE == 1
    assert config.DETECTION_MIN_CONFIDENCE == 0.25


def test_detect_folder(setup):
    root, _ = setup
    inputs = root / "inputs"
    inputs.mkdir()
    big = skimage.io.imread(root / "data" / "LISC Database" / "Main Dataset" / "neut" / "1.bmp")
    skimage.io.imsave(inputs / "smear.png", big)
    skimage.io.imsave(inputs / "small.png", big[100:180, 200:300], check_contrast=False)
    out = root / "out"
    output = invoke(["detect", "--weights", "last", "--logs", str(root / "logs"), "--input", str(inputs),
                     "--output", str(out)])
    assert "2 images" in output

    coco = COCO()
    coco.dataset = json.loads((out / "images.json").read_text())
    coco.createIndex()
    results = json.loads((out / "detections.json").read_text())
    assert results, "DETECTION_MIN_CONFIDENCE 0 must give detections"
    detections = coco.loadRes(results)  # valid COCO results with RLE masks
    assert {c["name"] for c in coco.dataset["categories"]} == set(TYPES)

    with open(out / "counts.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image"] + TYPES + ["total"]
    per_image = {r[0]: [int(v) for v in r[1:]] for r in rows[1:3]}
    assert set(per_image) == {"smear.png", "small.png"}
    for counts in per_image.values():
        assert sum(counts[:-1]) == counts[-1]
    assert rows[3][0] == "total" and int(rows[3][-1]) == len(results)
    assert rows[4][0] == "percent" and abs(sum(float(v) for v in rows[4][1:-1]) - 100) < 0.5

    for name, image in (("smear", big), ("small", big[100:180, 200:300])):
        overlay = skimage.io.imread(out / f"{name}_overlay.png")[..., :3]
        assert overlay.shape == image.shape
        image_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"] == f"{name}.png")
        masks = [detections.annToMask(a) for a in detections.loadAnns(detections.getAnnIds(imgIds=[image_id]))]
        assert masks, name
        inside = np.any(masks, axis=0)
        assert inside.any()
        changed = np.any(np.abs(overlay.astype(int) - image.astype(int)) > 3, axis=-1)
        assert changed[inside].mean() > 0.5  # tinted where the masks are


def test_detect_single_file_and_errors(setup, tmp_path):
    root, _ = setup
    image = root / "data" / "LISC Database" / "Main Dataset" / "Baso" / "1.bmp"
    invoke(["detect", "--logs", str(root / "logs"), "--input", str(image), "--output", str(tmp_path / "o")])
    assert (tmp_path / "o" / "1_overlay.png").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MrcnnError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(MrcnnError, match="No checkpoint"):
        invoke(["detect", "--logs", str(tmp_path / "nologs"), "--input", str(image), "--output", str(tmp_path)])


def test_detect_refuses_a_pixel_size_that_is_not_positive(tmp_path):
    for size in ("0", "-0.5"):
        result = CliRunner().invoke(cli, ["detect", "--logs", str(tmp_path), "--input", str(tmp_path), "--output",
                                          str(tmp_path / "out"), "--pixel-size", size])
        assert result.exit_code == 2 and "Invalid value for '--pixel-size'" in result.output
        assert "is not in the range x>0" in result.output and not (tmp_path / "out").exists()


def test_evaluate_writes_design_keys(setup):
    root, _ = setup
    path = root / "eval.json"
    output = invoke(["evaluate", "--dataset", str(root / "data"), "--subset", "all", "--logs", str(root / "logs"),
                     "--weights", "last", "--json", str(path)])
    assert "COCO segm AP50" in output and "confusion matrix" in output
    results = json.loads(path.read_text())
    for key in ("images", "mAP50", "AP", "AP50", "AP75", "bbox_AP", "per_class", "accuracy", "AR", "dice",
                "confusion_matrix"):
        assert key in results, key
    assert results["images"] == 5 and results["cells"] == 6
    assert set(results["per_class"]) == set(TYPES)
    assert 0 <= results["mAP50"] <= 1 and 0 <= results["accuracy"] <= 1
    assert sum(map(sum, results["confusion_matrix"]["rows"])) == 6


def test_export_refuses_existing_output(setup, tmp_path):
    root, _ = setup
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(MrcnnError, match="--force"):
        invoke(["export", "--logs", str(root / "logs"), "--output", str(tmp_path)])
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_detect_writes_the_per_cell_table_and_qupath_geojson(setup, tmp_path):
    from mrcnn_tf.wbc.morphometry import CELL_COLUMNS

    root, _ = setup
    image = skimage.io.imread(root / "data" / "LISC Database" / "Main Dataset" / "neut" / "1.bmp")
    inputs = tmp_path / "in"
    inputs.mkdir()
    skimage.io.imsave(inputs / "smear.png", image)
    out = tmp_path / "out"
    output = invoke(["detect", "--logs", str(root / "logs"), "--input", str(inputs), "--output", str(out),
                     "--pixel-size", "0.5", "--geojson"])
    assert f"Per-cell table (areas in um^2): {out / 'cells.csv'}" in output
    with open(out / "cells.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CELL_COLUMNS
    results = json.loads((out / "detections.json").read_text())
    coco = COCO()
    coco.dataset = json.loads((out / "images.json").read_text())
    coco.createIndex()
    masks = [coco.annToMask(a) for a in coco.loadRes(results).loadAnns(coco.loadRes(results).getAnnIds())]
    # One row per detected cell, in detection order, its area the mask's pixels times (0.5 um)^2.
    assert len(rows) == len(results) > 0 and [int(r["cell_id"]) for r in rows] == list(range(1, len(rows) + 1))
    for row, mask, result in zip(rows, masks, results):
        assert row["image"] == "smear.png" and row["unit"] == "um" and row["type"] in TYPES
        assert float(row["cell_area"]) == pytest.approx(mask.sum() * 0.25, rel=1e-3)
        assert float(row["score"]) == pytest.approx(result["score"], abs=1e-4)
        assert row["nc_ratio"] == ""  # this model has no nucleus output: nothing to measure, nothing invented
    collection = json.loads((out / "smear.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(rows)
    feature = collection["features"][0]
    assert feature["properties"]["objectType"] == "cell" and feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["classification"]["name"] == rows[0]["type"]
    assert "nucleusGeometry" not in feature

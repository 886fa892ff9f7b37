"""The demo pipeline end to end on a tiny configuration, weight copying and the demo command's guard."""
import json

import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf.cli import main
from mrcnn_tf.wbc.demo import DemoConfig, run_synthetic_demo
from mrcnn_tf.wbc.held_out import HeldOutEvaluation, copy_weights


def test_copy_weights_training_to_inference(tmp_path):
    config = tiny_config(BACKBONE="resnet18", NUM_CLASSES=6)
    trainer = modellib.MaskRCNN("training", config, str(tmp_path))
    detector = modellib.MaskRCNN("inference", config, str(tmp_path))
    copied = copy_weights(trainer.keras_model, detector.keras_model)
    weighted = [layer for layer in detector.keras_model.layers if layer.weights]
    assert copied == len(weighted) > 40
    for layer in weighted:
        source = trainer.keras_model.get_layer(layer.name)
        for a, b in zip(layer.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_demo_config_is_valid_and_cpu_sized():
    config = DemoConfig()
    assert config.BACKBONE == "resnet18" and config.NUM_CLASSES == 6
    # BatchNorm trains, infers with moving statistics recomputed before each checkpoint.
    assert config.TRAIN_BN is None and config.BN_STATS_BATCHES > 0
    assert list(config.IMAGE_SHAPE) == [256, 256, 3]


def test_run_demo_writes_every_artefact(tmp_path):
    config = tiny_config(BACKBONE="resnet18", NUM_CLASSES=6, IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128,
                         IMAGES_PER_GPU=2, TRAIN_BN=None, BN_STATS_BATCHES=1, STEPS_PER_EPOCH=1, VALIDATION_STEPS=1,
                         MEAN_PIXEL=np.array([220.7, 191.2, 193.0]), DETECTION_MIN_CONFIDENCE=0.0)
    lines = []
    result = run_synthetic_demo(tmp_path / "demo", epochs=2, per_class=1, mixt=1, heldout_per_class=1, heldout_mixt=0,
                      score_every=2, config=config, echo=lines.append)
    out = tmp_path / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 5 and {"mAP50", "AP", "AP50", "AP75", "bbox_AP", "per_class", "accuracy"} <= set(metrics)
    curve = json.loads((out / "learning_curve.json").read_text())
    # Defined by work: exactly the requested epochs, scored at the fixed epochs, with the steps they took.
    assert [(p["epoch"], p["steps"]) for p in curve] == [(2, 2)] and "mAP50" in curve[-1]
    assert any(line.startswith("epoch 1/2: loss ") and "min left" in line for line in lines)
    assert metrics["dataset"] == "synthetic-lisc"
    assert (out / "loss_curve.png").stat().st_size > 1000
    # Held-out files are all named 1.bmp in five folders: each overlay and count row carries its folder.
    assert sorted(p.name for p in (out / "detections").glob("*_overlay.png")) == [
        f"{folder}_1_overlay.png" for folder in ("Baso", "eosi", "lymp", "mono", "neut")]
    counts = (out / "detections" / "counts.csv").read_text().splitlines()
    assert counts[0].split(",")[1:6] == ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
    assert sorted(row.split(",")[0] for row in counts[1:6]) == [
        f"{folder}/1.bmp" for folder in ("Baso", "eosi", "lymp", "mono", "neut")]
    assert result["checkpoint"].endswith(".weights.h5")
    # Only the final checkpoint (and its config) is kept in the demo's own log folder.
    assert [p.name for p in (out / "logs").rglob("*.weights.h5")] == [result["checkpoint"].split("/")[-1]]
    assert any("mAP50" in line for line in lines) and any("counts.csv" in line for line in lines)


def test_demo_refuses_a_used_output_folder(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("mine")
    try:
        main(["demo", "--output", str(tmp_path / "old")])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "old" / "keep.txt").read_text() == "mine"


def test_train_run_starts_from_given_weights_in_a_new_run(tmp_path, monkeypatch):
    from mrcnn_tf.engine import training
    from mrcnn_tf.engine.checkpoints import resolve_weights
    from mrcnn_tf.wbc.training_run import train_run

    config = tiny_config(BACKBONE="resnet18", NUM_CLASSES=6)
    source = modellib.MaskRCNN("training", config, str(tmp_path / "old"))
    start = tmp_path / "old" / "mask_rcnn_tiny_0007.weights.h5"
    start.parent.mkdir()
    source.keras_model.save_weights(str(start))
    seen = {}

    def fake_train(self, train_set, val_set, learning_rate, epochs, layers, **kwargs):
        seen.update(epoch=self.epoch, log_dir=self.log_dir, weights=self.keras_model.get_layer("conv1").get_weights())

    monkeypatch.setattr(training, "train", fake_train)
    lines = []
    train_run(config, None, None, tmp_path / "new", [("all", 1, 0.001)], choice=resolve_weights(str(start), tmp_path),
              fresh_run=True, echo=lines.append)
    # The start weights, but a run of its own from epoch 0 (not a resume of the old folder at epoch 7).
    assert seen["epoch"] == 0 and str(tmp_path / "new") in seen["log_dir"]
    for a, b in zip(seen["weights"], source.keras_model.get_layer("conv1").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any("loaded" in line for line in lines)


def test_time_estimate_leaves_out_the_traced_first_step():
    from types import SimpleNamespace

    scorer = SimpleNamespace(mrcnn=SimpleNamespace(config=SimpleNamespace(STEPS_PER_EPOCH=51)), epochs=8)
    # 160 s for epoch 1, 60 s of it the first step: 100 s for 50 steps -> 102 s per later epoch, 7 left.
    line = HeldOutEvaluation.estimate_line(scorer, 160.0, 60.0, 1)
    assert "epoch 1 took 160 s" in line and "60 s of it the first step" in line
    assert "about 12 more minutes" in line and "remaining 7 epochs" in line
    # One step per epoch: nothing to subtract, the epoch itself is the estimate.
    single = SimpleNamespace(mrcnn=SimpleNamespace(config=SimpleNamespace(STEPS_PER_EPOCH=1)), epochs=3)
    assert "about 4 more minutes" in HeldOutEvaluation.estimate_line(single, 120.0, 120.0, 1)


def test_each_point_is_scored_again_with_the_colour_typer_on_the_same_detections(monkeypatch):
    from types import SimpleNamespace

    from mrcnn_tf.evaluation import evaluate as evaluate_module
    from mrcnn_tf.wbc import held_out

    images = [np.full((8, 8, 3), value, np.uint8) for value in (10, 200, 30)]
    masks = np.zeros((8, 8, 1), bool)
    masks[2:5, 2:5] = True
    detected = []

    def detect(batch, verbose=0):  # the network: every cell class 5
        detected.append(len(batch))
        return [{"rois": np.array([[2, 2, 5, 5]]), "class_ids": np.array([5], np.int32), "scores": np.array([0.9]),
                 "masks": masks.copy()} for _ in batch]

    class BrightIsEosinophil:  # a typer: class 2 where the cell is bright, 3 where it is dark
        def features(self, image, mask):
            return np.array([image[mask].mean()])

        def probabilities(self, features):  # columns: class ids 1, 2, 3
            bright = np.asarray(features)[:, :1] > 100
            return np.where(bright, [[0.0, 0.8, 0.2]], [[0.1, 0.3, 0.6]])

    scored = []

    def fake_evaluate(model, dataset):  # two batches of the dataset's images, as evaluate_dataset's detect_batch
        ids = [int(r["class_ids"][0]) for batch in (images[:2], images[2:]) for r in model.detect(batch)]
        scored.append(ids)
        typed = ids != [5, 5, 5]
        return {"mAP50": 0.9 if typed else 0.5, "AP": 0.6 if typed else 0.3, "accuracy": 0.95 if typed else 0.4,
                "per_class": {"Eosinophil": 1.0 if typed else 0.0}, "confusion_matrix": {"typed": typed}}

    monkeypatch.setattr(evaluate_module, "evaluate_dataset", fake_evaluate)
    monkeypatch.setattr(held_out, "copy_weights", lambda source, target: 0)
    lines = []
    inference = SimpleNamespace(keras_model=None, config=SimpleNamespace(BATCH_SIZE=2), detect=detect)
    scorer = SimpleNamespace(mrcnn=SimpleNamespace(keras_model=None, config=SimpleNamespace(STEPS_PER_EPOCH=10)),
                             inference=inference, val_dataset="val", curve=[], echo=lines.append,
                             typer=BrightIsEosinophil(), training_seconds=lambda: 120.0, _paused=0.0)
    point = HeldOutEvaluation.evaluate(scorer, 3, {"loss": 1.5})
    # The network ran once per batch; the second pass retyped its detections by the colour inside each mask.
    assert detected == [2, 1] and scored == [[5, 5, 5], [3, 2, 3]]
    assert (point["mAP50"], point["accuracy"], point["steps"]) == (0.5, 0.4, 30)  # the class head's, as before
    assert point["colour_typed"] == {"mAP50": 0.9, "AP": 0.6, "accuracy": 0.95, "per_class": {"Eosinophil": 1.0},
                                     "confusion_matrix": {"typed": True}}
    assert "typed by colour: mAP50 0.900" in lines[-1]
    scorer.typer, scored[:], detected[:] = None, [], []  # no typer: one scoring, no colour_typed key
    assert "colour_typed" not in HeldOutEvaluation.evaluate(scorer, 4) and scored == [[5, 5, 5]]
    assert detected == [2, 1]


def test_a_replay_refuses_a_batch_it_did_not_record():
    from mrcnn_tf.wbc.held_out import _RetypedReplay

    replay = _RetypedReplay([([np.zeros((4, 4, 3), np.uint8)], [{}])], typer=None, config=None)
    with pytest.raises(RuntimeError, match="2 images where 1 were recorded"):
        replay.detect([np.zeros((4, 4, 3), np.uint8)] * 2)


def test_the_demo_ships_bccd_wbc_with_its_licence():
    from mrcnn_tf.wbc.demo import DEMO_DATA

    for subset, images, cells in (("train", 227, 230), ("val", 57, 60)):
        annotations = json.loads((DEMO_DATA / "annotations" / f"instances_{subset}.json").read_text())
        assert (len(annotations["images"]), len(annotations["annotations"])) == (images, cells)
        assert all((DEMO_DATA / "images" / image["file_name"]).is_file() for image in annotations["images"])
    licence = (DEMO_DATA / "LICENSE").read_text()
    assert "MIT License" in licence and "shenggan" in licence and "Banik" in licence


@pytest.mark.slow
def test_real_demo_trains_on_real_fields_and_writes_every_artefact(tmp_path):
    from helpers_coco import BCCD_FIELDS

    from mrcnn_tf.wbc.bccd import BccdConfig
    from mrcnn_tf.wbc.demo import run_demo
    from mrcnn_tf.wbc.morphometry import CELL_COLUMNS

    small = type("SmallBccdConfig", (BccdConfig,), dict(
        IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGES_PER_GPU=2, STEPS_PER_EPOCH=1, BN_STATS_BATCHES=1,
        POST_NMS_ROIS_TRAINING=50, TRAIN_ROIS_PER_IMAGE=12, DETECTION_MIN_CONFIDENCE=0.0))()
    lines = []
    result = run_demo(tmp_path / "demo", epochs=2, data_dir=BCCD_FIELDS, config=small, echo=lines.append)
    out = tmp_path / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "bccd" and metrics["images"] == 2 and {"mAP50", "AP", "accuracy"} <= set(metrics)
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert sorted(p.name for p in (out / "detections").glob("*_overlay.png")) == [
        "BloodImage_00031_overlay.png", "BloodImage_00104_overlay.png"]
    header = (out / "detections" / "cells.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == CELL_COLUMNS
    assert (out / "detections" / "counts.csv").is_file()
    # The run's colour typer types the held-out cells; only the last checkpoint is kept.
    [run] = (out / "logs").iterdir()
    assert (run / "colour_typer.json").is_file()
    assert [p.name for p in run.glob("*.weights.h5")] == [result["checkpoint"].split("/")[-1]]

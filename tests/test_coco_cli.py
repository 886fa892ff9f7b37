"""`mrcnn-tf train` and `evaluate` on COCO layouts: the copied BCCD fields trained end to end with the
demo preset (one step), a held-out folder with only instances_test.json scored with --subset test,
and the one-line errors of COCO folders, subsets, presets and class counts."""
import json
import shutil
import signal

import pytest
from helpers_coco import BCCD_FIELDS, polygon_ann, write_coco

from mrcnn_tf.cli import main
from mrcnn_tf.cli._common import load_config

TINY = ["BACKBONE=resnet18", "IMAGE_MIN_DIM=64", "IMAGE_MAX_DIM=64", "RPN_ANCHOR_SCALES=[8,16,32,64,128]", "RPN_TRAIN_ANCHORS_PER_IMAGE=32",
        "PRE_NMS_LIMIT=300", "POST_NMS_ROIS_TRAINING=40", "POST_NMS_ROIS_INFERENCE=30", "TRAIN_ROIS_PER_IMAGE=12",
        "MAX_GT_INSTANCES=4", "DETECTION_MIN_CONFIDENCE=0.0", "STEPS_PER_EPOCH=1", "VALIDATION_STEPS=1",
        "IMAGES_PER_GPU=2", "BN_STATS_BATCHES=0"]


def run_cli(args, capsys):
    previous = signal.getsignal(signal.SIGTERM)  # train turns SIGTERM into Ctrl-C for its process
    try:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def one_line_error(code, err, *fragments):
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("Warning: ", "Note: "))]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


def settings(pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The copied BCCD fields trained for one step from random weights with the demo preset."""
    logs = tmp_path_factory.mktemp("coco_cli") / "logs"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            main(["train", "--dataset", str(BCCD_FIELDS), "--weights", "none", "--config", "demo", "--schedule",
                  "all:1", "--logs", str(logs), "--seed", "0", "--no-augment"] + settings(TINY))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.code == 0
    checkpoints = list(logs.glob("demo*/mask_rcnn_demo_0001.weights.h5"))
    assert len(checkpoints) == 1
    return logs, checkpoints[0]


@pytest.mark.slow
def test_train_on_coco_layout_with_a_preset_then_evaluate_val(trained, tmp_path, capsys):
    logs, checkpoint = trained
    config = load_config(checkpoint)  # the preset's values, saved beside the checkpoint, reload
    assert config.NAME == "demo" and config.BACKBONE == "resnet18" and config.TOP_DOWN_PYRAMID_SIZE == 64
    assert config.TRAIN_BN is None and config.IMAGE_MAX_DIM == 64 and config.NUM_CLASSES == 6
    run = json.loads((checkpoint.parent / "train_command.json").read_text())
    assert run["config"] == "demo" and run["dataset"] == str(BCCD_FIELDS)

    code, out, err = run_cli(["evaluate", "--dataset", BCCD_FIELDS, "--logs", logs, "--json", tmp_path / "val.json"],
                             capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "val.json").read_text())
    assert results["images"] == 2 and results["cells"] == 3 and results["subset"] == "val"  # Monocyte + 2 Neutrophils
    assert sorted(results["per_class"]) == ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
    assert "mAP50" in out


@pytest.mark.slow
def test_held_out_folder_with_only_a_test_file_evaluates_with_subset_test(trained, tmp_path, capsys):
    logs, _ = trained
    held = tmp_path / "held_out"
    shutil.copytree(BCCD_FIELDS / "images", held / "images")
    (held / "annotations").mkdir()
    shutil.copy(BCCD_FIELDS / "annotations" / "instances_train.json", held / "annotations" / "instances_test.json")
    code, out, err = run_cli(["evaluate", "--dataset", held, "--subset", "test", "--logs", logs,
                              "--json", tmp_path / "test.json"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "test.json").read_text())
    assert results["images"] == 4 and results["cells"] == 5 and results["subset"] == "test"
    code, _, err = run_cli(["evaluate", "--dataset", held, "--logs", logs], capsys)  # default --subset val
    one_line_error(code, err, f"Error: {held / 'annotations' / 'instances_val.json'}: not found; this folder has the "
                              "subset(s) test", "(--subset NAME)")


@pytest.mark.slow
def test_evaluate_refuses_a_dataset_with_other_classes_than_the_model(trained, tmp_path, capsys):
    logs, checkpoint = trained
    cats = [{"id": 1, "name": "cell"}, {"id": 2, "name": "platelet"}]
    root = write_coco(tmp_path, {"a.png": (64, 64)}, [polygon_ann(1, "a.png", [5, 5, 30, 5, 30, 30])],
                      categories=cats, subset="val")
    code, _, err = run_cli(["evaluate", "--dataset", root, "--logs", logs], capsys)
    one_line_error(code, err, f"Error: {checkpoint}: the model has NUM_CLASSES=6 but the dataset 3 (BG, cell, "
                              "platelet)")


def two_subsets(tmp_path, categories=None, val_categories=None):
    kwargs = {"categories": categories} if categories else {}
    root = write_coco(tmp_path, {"a.png": (64, 64)}, [polygon_ann(1, "a.png", [5, 5, 30, 5, 30, 30])], **kwargs)
    val_kwargs = {"categories": val_categories} if val_categories else kwargs
    write_coco(tmp_path, {"a.png": (64, 64)}, [polygon_ann(1, "a.png", [5, 5, 30, 5, 30, 30])], subset="val",
               **val_kwargs)
    return root


def test_train_errors_on_coco_folders_are_one_line(tmp_path, capsys):
    logs = tmp_path / "logs"
    # Other categories than LISC's: the dataset decides NUM_CLASSES, the user sets it.
    cats = [{"id": 1, "name": "cell"}, {"id": 2, "name": "platelet"}]
    root = two_subsets(tmp_path / "own", cats)
    code, _, err = run_cli(["train", "--dataset", root, "--weights", "none", "--config", "lisc", "--logs", logs],
                           capsys)
    one_line_error(code, err, "Error: NUM_CLASSES is 6 (--set or the lisc preset) but the dataset has 3 classes "
                              "(BG, cell, platelet): pass --set NUM_CLASSES=3")
    # train validates on instances_val.json: without it, say so.
    only_train = write_coco(tmp_path / "train_only", {"a.png": (64, 64)}, [polygon_ann(1, "a.png", [5, 5, 30, 5, 9, 30])])
    code, _, err = run_cli(["train", "--dataset", only_train, "--weights", "none", "--logs", logs], capsys)
    one_line_error(code, err, f"Error: {only_train / 'annotations' / 'instances_val.json'}: not found; train validates "
                              "on it: move some annotated images from instances_train.json into it")
    # The two files must describe the same classes.
    root = two_subsets(tmp_path / "differ", cats, [{"id": 1, "name": "cell"}])
    code, _, err = run_cli(["train", "--dataset", root, "--weights", "none", "--logs", logs], capsys)
    one_line_error(code, err, "the val classes (cell) are not the train classes (cell, platelet)")
    # An unknown preset, before anything is loaded.
    code, _, err = run_cli(["train", "--dataset", tmp_path / "absent", "--weights", "none", "--config", "bcdd",
                            "--logs", logs], capsys)
    one_line_error(code, err, "Error: --config bcdd: unknown preset; use one of lisc, demo, bccd")
    # A malformed JSON file.
    (root / "annotations" / "instances_train.json").write_text("{")
    code, _, err = run_cli(["train", "--dataset", root, "--weights", "none", "--logs", logs], capsys)
    one_line_error(code, err, f"{root / 'annotations' / 'instances_train.json'}: not valid JSON")
    assert not logs.exists()


def test_named_subsets_need_a_coco_folder(tmp_path, capsys):
    from mrcnn_tf.wbc.synth import write_lisc

    write_lisc(tmp_path / "lisc", per_class=1, seed=0)
    code, _, err = run_cli(["evaluate", "--dataset", tmp_path / "lisc", "--subset", "test", "--logs", tmp_path], capsys)
    one_line_error(code, err, f"Error: --subset test: a LISC-layout folder ({tmp_path / 'lisc'}) has the subsets "
                              "train, val, all; named subsets need a COCO layout")
    (tmp_path / "smears" / "images").mkdir(parents=True)
    code, _, err = run_cli(["evaluate", "--dataset", tmp_path / "smears", "--logs", tmp_path], capsys)
    one_line_error(code, err, f"Error: {tmp_path / 'smears'}: has images/ but no annotations/ folder")


def test_fingerprint_prints_what_train_would_choose(capsys):
    from helpers_coco import BCCD_FIELDS

    code, out, err = run_cli(["fingerprint", str(BCCD_FIELDS)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Fingerprint: 4 training images, 5 cells, types Basophil 1, Eosinophil 1")
    assert any(line.startswith("IMAGE_MAX_DIM") and " 320 " in line for line in lines)
    assert any(line.startswith("NUM_CLASSES") and " 6 " in line for line in lines)
    code, out, err = run_cli(["fingerprint", str(BCCD_FIELDS), "--weights", "coco"], capsys)
    assert code == 0, err
    assert any(line.startswith("MEAN_PIXEL") and "kept: the coco weights" in line for line in out.splitlines())
    assert any(line.startswith("SCHEDULE") and "heads:" in line for line in out.splitlines())


def test_train_without_a_preset_configures_itself_from_the_data(tmp_path, capsys, monkeypatch):
    """--weights none and no --config: the fingerprint's table is printed and its settings reach the run."""
    from helpers_coco import BCCD_FIELDS

    from mrcnn_tf.wbc import training_run

    seen = {}
    monkeypatch.setattr(training_run, "train_run", lambda config, *a, **k: seen.update(config=config, stages=a[3]) or
                        type("Run", (), {"chief": False})())
    code, out, err = run_cli(["train", "--dataset", str(BCCD_FIELDS), "--weights", "none", "--logs",
                              str(tmp_path / "logs"), "--set", "IMAGES_PER_GPU=2"], capsys)
    assert code == 0, err
    assert "Fingerprint: 4 training images" in out and "MOSAIC_TILES" in out
    config = seen["config"]
    assert config.NAME == "wbc" and config.IMAGE_MAX_DIM == 320 and config.IMAGES_PER_GPU == 2  # --set on top
    assert config.FINGERPRINT["choices"][0]["key"] == "NUM_CLASSES" and seen["stages"][0][0] == "all"


def test_train_from_coco_weights_without_a_preset_takes_the_datas_size_and_the_weights_mean(tmp_path, capsys,
                                                                                             monkeypatch):
    from helpers_coco import BCCD_FIELDS

    from mrcnn_tf.engine.driver import DEFAULT_SCHEDULE
    from mrcnn_tf.lisc import LiscConfig
    from mrcnn_tf.wbc import training_run

    seen = {}
    monkeypatch.setattr(training_run, "train_run", lambda config, *a, **k: seen.update(config=config, stages=a[3]) or
                        type("Run", (), {"chief": False})())
    code, out, err = run_cli(["train", "--dataset", str(BCCD_FIELDS), "--weights", "coco", "--logs",
                              str(tmp_path / "logs")], capsys)
    assert code == 0, err
    config = seen["config"]
    assert "Fingerprint: 4 training images" in out and config.IMAGE_MAX_DIM == 320  # the data's size
    assert list(config.MEAN_PIXEL) == list(LiscConfig().MEAN_PIXEL) and config.TRAIN_BN is False  # fine-tuning
    assert [stage for stage, *_ in seen["stages"]] == [s.split(":")[0] for s in DEFAULT_SCHEDULE.split(",")]

"""`mrcnn-tf train`: argument handling, bad data and weights (one line, exit 2), empty masks.

Most cases fail before the model is built; one trains a tiny model (64 px, one step) end to end on a
synthetic set where most training images have no cell.
"""
import shutil
import signal
import warnings
import zipfile

import numpy as np
import pytest
from helpers_coco import polygon_ann, write_coco
from helpers_model import tiny_config

from mrcnn_tf.engine.checkpoints import WeightsChoice, save_checkpoint
from mrcnn_tf.cli import main
from mrcnn_tf.engine.driver import parse_schedule
from mrcnn_tf.wbc.training_run import schedule_text as _schedule_text
from mrcnn_tf.data import lisc_format as fmt
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.lisc import LiscDataset
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.wbc.synth import write_lisc


def test_parse_schedule_cumulative_stages_and_learning_rates():
    assert parse_schedule("heads:20,all:40", 0.001) == [("heads", 20, 0.001), ("all", 40, 0.001)]
    assert parse_schedule("heads:2, 4+:5, all:9", 0.01, later_lr_factor=0.1) == [
        ("heads", 2, 0.01), ("4+", 5, pytest.approx(0.001)), ("all", 9, pytest.approx(0.001))]
    assert parse_schedule("all:3@0.0005", 0.001) == [("all", 3, 0.0005)]


@pytest.mark.parametrize("text, fragment", [
    ("heads:20,all:10", "cumulative"),
    ("heads:20,all:20", "cumulative"),
    ("backbone:5", "STAGE"),
    ("heads20", "STAGE"),
    ("heads:x", "whole number"),
    ("all:3@-1", "positive"),
])
def test_parse_schedule_errors_say_how_to_fix(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_schedule(text, 0.001)


def test_default_schedule_from_scratch_is_the_presets_recipe(tmp_path):
    scratch, coco = WeightsChoice("none"), WeightsChoice("coco")
    assert _schedule_text(None, scratch, "bccd") == "all:16"  # BccdConfig's measured 800 steps
    assert _schedule_text(None, scratch, "BCCD") == "all:16"
    assert _schedule_text(None, scratch, "demo") == _schedule_text(None, scratch, None) == "all:40"
    assert _schedule_text(None, coco, "bccd") == "heads:20,all:40"  # fine-tuning keeps Matterport's stages
    assert _schedule_text("all:3", scratch, "bccd") == "all:3"
    resumed = tmp_path / "mask_rcnn_bccd_0002.weights.h5"
    (tmp_path / "train_command.json").write_text('{"schedule": "all:7"}')
    assert _schedule_text(None, WeightsChoice("checkpoint", resumed, 2), "bccd") == "all:7"


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr()


def test_heads_stage_from_scratch_is_refused(tmp_path, capsys):
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", "none", "--logs", str(tmp_path / "logs"),
                         "--schedule", "heads:2,all:4"], capsys)
    assert code == 2
    assert out.err.count("\n") == 1 and "random weights" in out.err and "all:" in out.err
    assert not (tmp_path / "logs").exists()


def test_bad_schedule_and_missing_weights_file_are_one_line_errors(tmp_path, capsys):
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", "coco", "--schedule", "all:5,heads:2",
                         "--logs", str(tmp_path)], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "cumulative" in out.err
    code, out = run_cli(["train", "--dataset", str(tmp_path), "--weights", str(tmp_path / "nope.h5"),
                         "--logs", str(tmp_path)], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "no such file" in out.err


# ------------------------------------------------------------------------------------- through the real command
TINY_SET = ["BACKBONE=resnet18", "IMAGE_MIN_DIM=64", "IMAGE_MAX_DIM=64", "RPN_ANCHOR_SCALES=[8,16,32,64,128]",
            "RPN_TRAIN_ANCHORS_PER_IMAGE=32", "PRE_NMS_LIMIT=300", "POST_NMS_ROIS_TRAINING=40",
            "TRAIN_ROIS_PER_IMAGE=12", "MAX_GT_INSTANCES=4", "MINI_MASK_SHAPE=[28,28]", "FPN_CLASSIF_FC_LAYERS_SIZE=64",
            "TOP_DOWN_PYRAMID_SIZE=64", "STEPS_PER_EPOCH=1", "VALIDATION_STEPS=1", "IMAGES_PER_GPU=2"]


def tiny_args(*args):
    out = [str(a) for a in args]
    for pair in TINY_SET:
        out += ["--set", pair]
    return out


def one_line_error(code, err, *fragments):
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Warning: ")]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def lisc(tmp_path_factory):
    """Two synthetic images per type folder: the split puts one of each in 'train', one in 'val'."""
    out = tmp_path_factory.mktemp("train") / "jeu ü"
    write_lisc(out, per_class=2, seed=3)
    return out


@pytest.fixture(scope="module")
def four_class_checkpoint(tmp_path_factory):
    """A tiny NUM_CLASSES=4 checkpoint (config JSON beside it) with the sizes of TINY_SET."""
    config = tiny_config(NUM_CLASSES=4, FPN_CLASSIF_FC_LAYERS_SIZE=64, TOP_DOWN_PYRAMID_SIZE=64)
    run = tmp_path_factory.mktemp("ckpt") / "tiny20250101T0000"
    run.mkdir()
    model = MaskRCNN("inference", config, str(run.parent))
    return save_checkpoint(model.keras_model, config, run / "mask_rcnn_tiny_0001.weights.h5")


def test_missing_dataset_is_the_loaders_one_line_error(tmp_path, capsys):
    code, out = run_cli(["train", "--dataset", str(tmp_path / "LSIC"), "--weights", "none",
                         "--logs", str(tmp_path / "logs")], capsys)
    one_line_error(code, out.err, f"Error: {tmp_path / 'LSIC'}: dataset folder not found",
                   "make a synthetic one with `mrcnn-tf synth DIR`")
    assert not (tmp_path / "logs").exists()


def test_nucleus_masks_on_data_without_nuclei_is_one_line(tmp_path, capsys):
    """--set NUCLEUS_MASKS=true on a COCO set without 'nucleus' segmentations: refused before any model or run."""
    for subset in ("train", "val"):
        write_coco(tmp_path / "coco", {"a.png": (64, 64)}, [polygon_ann(1, "a.png", [8, 8, 40, 8, 40, 40, 8, 40])],
                   subset=subset)
    code, out = run_cli(tiny_args("train", "--dataset", tmp_path / "coco", "--weights", "none", "--config", "lisc",
                                  "--logs", tmp_path / "logs", "--schedule", "all:1", "--set", "NUCLEUS_MASKS=true"),
                        capsys)
    one_line_error(code, out.err, f"NUCLEUS_MASKS is on but the training set ({tmp_path / 'coco'}) has no nucleus "
                   "masks (has_nucleus is False;", "train with --set NUCLEUS_MASKS=false, or add nucleus masks")
    assert not (tmp_path / "logs").exists()


def test_damaged_weights_are_refused_before_dataset_and_model(four_class_checkpoint, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the weights file was checked")

    monkeypatch.setattr("mrcnn_tf.model.MaskRCNN", no_model)
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(four_class_checkpoint.read_bytes()[:30000])
    text = tmp_path / "notes.h5"
    text.write_text("these are not weights")
    archive = tmp_path / "other.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", "{}")
    cases = [(cut, f"{cut} is truncated or damaged (30,000 bytes", "download or copy it again"),
             (text, f"{text} is not an HDF5 weight file", "pickled checkpoints such as .pkl/.pth are never read"),
             (archive, f"{archive} is a zip archive without model.weights.h5", "give a .keras model file"),
             (tmp_path / "nope.h5", f"--weights {tmp_path / 'nope.h5'}: no such file",
              "give coco, imagenet, last, none or a weight file path")]
    for weights, message, fix in cases:
        # The dataset folder does not exist either: the weights error must come first.
        code, out = run_cli(["train", "--dataset", str(tmp_path / "absent"), "--weights", str(weights),
                             "--logs", str(tmp_path / "logs")], capsys)
        one_line_error(code, out.err, f"Error: {message}", fix)
    assert not (tmp_path / "logs").exists()


def test_class_count_of_config_and_of_start_weights(lisc, four_class_checkpoint, tmp_path, capsys):
    logs = tmp_path / "logs"
    # The checkpoint's saved config says 4 classes; the LISC dataset has 6 (BG + 5 types).
    code, out = run_cli(tiny_args("train", "--dataset", lisc, "--weights", four_class_checkpoint, "--logs", logs),
                        capsys)
    one_line_error(code, out.err, "Error: NUM_CLASSES is 4 (config mask_rcnn_tiny_0001.config.json) but the dataset "
                   "has 6 classes (BG, ", "pass --set NUM_CLASSES=6")
    # Matching the dataset, the 4-class heads do not fit the model: refused, nothing loaded, no run folder.
    code, out = run_cli(tiny_args("train", "--dataset", lisc, "--weights", four_class_checkpoint, "--logs", logs,
                                  "--set", "NUM_CLASSES=6"), capsys)
    one_line_error(code, out.err, f"Error: {four_class_checkpoint}: 3 layer(s) do not fit (mrcnn_",
                   "the file is for NUM_CLASSES=4, the dataset and model for 6",
                   "or from --weights coco (its class layers are left out and trained anew)")
    assert sorted(p.name for p in four_class_checkpoint.parent.iterdir()) == [
        "mask_rcnn_tiny_0001.config.json", "mask_rcnn_tiny_0001.weights.h5"]  # no new run in its folder
    assert not logs.exists()


def copy_with_blank_masks(lisc, tmp_path, keep):
    """Copy the LISC tree to tmp_path/copie and empty the masks of all but `keep` 'train' images there.

    Returns (root of the copy, blanked mask paths, ids of the kept images).
    """
    root = tmp_path / "copie"
    shutil.copytree(lisc, root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blanked, kept = blank_train_masks(root, keep)
    return root, blanked, kept


def blank_train_masks(root, keep):
    """Empty the masks of all but `keep` 'train' images; returns (blanked mask paths, ids of the others)."""
    dataset = LiscDataset()
    dataset.load_lisc(root, "train")
    dataset.prepare()
    blanked, kept = [], []
    for image_id in dataset.image_ids:
        info = dataset.image_info[image_id]
        if len(kept) < keep:
            kept.append(info["id"])
            continue
        fmt.write_bmp(info["mask_path"], np.zeros_like(fmt.read_grey_mask(info["mask_path"])))
        blanked.append(info["mask_path"])
    return blanked, kept


@pytest.mark.parametrize("verify", [True, False])
def test_generator_skips_images_without_cells(lisc, tmp_path, verify):
    """Verified: empty images never enter the order. Unverified: each is met and gives its slot to the next."""
    root, blanked, kept = copy_with_blank_masks(lisc, tmp_path, keep=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = LiscDataset()
        dataset.load_lisc(root, "train", verify=verify)
    dataset.prepare()
    assert dataset.num_images == 5 and len(blanked) == 3
    good = {i for i in dataset.image_ids if dataset.image_info[i]["id"] in kept}
    config = tiny_config(NUM_CLASSES=6, IMAGES_PER_GPU=2)
    generator = DataGenerator(dataset, config, shuffle=True, seed=1, steps=4)
    seen = set()
    for epoch in range(3):
        for index in range(len(generator)):
            (x,) = generator[index]
            ids = x[1][:, 0].astype(int)
            assert set(ids) <= good, (ids, good)
            assert (x[4] > 0).any(axis=1).all()  # every image of the batch has an instance
            seen.update(ids)
        generator.on_epoch_end()
    assert seen == good


def test_train_runs_on_a_dataset_with_empty_masks(lisc, tmp_path, capsys):
    root, blanked, _ = copy_with_blank_masks(lisc, tmp_path, keep=1)
    logs = tmp_path / "logs"
    previous = signal.getsignal(signal.SIGTERM)  # train turns SIGTERM into Ctrl-C for its process
    try:
        with pytest.raises(SystemExit) as info:
            main(tiny_args("train", "--dataset", root, "--weights", "none", "--schedule", "all:1",
                           "--logs", logs, "--seed", "0", "--no-augment"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = capsys.readouterr()
    assert info.value.code == 0, out.err[-3000:]
    warned = [line for line in out.err.splitlines() if line.startswith("Warning: ")]
    assert len(warned) == len(blanked) == 4, out.err
    for line, mask in zip(warned, blanked):
        assert line.startswith(f"Warning: {mask}: mask holds no cell") and "the image is kept" in line
    assert "Traceback" not in out.err and "Error" not in out.err
    found = list(logs.glob("*/mask_rcnn_*_0001.weights.h5"))
    assert len(found) == 1 and f"Done: {found[0]}" in out.out


def test_training_from_scratch_turns_batchnorm_on_with_exact_statistics(capsys):
    from types import SimpleNamespace

    from mrcnn_tf.cli.train import _prepare_config

    scratch = SimpleNamespace(kind="none", path=None)
    config = _prepare_config(scratch, [])
    assert config.TRAIN_BN is None and config.BN_STATS_BATCHES == 4
    assert "recomputed on 4 batches" in capsys.readouterr().out
    assert _prepare_config(scratch, ["BN_STATS_BATCHES=0"]).BN_STATS_BATCHES == 0  # the user's choice stays
    frozen = _prepare_config(scratch, ["TRAIN_BN=false"])
    assert frozen.TRAIN_BN is False and "rarely learns" in capsys.readouterr().err
    coco = _prepare_config(SimpleNamespace(kind="coco", path=None), [])
    assert coco.TRAIN_BN is False and coco.BN_STATS_BATCHES == 0  # fine-tuning keeps Matterport's frozen BN

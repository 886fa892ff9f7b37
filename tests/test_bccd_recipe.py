"""The BCCD-WBC recipe: `--config bccd` is valid, picks its augmentation and trains a COCO layout end to end."""
import json
import signal

import numpy as np
import pytest
from helpers_coco import BCCD_FIELDS

from mrcnn_tf.wbc import presets
from mrcnn_tf.wbc.bccd import BccdConfig
from mrcnn_tf.cli import main
from mrcnn_tf.data.augment import AUGMENTATIONS, augmentation_for
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.lisc import LiscConfig


def test_bccd_preset_is_registered_and_cpu_sized():
    config = presets.make_config("bccd")
    assert isinstance(config, BccdConfig) and config.NUM_CLASSES == 6
    assert list(config.IMAGE_SHAPE) == [320, 320, 3] and config.BACKBONE == "resnet18"
    assert config.TRAIN_BN is None and config.BN_STATS_BATCHES > 0  # from scratch: BatchNorm trains
    assert config.REPEAT_FACTOR_THRESHOLD > 0 and config.AUGMENTATION == "bccd"
    assert config.MOSAIC_TILES == 2 and config.MAX_GT_INSTANCES >= 4  # four fields of one or two cells
    assert config.MIXED_PRECISION == "auto"  # bfloat16 where the CPU runs it faster (same figures, fewer minutes)
    # A fixed amount of work: `--weights none` runs 16 epochs, over which the cosine rate decays to zero.
    assert config.LEARNING_RATE_SCHEDULE == "cosine" and presets.scratch_schedule("bccd") == "all:16"


def test_augmentation_follows_the_config():
    assert LiscConfig().AUGMENTATION == "lisc" and augmentation_for(LiscConfig()) is not None
    assert augmentation_for(type("C", (LiscConfig,), {"AUGMENTATION": "none"})()) is None
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    assert augmentation_for(BccdConfig())(image=image).shape == image.shape
    assert set(AUGMENTATIONS) == {"lisc", "bccd", "none"}
    with pytest.raises(ConfigError, match="AUGMENTATION = 'hsv' is invalid: use lisc, bccd or none"):
        type("C", (LiscConfig,), {"AUGMENTATION": "hsv"})()


@pytest.mark.slow
def test_train_with_the_bccd_preset_on_real_fields(tmp_path, capsys):
    logs = tmp_path / "logs"
    small = ["IMAGE_MIN_DIM=128", "IMAGE_MAX_DIM=128", "IMAGES_PER_GPU=2", "STEPS_PER_EPOCH=1", "BN_STATS_BATCHES=1",
             "POST_NMS_ROIS_TRAINING=50", "TRAIN_ROIS_PER_IMAGE=12"]
    previous = signal.getsignal(signal.SIGTERM)  # train turns SIGTERM into Ctrl-C for its process
    try:
        with pytest.raises(SystemExit) as info:
            main(["train", "--dataset", str(BCCD_FIELDS), "--weights", "none", "--config", "bccd", "--schedule",
                  "all:1", "--logs", str(logs), "--seed", "0"] + [a for s in small for a in ("--set", s)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    [checkpoint] = logs.glob("bccd*/mask_rcnn_bccd_0001.weights.h5")
    saved = checkpoint.with_name("mask_rcnn_bccd_0001.config.json").read_text()
    assert '"REPEAT_FACTOR_THRESHOLD": 0.3' in saved and '"AUGMENTATION": "bccd"' in saved
    assert '"MOSAIC_TILES": 2' in saved and '"COLOUR_TYPING": true' in saved
    precision = json.loads(saved)["CPU_KERNELS"]["precision"]  # "auto", resolved on this machine and said so
    assert f"Precision: {precision} (MIXED_PRECISION=auto" in out.out
    # The colour typer is fitted on the training cells after training and evaluate types with it.
    assert (checkpoint.parent / "colour_typer.json").is_file() and "Colour typer:" in out.out
    typer = json.loads((checkpoint.parent / "colour_typer.json").read_text())  # the fields' own nucleus masks
    assert typer["feature_set"] == "colour+compartments" and typer["nucleus_source"].startswith("fitted on")
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--dataset", str(BCCD_FIELDS), "--logs", str(logs)])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    assert "Types from" in out.err and "colour_typer.json" in out.err and "typing accuracy" in out.out

"""Config.NUCLEUS_MASKS end to end on tiny models: data, training graph and losses, detect, export, COCO weights.

Without it the graphs, weights and results are Matterport's (the rest of the suite); with it the mask head
gains `mrcnn_nucleus_mask` and `detect` results `nucleus_masks`.
"""
import json

import keras
import numpy as np
import pytest

from helpers_model import favour_foreground, tiny_config
from helpers_weights import seeded_values, write_keras2_h5
from mrcnn_tf.config import LOSS_NAMES, NUCLEUS_LOSS_NAME
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.data.image_cache import ResizedImageCache
from mrcnn_tf.data.mosaic import load_mosaic_gt
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.targets import load_image_gt
from mrcnn_tf.errors import ConfigError, DatasetError
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.nets.graph import training_output_names
from mrcnn_tf.wbc.held_out import copy_weights as copy_layer_weights
from mrcnn_tf.weights import matterport_h5 as W


class CellsDataset(Dataset):
    """64x64 images with one or two rectangles (class 1 wide, 2 tall); each nucleus is its cell's left half."""

    def __init__(self, count=4, has_nucleus=True):
        super().__init__()
        self.has_nucleus = has_nucleus
        self.add_class("cells", 1, "wide")
        self.add_class("cells", 2, "tall")
        for i in range(count):
            self.add_image("cells", image_id=i, path=None)
        self.prepare()

    def _instances(self, image_id):
        rng = np.random.default_rng(image_id)
        cells = []
        for k in range(1 + image_id % 2):
            cls = int(rng.integers(1, 3))
            h, w = (14, 24) if cls == 1 else (24, 14)
            y, x = int(rng.integers(2, 62 - h)), (2 if k == 0 else 36) + int(rng.integers(0, 62 - 36 - w))
            cells.append((cls, y, x, h, w))
        return cells

    def load_image(self, image_id):
        image = np.full((64, 64, 3), 30, np.uint8)
        for cls, y, x, h, w in self._instances(image_id):
            image[y:y + h, x:x + w] = (200, 90 * cls, 60)
            image[y:y + h, x:x + w // 2] = (60, 20, 120)  # a dark nucleus
        return image

    def load_mask(self, image_id):
        cells = self._instances(image_id)
        masks = np.zeros((64, 64, len(cells)), bool)
        for i, (_, y, x, h, w) in enumerate(cells):
            masks[y:y + h, x:x + w, i] = True
        return masks, np.array([c for c, *_ in cells], np.int32)

    def load_nucleus_mask(self, image_id):
        masks, class_ids = self.load_mask(image_id)
        nuclei = np.zeros_like(masks)
        for i, (_, y, x, h, w) in enumerate(self._instances(image_id)):
            nuclei[y:y + h, x:x + w // 2, i] = True
        return nuclei, class_ids


def nucleus_config(**overrides):
    return tiny_config(**dict(dict(NUCLEUS_MASKS=True), **overrides))


# ---------------------------------------------------------------------- config
def test_config_switch_and_loss_weight():
    assert tiny_config().NUCLEUS_MASKS is False and NUCLEUS_LOSS_NAME not in tiny_config().LOSS_WEIGHTS
    config = nucleus_config()
    assert config.LOSS_WEIGHTS[NUCLEUS_LOSS_NAME] == 1.0 and set(config.LOSS_WEIGHTS) == {*LOSS_NAMES,
                                                                                            NUCLEUS_LOSS_NAME}
    assert NUCLEUS_LOSS_NAME not in type(config).LOSS_WEIGHTS  # the class default is left alone
    with pytest.raises(ConfigError, match="NUCLEUS_MASKS"):
        tiny_config(NUCLEUS_MASKS="yes")
    plain = tiny_config()
    weights = json.dumps({**dict.fromkeys(LOSS_NAMES, 1.0), NUCLEUS_LOSS_NAME: 0.5})
    plain.apply_overrides(["NUCLEUS_MASKS=true", f"LOSS_WEIGHTS={weights}"])
    assert plain.NUCLEUS_MASKS is True and plain.LOSS_WEIGHTS[NUCLEUS_LOSS_NAME] == 0.5
    assert type(plain).from_dict(plain.to_dict()).LOSS_WEIGHTS[NUCLEUS_LOSS_NAME] == 0.5
    with pytest.raises(ConfigError, match="LOSS_WEIGHTS"):
        tiny_config(LOSS_WEIGHTS={**dict.fromkeys(LOSS_NAMES, 1.0), "nucleus": 1.0})


# ---------------------------------------------------------------------- data
def test_load_image_gt_moves_nuclei_with_their_cells():
    import imgaug.augmenters as iaa

    dataset, config = CellsDataset(), nucleus_config()
    plain = load_image_gt(dataset, config, 1)
    assert len(plain) == 5  # Matterport's five without the flag
    image, meta, ids, boxes, masks, nuclei = load_image_gt(dataset, config, 1, nucleus_masks=True)
    np.testing.assert_array_equal(masks, plain[4])
    want, _ = dataset.load_nucleus_mask(1)
    np.testing.assert_array_equal(nuclei, want)
    flipped = load_image_gt(dataset, config, 1, augmentation=iaa.Fliplr(1.0), nucleus_masks=True,
                            rng=np.random.default_rng(0))
    np.testing.assert_array_equal(flipped[4], masks[:, ::-1])
    np.testing.assert_array_equal(flipped[5], nuclei[:, ::-1])
    # Mini masks: the nucleus in its cell box's frame (the left half of the 28x28 cell mask).
    *_, mini_masks, mini_nuclei = load_image_gt(dataset, config, 1, use_mini_mask=True, nucleus_masks=True)
    assert mini_nuclei.shape == mini_masks.shape == (28, 28, 2)
    assert mini_nuclei[:, :13].all() and not mini_nuclei[:, 15:].any() and np.all(mini_nuclei <= mini_masks)
    # One cache serves both kinds of call without mixing them.
    cache = ResizedImageCache(2 ** 20)
    for _ in range(2):
        assert len(load_image_gt(dataset, config, 1, cache=cache)) == 5
        np.testing.assert_array_equal(load_image_gt(dataset, config, 1, cache=cache, nucleus_masks=True)[5], nuclei)
    with pytest.raises(DatasetError, match=r"the dataset \(CellsDataset, image 1\) has no nucleus masks "
                                           r"\(has_nucleus is False;.*--set NUCLEUS_MASKS=false"):
        load_image_gt(CellsDataset(has_nucleus=False), config, 1, nucleus_masks=True)


class UnmatchedNuclei(CellsDataset):
    def load_nucleus_mask(self, image_id):
        nuclei, class_ids = super().load_nucleus_mask(image_id)
        return nuclei[:, :, :1], class_ids[:1]


def test_load_image_gt_refuses_nuclei_that_are_not_one_per_cell():
    with pytest.raises(DatasetError, match=r"^1: load_nucleus_mask returned \(64, 64, 1\) masks for load_mask's "
                                           r"\(64, 64, 2\); return one nucleus per instance of load_mask"):
        load_image_gt(UnmatchedNuclei(), nucleus_config(), 1, nucleus_masks=True)


def test_mosaic_and_generator_carry_nuclei():
    dataset = CellsDataset()
    config = nucleus_config(IMAGE_CACHE_MB=0)
    rng = np.random.default_rng(0)
    image, _, ids, _, masks, nuclei = load_mosaic_gt(dataset, config, [0, 1, 2, 3], 2, lambda i: None, rng=rng,
                                                     nucleus_masks=True)
    assert nuclei.shape == masks.shape and len(ids) == masks.shape[-1] > 0
    assert np.all(nuclei <= masks) and nuclei.any()
    generator = DataGenerator(dataset, config, shuffle=False)
    x = generator.inputs(0)
    assert len(x) == 8 and x[7].shape == x[6].shape and x[7].dtype == bool
    count = int(np.count_nonzero(x[4][0]))
    assert x[7][0, :, :, :count].any(axis=(0, 1)).all() and not x[7][0, :, :, count:].any()
    assert np.all(x[7] <= x[6])
    assert len(DataGenerator(dataset, tiny_config(), shuffle=False).inputs(0)) == 7
    refusal = r"the dataset \(CellsDataset\) has no nucleus masks.*--set NUCLEUS_MASKS=false"
    with pytest.raises(DatasetError, match=refusal):
        DataGenerator(CellsDataset(has_nucleus=False), config)  # at once, not in the first batch


# ---------------------------------------------------------------------- training
def test_training_graph_trains_the_nucleus_head(tmp_path):
    keras.utils.set_random_seed(0)
    # Random ROIs around the cells (USE_RPN_ROIS False), 300 of them: positive ROIs in every batch (40 left
    # some batches without), so the nucleus loss is not 0.
    config = nucleus_config(TRAIN_BN=True, USE_RPN_ROIS=False, IMAGE_CACHE_MB=0, POST_NMS_ROIS_TRAINING=300)
    mrcnn = MaskRCNN("training", config, str(tmp_path))
    model = mrcnn.keras_model
    assert [t.name for t in model.inputs][-2:] == ["input_roi", "input_gt_nucleus_masks"]
    assert "mrcnn_nucleus_mask" in [layer.name for layer in model.layers]
    assert training_output_names(config)[-2:] == ("mrcnn_nucleus_mask", "target_nucleus_mask")
    assert model.loss_names == (*LOSS_NAMES, NUCLEUS_LOSS_NAME)
    dataset = CellsDataset()
    nucleus = model.get_layer("mrcnn_nucleus_mask")
    before = [np.array(w) for w in nucleus.weights]
    history = mrcnn.train(dataset, dataset, 1e-3, epochs=1, layers="heads", verbose=0)
    logs = history.history
    for name in (*LOSS_NAMES, NUCLEUS_LOSS_NAME):
        assert np.isfinite(logs[name][-1]) and np.isfinite(logs["val_" + name][-1]), name
    assert logs[NUCLEUS_LOSS_NAME][-1] > 0
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before, nucleus.weights))  # it trained
    # Without the flag: Matterport's inputs and losses.
    plain = MaskRCNN("training", tiny_config(), str(tmp_path / "plain")).keras_model
    assert plain.loss_names == LOSS_NAMES and "mrcnn_nucleus_mask" not in [layer.name for layer in plain.layers]
    assert [t.name for t in plain.inputs][-1] == "input_gt_masks"


def test_train_run_refuses_data_without_nuclei(tmp_path):
    from mrcnn_tf.wbc.training_run import train_run

    refusal = r"the training set \(cells-data\) has no nucleus masks.*--set NUCLEUS_MASKS=false"
    with pytest.raises(ConfigError, match=refusal):
        train_run(nucleus_config(), CellsDataset(has_nucleus=False), CellsDataset(), tmp_path, [("all", 1, 1e-3)],
                  run_info={"dataset": "cells-data"}, echo=lambda *_: None)
    with pytest.raises(ConfigError, match=r"the validation set \(CellsDataset\) has no nucleus masks"):
        train_run(nucleus_config(), CellsDataset(), CellsDataset(has_nucleus=False), tmp_path, [("all", 1, 1e-3)],
                  echo=lambda *_: None)
    assert not any(tmp_path.iterdir())  # refused before any model or run folder


class PathCells(CellsDataset):
    def image_reference(self, image_id):
        return f"/data/cells/{image_id}.png"


def test_one_nucleus_refusal_for_every_caller():
    """`check_nucleus_masks` is the message of the generator, load_image_gt and train_run: it names the data
    (by default its class and first image), the has_nucleus value and the fix, as the caller's error class."""
    from mrcnn_tf.data.dataset import check_nucleus_masks

    check_nucleus_masks(CellsDataset(has_nucleus=False), False)  # off: nothing to check
    check_nucleus_masks(CellsDataset(), True)
    with pytest.raises(DatasetError, match=r"^NUCLEUS_MASKS is on but the dataset \(PathCells, first image "
                                           r"/data/cells/0.png\) has no nucleus masks \(has_nucleus is False; "
                                           r".*: train with --set NUCLEUS_MASKS=false, or add nucleus masks"):
        check_nucleus_masks(PathCells(has_nucleus=False), True)
    no_loader = Dataset()
    no_loader.has_nucleus = True  # claimed, but nothing to load them with
    with pytest.raises(ConfigError, match=r"the training set \(DIR\) has no nucleus masks \(it has no "
                                          r"load_nucleus_mask method;"):
        check_nucleus_masks(no_loader, True, "training set", "DIR", ConfigError)
    with pytest.raises(DatasetError, match=r"\(Dataset\) has no nucleus masks \(has_nucleus is None;"):
        check_nucleus_masks(Dataset(), True)


# ---------------------------------------------------------------------- inference
def copy_weights(source, target):
    """Every weighted layer of `source` into the layer of that (Matterport) name in `target`; only the nucleus
    head has no twin."""
    weighted = {layer.name for layer in target.keras_model.layers if layer.weights}
    assert copy_layer_weights(source.keras_model, target.keras_model) == len(weighted) - 1
    assert weighted - {layer.name for layer in source.keras_model.layers} == {"mrcnn_nucleus_mask"}


def test_detect_gains_nucleus_masks_and_keeps_the_rest(tmp_path):
    settings = dict(IMAGES_PER_GPU=2, DETECTION_MIN_CONFIDENCE=0.0)
    plain = favour_foreground(MaskRCNN("inference", tiny_config(**settings), str(tmp_path)))
    model = MaskRCNN("inference", nucleus_config(**settings), str(tmp_path))
    assert len(model.keras_model.outputs) == 8 and len(plain.keras_model.outputs) == 7
    assert tuple(model.keras_model.outputs[7].shape)[1:] == (6, 28, 28, 1)
    copy_weights(plain, model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)]
    for want, got, image in zip(plain.detect(images), model.detect(images), images):
        assert set(want) == {"rois", "class_ids", "scores", "masks"}
        assert set(got) == set(want) | {"nucleus_masks"}
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        nuclei = got["nucleus_masks"]
        assert nuclei.dtype == bool and nuclei.shape == image.shape[:2] + (len(got["class_ids"]),)
        assert len(got["class_ids"]) > 0 and np.all(nuclei <= got["masks"])


def test_unmold_detections_with_a_nucleus(tmp_path):
    model = MaskRCNN("inference", nucleus_config(), str(tmp_path))
    detections = np.zeros((6, 6), np.float32)
    detections[0] = [0.0, 0.0, 1.0, 1.0, 1, 0.9]
    detections[1] = [0.25, 0.25, 0.75, 0.75, 2, 0.8]
    masks = np.zeros((6, 28, 28, 3), np.float32)
    masks[0, :, :, 1] = 1.0
    masks[1, :, :14, 2] = 1.0  # detection 1's cell is the left half of its box
    nucleus = np.zeros((6, 28, 28, 1), np.float32)
    nucleus[0, :, :14] = 1.0  # detection 0: left half of the box
    nucleus[1] = 1.0  # detection 1: the whole box, cut to its cell
    boxes, ids, _, full, nuclei = model.unmold_detections(detections, masks, (64, 64, 3), (64, 64, 3),
                                                          (0, 0, 64, 64), nucleus_mask=nucleus)
    assert full.shape == nuclei.shape == (64, 64, 2)
    assert nuclei[:, :32, 0].all() and not nuclei[:, 32:, 0].any()
    np.testing.assert_array_equal(nuclei[:, :, 1], full[:, :, 1])
    assert len(model.unmold_detections(detections, masks, (64, 64, 3), (64, 64, 3), (0, 0, 64, 64))) == 4


@pytest.mark.slow
def test_export_carries_the_nucleus_output(tmp_path):
    from mrcnn_tf.inference.export import export_saved_model, load_exported

    keras.utils.set_random_seed(3)
    model = favour_foreground(MaskRCNN("inference", nucleus_config(DETECTION_MIN_CONFIDENCE=0.0), str(tmp_path)))
    rng = np.random.default_rng(0)
    layer = model.keras_model.get_layer("mrcnn_nucleus_mask")
    kernel, bias = layer.get_weights()
    layer.set_weights([rng.normal(0, 1.0, kernel.shape).astype(kernel.dtype), bias])
    loaded = load_exported(export_saved_model(model, tmp_path / "saved"))
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    want, got = model.detect([image])[0], loaded.detect([image])[0]
    assert set(got) == set(want) == {"rois", "class_ids", "scores", "masks", "nucleus_masks"}
    np.testing.assert_array_equal(got["rois"], want["rois"])
    np.testing.assert_array_equal(got["masks"], want["masks"])
    np.testing.assert_array_equal(got["nucleus_masks"], want["nucleus_masks"])
    assert got["nucleus_masks"].dtype == bool and want["nucleus_masks"].any()


# ---------------------------------------------------------------------- weights
def test_matterport_file_leaves_the_nucleus_head_to_train(tmp_path):
    # A Keras-2 file of the model without the nucleus head (what Matterport's training saved), then loaded
    # the COCO way into the model with it.
    source = MaskRCNN("inference", tiny_config(), str(tmp_path)).keras_model
    layout = [(layer.name, [(f"{layer.name}/w{i}:0", tuple(v.shape))
                            for i, v in enumerate(W.legacy_weights(layer))]) for layer in source.layers]
    path = write_keras2_h5(tmp_path / "mask_rcnn_matterport.h5", layout, seeded_values(layout, seed=5))
    config = nucleus_config()
    target = MaskRCNN("inference", config, str(tmp_path)).keras_model
    nucleus = [np.array(w) for w in target.get_layer("mrcnn_nucleus_mask").weights]
    report = W.load_coco_weights(target, config, filepath=path, verbose=0)
    assert report.absent_in_file == ["mrcnn_nucleus_mask"] and not report.absent_in_model
    assert sorted(report.excluded) == sorted(W.COCO_CLASS_SPECIFIC[:2] + ("mrcnn_mask",))
    assert any("mrcnn_nucleus_mask" in note and "left to train" in note for note in report.notes)
    for before, after in zip(nucleus, target.get_layer("mrcnn_nucleus_mask").weights):
        np.testing.assert_array_equal(before, np.array(after))
    values = seeded_values(layout, seed=5)
    np.testing.assert_array_equal(np.array(W.legacy_weights(target.get_layer("mrcnn_mask_deconv"))[0]),
                                  values["mrcnn_mask_deconv"][0])

"""COLOUR_TYPING: colour statistics inside a mask, the softmax typer, and detections retyped by it."""
import colorsys
import copy
import json
import types

import numpy as np
import pytest
from skimage import color

from helpers_model import tiny_config
from mrcnn_tf.colour_typing import (FEATURE_NAMES, TYPER_FILE, ColourTypedModel, ColourTyper, colour_features,
                                    fit_colour_typer, retype, typed_model)
from mrcnn_tf.errors import ConfigError, MrcnnError

NAMES = ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


def reference_features(image, mask):
    """Pixel by pixel: RGB and colorsys HSV in Python, Lab from skimage on the whole image (another code path)."""
    ys, xs = np.nonzero(mask)
    rgb = [image[y, x, :3] / 255.0 for y, x in zip(ys, xs)]
    hsv = [colorsys.rgb_to_hsv(*p) for p in rgb]
    lab = color.rgb2lab(image[..., :3])[ys, xs]
    out = []
    for pixels in (np.array(rgb), np.array(hsv), lab):
        out += [pixels[:, c].mean() for c in range(3)] + [pixels[:, c].std() for c in range(3)]
    return np.array(out + [np.log(len(ys))])


def test_features_match_a_pixel_by_pixel_reference(rng):
    image = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)  # a fourth channel is ignored
    for _ in range(3):
        mask = rng.random((20, 24)) < 0.3
        np.testing.assert_allclose(colour_features(image, mask), reference_features(image, mask), rtol=1e-6,
                                   atol=1e-9)
    one = np.zeros((20, 24), bool)
    one[3, 4] = True  # one pixel: no spread, log area 0
    got = colour_features(image, one)
    np.testing.assert_allclose(got, reference_features(image, one), atol=1e-9)
    assert got[-1] == 0 and len(got) == len(FEATURE_NAMES) == 19
    assert not colour_features(image, np.zeros((20, 24), bool)).any()  # empty mask: zeros, not NaN
    grey = image[..., 0]
    np.testing.assert_allclose(colour_features(grey, mask), reference_features(np.stack([grey] * 3, -1), mask),
                               rtol=1e-6, atol=1e-9)


def cells(rng, per_type=12):
    """Features of three separable types (2, 3, 5) plus noise."""
    centres = {2: 0.0, 3: 3.0, 5: -3.0}
    x = np.concatenate([rng.normal(centres[t], 1.0, (per_type, 19)) for t in centres])
    return x, np.repeat(list(centres), per_type)


def test_typer_learns_separable_types_and_picks_its_l2_by_cross_validation(rng):
    x, y = cells(rng)
    typer = ColourTyper.fit(x, y, NAMES)
    held_x, held_y = cells(np.random.default_rng(99), per_type=5)
    assert (typer.predict(held_x) == held_y).mean() >= 0.95
    p = typer.probabilities(held_x)
    assert p.shape == (15, 5) and np.allclose(p.sum(1), 1)
    assert p[:, [0, 3]].max() < 0.2  # types without training cells stay unlikely
    assert typer.l2 in (0.001, 0.01, 0.1, 1.0) and typer.cv_accuracy >= 0.9 and typer.cells == 36


def test_typer_round_trips_through_its_file_and_bad_files_are_one_line_errors(rng, tmp_path):
    x, y = cells(rng)
    typer = ColourTyper.fit(x, y, NAMES, l2_choices=(0.1,))
    path = tmp_path / TYPER_FILE
    typer.save(path)
    again = ColourTyper.load(path)
    np.testing.assert_array_equal(again.probabilities(x), typer.probabilities(x))
    assert again.class_names == NAMES and again.l2 == 0.1
    path.write_text("{not json")
    with pytest.raises(MrcnnError, match=f"{path}: cannot read the colour typer") as info:
        ColourTyper.load(path)
    assert "\n" not in str(info.value)
    values = typer.to_dict()
    values["weights"] = values["weights"][:3]
    path.write_text(json.dumps(values))
    with pytest.raises(MrcnnError, match="do not fit 19 features and 5 types"):
        ColourTyper.load(path)
    path.write_text(json.dumps({"class_names": NAMES}))
    with pytest.raises(MrcnnError, match="not a colour typer file"):
        ColourTyper.load(path)


def test_fit_needs_typed_cells():
    with pytest.raises(MrcnnError, match="at least 2 training cells"):
        ColourTyper.fit(np.zeros((1, 19)), [2], NAMES)
    with pytest.raises(MrcnnError, match="types 1..5"):
        ColourTyper.fit(np.zeros((3, 19)), [2, 0, 7], NAMES)


def two_disc_field(first, second):
    """A 40x80 grey field with a disc of colour `first` on the left and `second` on the right."""
    image = np.full((40, 80, 3), 200, np.uint8)
    yy, xx = np.mgrid[:40, :80]
    masks = np.stack([(yy - 20) ** 2 + (xx - 20) ** 2 < 144, (yy - 20) ** 2 + (xx - 60) ** 2 < 144], -1)
    image[masks[:, :, 0]] = first
    image[masks[:, :, 1]] = second
    return image, masks


class DiscDataset:
    """Fields of a red disc (Eosinophil, id 2) and a blue one (Neutrophil, id 5) in either order."""

    class_names = NAMES

    def __init__(self, count=6):
        self.image_ids = np.arange(count)
        self.rng = np.random.default_rng(4)

    def _colours(self, image_id):
        red, blue = (200, 60, 60), (80, 80, 200)
        return (red, blue, [2, 5]) if image_id % 2 else (blue, red, [5, 2])

    def load_image(self, image_id):
        first, second, _ = self._colours(image_id)
        image, _ = two_disc_field(first, second)
        noise = self.rng.integers(-15, 16, image.shape)
        return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)

    def load_mask(self, image_id):
        _, masks = two_disc_field((0, 0, 0), (0, 0, 0))
        return masks, np.array(self._colours(image_id)[2], np.int32)


def test_detections_are_retyped_by_the_colour_inside_their_masks():
    typer = fit_colour_typer(DiscDataset())
    assert typer.cells == 12
    image, masks = two_disc_field((205, 65, 55), (75, 85, 205))  # red left, blue right, with the training noise
    noise = np.random.default_rng(11).integers(-15, 16, image.shape)
    image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    result = {"rois": np.array([[8, 8, 32, 32], [8, 48, 32, 72]], np.int32), "class_ids": np.array([5, 5], np.int32),
              "scores": np.array([0.9, 0.4], np.float32), "masks": masks}
    typed = retype(result, image, typer)
    np.testing.assert_array_equal(typed["class_ids"], [2, 5])
    assert typed["class_ids"].dtype == np.int32 and result["class_ids"].tolist() == [5, 5]  # a copy
    for key in ("rois", "scores", "masks"):
        assert typed[key] is result[key]
    empty = {"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
             "scores": np.zeros(0, np.float32), "masks": np.zeros((40, 80, 0), bool)}
    assert retype(empty, image, typer)["class_ids"].shape == (0,)

    class FakeModel:
        config = tiny_config(COLOUR_TYPING=True)

        def detect(self, images, verbose=0):
            return [dict(result) for _ in images]

    typed_model_ = ColourTypedModel(FakeModel(), typer)
    assert typed_model_.config is FakeModel.config  # other attributes are the model's
    assert copy.copy(typed_model_).typer is typer  # no recursion through the unset wrapper while copying
    [one] = typed_model_.detect(image)  # a single image, as MaskRCNN.detect takes it
    np.testing.assert_array_equal(one["class_ids"], [2, 5])


def test_typed_model_follows_the_config_and_the_run_folder(tmp_path, rng):
    checkpoint = tmp_path / "mask_rcnn_x_0001.weights.h5"
    model = types.SimpleNamespace(config=tiny_config(COLOUR_TYPING=False))
    assert typed_model(model, checkpoint) is model
    model.config = tiny_config(COLOUR_TYPING=True)
    said = []
    assert typed_model(model, checkpoint, echo=said.append) is model
    assert "missing" in said[0] and TYPER_FILE in said[0]
    x, y = cells(rng)
    ColourTyper.fit(x, y, NAMES, l2_choices=(0.1,)).save(tmp_path / TYPER_FILE)
    assert model.config.NUM_CLASSES != 6  # the tiny config's classes
    with pytest.raises(MrcnnError, match="do not match the model's NUM_CLASSES"):
        typed_model(model, checkpoint)
    model.config = tiny_config(COLOUR_TYPING=True, NUM_CLASSES=6)
    wrapped = typed_model(model, checkpoint, echo=said.append)
    assert isinstance(wrapped, ColourTypedModel) and "fitted on 36 cells" in said[-1]


def test_config_wants_a_bool():
    with pytest.raises(ConfigError, match="COLOUR_TYPING"):
        tiny_config(COLOUR_TYPING="yes")

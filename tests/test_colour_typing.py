"""COLOUR_TYPING: colour statistics inside a mask, the softmax typer, and detections retyped by it."""
import colorsys
import copy
import json
import types

import numpy as np
import pytest
from skimage import color

from helpers_model import tiny_config
from mrcnn_tf.wbc.colour_typing import (COMPARTMENT_FEATURE_NAMES, FEATURE_NAMES, NUCLEUS_DIRECTION, TYPER_FILE,
                                        ColourTypedModel, ColourTyper, colour_features, compartment_features,
                                        fit_colour_typer, fit_nucleus_direction, nucleus_pixels, otsu_split, retype,
                                        typed_model)
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


def reference_otsu(values):
    """Every split between distinct sorted values tried; the between-class variance computed from its definition."""
    values = sorted(float(v) for v in np.ravel(values))
    best = None
    for t in sorted(set(values))[:-1]:
        low, high = [v for v in values if v <= t], [v for v in values if v > t]
        w_low, w_high = len(low) / len(values), len(high) / len(values)
        between = w_low * w_high * (sum(low) / len(low) - sum(high) / len(high)) ** 2
        if best is None or between > best[0] + 1e-12:
            best = (between, t)
    return None if best is None else best[1]


def test_otsu_split_matches_the_definition_and_handles_ties_and_one_value(rng):
    for _ in range(20):
        values = rng.normal(0, 1, rng.integers(2, 40))
        if rng.random() < 0.5:  # ties, as a quantised image has
            values = np.round(values, 1)
        assert otsu_split(values) == reference_otsu(values)
    bimodal = np.concatenate([rng.normal(-5, 0.3, 50), rng.normal(5, 0.3, 30)])
    assert bimodal[bimodal < 0].max() == otsu_split(bimodal)  # the split falls in the gap
    assert otsu_split([1.0, 2.0]) == 1.0
    for degenerate in ([], [3.0], [2.0, 2.0, 2.0]):
        assert otsu_split(degenerate) is None


def test_compartment_features_match_a_pixel_by_pixel_reference(rng):
    image = rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)
    direction = np.array([0.2, -0.3, -0.9]) / np.linalg.norm([0.2, -0.3, -0.9])
    for _ in range(3):
        mask = rng.random((18, 22)) < 0.4
        projection = color.rgb2lab(image) @ direction  # the whole image's Lab: another code path
        nucleus = mask & (projection > reference_otsu(projection[mask]))
        want = np.concatenate([reference_features(image, mask), reference_features(image, nucleus)[:18],
                               reference_features(image, mask & ~nucleus)[:18], [nucleus.sum() / mask.sum()]])
        got = compartment_features(image, mask, direction)
        assert len(got) == len(COMPARTMENT_FEATURE_NAMES) == 56
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(got[:19], colour_features(image, mask))
        np.testing.assert_array_equal(nucleus_pixels(color.rgb2lab(image)[mask], direction), nucleus[mask])
    assert not compartment_features(image, np.zeros((18, 22), bool)).any()  # empty: zeros, not NaN
    flat = np.full((18, 22, 3), (120, 60, 200), np.uint8)  # one colour: no nucleus, the cytoplasm is the cell
    got = compartment_features(flat, mask)
    assert not got[19:37].any() and got[-1] == 0 and not nucleus_pixels(color.rgb2lab(flat)[mask]).any()
    np.testing.assert_allclose(got[37:55], got[:18])


def test_nucleus_direction_is_fitted_from_two_pixel_clouds(rng):
    shift = np.array([0.8, -0.3, -0.52])  # the clouds' mean difference, mostly along L*
    spread = np.array([10.0, 1.0, 1.0])  # ... where the pixels also spread most
    base = rng.normal(0, 1, (2000, 3)) * spread
    nucleus, cytoplasm = base[:1000] + 3 * shift, base[1000:] - 3 * shift
    fisher = shift / spread ** 2  # the within-class covariance's inverse times the mean difference
    fisher /= np.linalg.norm(fisher)
    got = fit_nucleus_direction(nucleus, cytoplasm)
    assert abs(np.linalg.norm(got) - 1) < 1e-9 and got @ fisher > 0.99
    assert got @ shift / np.linalg.norm(shift) < 0.8  # not the mean difference: L* barely separates them
    assert (nucleus @ got).mean() > (cytoplasm @ got).mean()


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
    for key in ("rois", "masks"):
        assert typed[key] is result[key]
    # The score is the typer's probability of the type it chose, not the class head's score of another class.
    features = np.stack([typer.features(image, masks[:, :, i]) for i in range(2)])
    np.testing.assert_allclose(typed["scores"], typer.predict_proba(features).max(1), rtol=1e-6)
    assert typed["scores"].dtype == np.float32 and result["scores"].tolist() == pytest.approx([0.9, 0.4])
    assert not np.allclose(typed["scores"], result["scores"])
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


def test_config_wants_a_bool_and_a_known_feature_set():
    from mrcnn_tf.wbc.colour_typing import DEFAULT_FEATURE_SET, FEATURE_SETS

    with pytest.raises(ConfigError, match="COLOUR_TYPING"):
        tiny_config(COLOUR_TYPING="yes")
    with pytest.raises(ConfigError, match="COLOUR_TYPING_FEATURES = 'texture' is invalid: use colour") as info:
        tiny_config(COLOUR_TYPING_FEATURES="texture")
    assert all(f" {name}" in str(info.value) for name in FEATURE_SETS)  # the error names every set
    assert tiny_config().COLOUR_TYPING_FEATURES == DEFAULT_FEATURE_SET


def test_train_writes_the_typer_of_the_configs_feature_set(tmp_path):
    from mrcnn_tf.wbc.training_run import fit_typer

    lines = []
    fit_typer(NucleusDiscDataset(), tiny_config(COLOUR_TYPING=True, COLOUR_TYPING_FEATURES="colour"),
              echo=lines.append).save(tmp_path / TYPER_FILE)
    assert ColourTyper.load(tmp_path / TYPER_FILE).feature_set == "colour"
    assert "colour features" in lines[0]
    assert fit_typer(NucleusDiscDataset(), tiny_config(COLOUR_TYPING=False)) is None


class NucleusDiscDataset(DiscDataset):
    """Discs with a dark blue nucleus inside, told apart only by their cytoplasm (red: Eosinophil, pink:
    Neutrophil), with their nucleus masks as `CocoDataset` gives them."""

    has_nucleus = True
    NUCLEUS = (60, 40, 140)

    def _nuclei(self):
        yy, xx = np.mgrid[:40, :80]
        return np.stack([(yy - 20) ** 2 + (xx - 20) ** 2 < 36, (yy - 20) ** 2 + (xx - 60) ** 2 < 36], -1)

    def _colours(self, image_id):
        red, pink = (220, 90, 70), (215, 170, 190)
        return (red, pink, [2, 5]) if image_id % 2 else (pink, red, [5, 2])

    def load_image(self, image_id):
        image = super().load_image(image_id)
        image[self._nuclei().any(-1)] = self.NUCLEUS
        return image

    def load_nucleus_mask(self, image_id):
        return self._nuclei(), np.array(self._colours(image_id)[2], np.int32)


def test_fit_takes_the_nucleus_direction_from_the_datasets_own_nucleus_masks():
    dataset = NucleusDiscDataset()
    typer = fit_colour_typer(dataset)
    assert typer.feature_set == "colour+compartments" and typer.nucleus_source.startswith("fitted on the nucleus")
    # The nucleus's Lab colour lies beyond both cytoplasms' along the fitted direction.
    nucleus_lab = color.rgb2lab(np.array([[dataset.NUCLEUS]], np.uint8))[0, 0]
    for cytoplasm in ((220, 90, 70), (215, 170, 190)):
        assert nucleus_lab @ typer.nucleus_direction > color.rgb2lab(np.array([[cytoplasm]], np.uint8))[0, 0] \
            @ typer.nucleus_direction
    image = dataset.load_image(1)
    masks, class_ids = dataset.load_mask(1)
    result = {"masks": masks, "class_ids": np.array([5, 5], np.int32)}
    np.testing.assert_array_equal(retype(result, image, typer)["class_ids"], class_ids)
    share = typer.features(image, masks[:, :, 0])[-1]
    assert abs(share - dataset._nuclei()[:, :, 0].sum() / masks[:, :, 0].sum()) < 0.02  # the split finds it

    class WithCrowd(NucleusDiscDataset):  # a crowd region (COCO's iscrowd: a negative id) is not a cell to type
        def load_mask(self, image_id):
            masks, ids = super().load_mask(image_id)
            return np.concatenate([masks, masks[:, :, :1]], -1), np.append(ids, -ids[0]).astype(np.int32)

        def load_nucleus_mask(self, image_id):
            nuclei, ids = super().load_nucleus_mask(image_id)
            return np.concatenate([nuclei, np.zeros_like(nuclei[:, :, :1])], -1), np.append(ids, -ids[0])

    crowded = fit_colour_typer(WithCrowd())
    assert crowded.cells == typer.cells == 12
    np.testing.assert_allclose(crowded.nucleus_direction, typer.nucleus_direction)

    plain = fit_colour_typer(DiscDataset())  # no nucleus masks: the default direction
    assert plain.nucleus_source.startswith("default")
    np.testing.assert_array_equal(plain.nucleus_direction, NUCLEUS_DIRECTION)
    colour_only = fit_colour_typer(dataset, feature_set="colour")
    assert colour_only.weights.shape == (19, 5) and len(colour_only.features(image, masks[:, :, 0])) == 19
    with pytest.raises(MrcnnError, match="feature set 'texture' is unknown"):
        fit_colour_typer(dataset, feature_set="texture")


def test_files_of_both_formats_load(tmp_path):
    typer = fit_colour_typer(NucleusDiscDataset())
    path = tmp_path / TYPER_FILE
    typer.save(path)
    again = ColourTyper.load(path)
    assert json.loads(path.read_text())["format"] == "mrcnn_tf colour typer 2"
    assert again.feature_set == typer.feature_set and again.nucleus_source == typer.nucleus_source
    np.testing.assert_array_equal(again.nucleus_direction, typer.nucleus_direction)
    image = NucleusDiscDataset().load_image(0)
    mask = NucleusDiscDataset().load_mask(0)[0][:, :, 1]
    np.testing.assert_array_equal(again.features(image, mask), typer.features(image, mask))

    first = fit_colour_typer(DiscDataset(), feature_set="colour").to_dict()  # as the first format wrote it:
    old = {key: first[key] for key in ("class_names", "mean", "scale", "weights", "bias", "l2", "cv_accuracy",
                                       "cells")}
    path.write_text(json.dumps(dict(old, format="mrcnn_tf colour typer 1", features=list(FEATURE_NAMES))))
    loaded = ColourTyper.load(path)
    assert loaded.feature_set == "colour" and len(loaded.features(image, mask)) == 19
    path.write_text(json.dumps(dict(first, feature_set="texture")))
    with pytest.raises(MrcnnError, match=f"{path}: colour typer feature set 'texture' is unknown") as info:
        ColourTyper.load(path)
    assert "\n" not in str(info.value)

"""The dataset fingerprint and the plan derived from it: tiny synthetic sets at three scales get the expected
settings, and unusual data gets a line that names it."""
import numpy as np
import pytest

from mrcnn_tf.errors import DatasetError
from mrcnn_tf.wbc import fingerprint as fpm

NAMES = ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


class DiscFields:
    """`count` images of `shape` with `per_image` discs of `radius` px; types cycle through `types`."""

    def __init__(self, count, shape, radius, per_image=1, types=(2, 5, 5, 3), grey=False, at_border=False,
                 other_shape=None):
        self.class_names, self.image_ids = NAMES, np.arange(count)
        self.shape, self.radius, self.per_image, self.types = shape, radius, per_image, types
        self.grey, self.at_border, self.other_shape = grey, at_border, other_shape

    def _shape(self, image_id):
        return self.other_shape if self.other_shape and image_id % 2 else self.shape

    def _centres(self, image_id):
        h, w = self._shape(image_id)
        if self.at_border:
            return [(self.radius // 2, self.radius // 2)]
        return [(h // 2, (k + 1) * w // (self.per_image + 1)) for k in range(self.per_image)]

    def load_image(self, image_id):
        image = np.full(self._shape(image_id) + (3,), (220, 190, 200), np.uint8)
        image[self.load_mask(image_id)[0].any(-1)] = (120, 80, 170)
        return np.repeat(image[..., :1], 3, axis=-1) if self.grey else image

    def load_mask(self, image_id):
        h, w = self._shape(image_id)
        yy, xx = np.mgrid[:h, :w]
        masks = np.stack([(yy - y) ** 2 + (xx - x) ** 2 < self.radius ** 2 for y, x in self._centres(image_id)], -1)
        ids = [self.types[(image_id + k) % len(self.types)] for k in range(masks.shape[-1])]
        return masks, np.array(ids, np.int32)


def chosen(dataset):
    fp = fpm.fingerprint(dataset)
    choices, warnings = fpm.plan(fp)
    return fp, {c.key: c.to_dict()["value"] for c in choices}, warnings


def test_small_crops_of_one_cell_are_enlarged_and_never_mosaicked():
    fp, values, _ = chosen(DiscFields(8, (120, 120), radius=35))  # 70 px cells filling 120 px crops (Tecom-like)
    assert fp["cells"] == 8 and fp["cells_per_image"] == [1] * 8
    assert values["IMAGE_MAX_DIM"] == values["IMAGE_MIN_DIM"] == 128
    assert values["MOSAIC_TILES"] == 1  # a half-size crop would cut the cell
    assert values["RPN_ANCHOR_SCALES"] == [16, 32, 64, 128, 256]
    assert values["NUM_CLASSES"] == 6 and values["SCHEDULE"] == "all:4"  # 56 passes x 8 images / 4 a step: 112 -> 200
    assert values["NUCLEUS_MASKS"] is False  # these discs come without nucleus masks


def test_fields_of_one_small_cell_keep_their_cells_at_the_recipes_size_in_mosaics():
    fp, values, _ = chosen(DiscFields(6, (480, 640), radius=90))  # 180 px cells in 640x480 fields (BCCD-like)
    assert values["IMAGE_MAX_DIM"] == 320  # the median cell becomes TARGET_CELL_PX
    assert values["MOSAIC_TILES"] == 2 and values["MAX_GT_INSTANCES"] == 8
    assert values["RPN_ANCHOR_SCALES"] == [16, 32, 64, 128, 256]
    assert values["MEAN_PIXEL"] == pytest.approx(fp["mean_pixel"]) and len(values["MEAN_PIXEL"]) == 3


def test_large_fields_of_many_cells_are_shrunk_to_the_cap_with_small_anchors():
    fp, values, _ = chosen(DiscFields(3, (1200, 1600), radius=40, per_image=3))
    assert values["IMAGE_MAX_DIM"] == fpm.MAX_SIDE  # 1600 x 90 / 80 would be 1800
    assert values["MOSAIC_TILES"] == 1  # images hold several cells already
    assert values["RPN_ANCHOR_SCALES"] == [8, 16, 32, 64, 128]  # 80 px cells become 26 px: centred on 32
    assert values["DETECTION_MAX_INSTANCES"] == 6 and values["MAX_GT_INSTANCES"] == 8


def test_rare_types_get_repeats_and_a_balanced_set_none():
    _, values, _ = chosen(DiscFields(8, (120, 120), radius=35, types=(5, 5, 5, 5, 5, 5, 5, 2)))
    assert values["REPEAT_FACTOR_THRESHOLD"] == 0.3
    _, values, _ = chosen(DiscFields(8, (120, 120), radius=35, types=(2, 5)))
    assert values["REPEAT_FACTOR_THRESHOLD"] == 0.0


def test_unusual_data_is_named_in_one_line_each():
    _, values, warnings = chosen(DiscFields(4, (120, 120), radius=35, types=(5,), grey=True, at_border=True))
    assert any(w.startswith("only one type in the training cells (Neutrophil)") for w in warnings)
    assert any(w.startswith("no training cell of Basophil, Eosinophil, Lymphocyte, Monocyte:") for w in warnings)
    assert any(w.startswith("4 of 4 images are grey") for w in warnings)
    assert any(w.startswith("4 of 4 cells touch the image border") for w in warnings)
    assert values["COLOUR_TYPING"] is False  # one type and grey images: nothing for a colour typer to learn
    mixed = DiscFields(2, (120, 120), radius=35, other_shape=(100, 110))
    assert any(w.startswith("images of 2 sizes (e.g. (100, 110) and (120, 120))") for w in chosen(mixed)[2])


def test_a_set_without_cells_is_refused():
    empty = DiscFields(2, (64, 64), radius=10)
    empty.load_mask = lambda i: (np.zeros((64, 64, 0), bool), np.zeros(0, np.int32))
    with pytest.raises(DatasetError, match="holds no cell"):
        fpm.fingerprint(empty)


def test_a_set_with_nucleus_masks_gets_the_nucleus_head():
    dataset = DiscFields(4, (120, 120), radius=35)
    dataset.has_nucleus = True
    assert chosen(dataset)[1]["NUCLEUS_MASKS"] is True


def test_the_planned_config_applies_and_records_every_choice():
    dataset = DiscFields(6, (480, 640), radius=90)
    config, schedule, choices, warnings = fpm.planned_config(fpm.fingerprint(dataset))
    assert (config.IMAGE_MAX_DIM, config.MOSAIC_TILES, list(config.RPN_ANCHOR_SCALES)) == (
        320, 2, [16, 32, 64, 128, 256])
    assert schedule == "all:4" and config.NAME == "wbc" and list(config.IMAGE_SHAPE) == [320, 320, 3]
    recorded = config.FINGERPRINT
    assert [c["key"] for c in recorded["choices"]] == [c.key for c in choices] and recorded["warnings"] == warnings
    assert recorded["measured"]["cells"] == 6
    text = fpm.format_plan(fpm.fingerprint(dataset), choices, warnings)
    assert text.splitlines()[0].startswith("Fingerprint: 6 training images, 6 cells")
    assert any(line.startswith("MOSAIC_TILES") and " 2 " in line for line in text.splitlines())


@pytest.mark.parametrize("start", ["coco", "imagenet"])
def test_pretrained_weights_keep_their_input_mean_and_staged_schedule_the_data_decides_the_rest(start):
    from mrcnn_tf.engine.driver import DEFAULT_SCHEDULE
    from mrcnn_tf.lisc import LiscConfig

    dataset = DiscFields(6, (480, 640), radius=90)
    config, schedule, choices, _ = fpm.planned_config(fpm.fingerprint(dataset), start=start)
    scratch = fpm.planned_config(fpm.fingerprint(dataset))[0]
    assert isinstance(config, LiscConfig) and config.BACKBONE == LiscConfig.BACKBONE  # the weights' network
    np.testing.assert_allclose(config.MEAN_PIXEL, LiscConfig().MEAN_PIXEL)  # not the data's mean
    assert not np.allclose(scratch.MEAN_PIXEL, LiscConfig().MEAN_PIXEL)
    assert schedule == DEFAULT_SCHEDULE
    # Size, anchors, mosaics and limits are the data's, as from scratch.
    for key in ("IMAGE_MAX_DIM", "RPN_ANCHOR_SCALES", "MOSAIC_TILES", "MAX_GT_INSTANCES", "NUM_CLASSES"):
        assert np.array_equal(getattr(config, key), getattr(scratch, key)), key
    rows = {c.key: c for c in choices}
    assert f"the {start} weights" in rows["MEAN_PIXEL"].why and rows["MEAN_PIXEL"].value is not None
    assert config.FINGERPRINT["choices"][[c.key for c in choices].index("MEAN_PIXEL")]["value"] == list(
        LiscConfig().MEAN_PIXEL)

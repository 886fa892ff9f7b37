"""Training mosaics (data/mosaic.py): crop places, the composed canvas and targets, and the generator's stream."""
import numpy as np
import pytest
from helpers_data import MosaicConfig

from mrcnn_tf.wbc import synth
from mrcnn_tf.data.mosaic import compose_mosaic, content_window, crop_origin, load_mosaic_gt
from mrcnn_tf.data.pipeline import DataGenerator
from mrcnn_tf.data.targets import load_image_gt
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.lisc import LiscDataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("mosaic")
    synth.write_lisc(out, per_class=1, mixt=1, seed=5)
    ds = LiscDataset()
    ds.load_lisc(out, "all")
    ds.prepare()
    return ds


def box_mask(shape, y1, x1, y2, x2):
    mask = np.zeros(shape, bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_crop_holds_the_cells_inside_the_window_when_they_fit(rng):
    for _ in range(200):
        height, width = rng.integers(40, 90, size=2)
        wy1, wx1 = rng.integers(0, 10, size=2)
        window = (wy1, wx1, height - rng.integers(0, 10), width - rng.integers(0, 10))
        h = rng.integers(10, min(35, window[2] - window[0]) + 1)
        w = rng.integers(10, min(35, window[3] - window[1]) + 1)
        y1 = rng.integers(window[0], window[2] - 5)
        x1 = rng.integers(window[1], window[3] - 5)
        y2, x2 = min(window[2], y1 + rng.integers(2, h + 1)), min(window[3], x1 + rng.integers(2, w + 1))
        masks = box_mask((height, width), y1, x1, y2, x2)[:, :, None]
        y, x = crop_origin(masks, window, (h, w), rng)
        assert window[0] <= y and y + h <= window[2] and window[1] <= x and x + w <= window[3]
        # The cell fits the crop: it is whole inside it.
        assert y <= y1 and y2 <= y + h and x <= x1 and x2 <= x + w


def test_crop_centres_a_cell_larger_than_itself_and_uses_the_image_where_the_window_is_small(rng):
    masks = box_mask((100, 100), 20, 30, 80, 90)[:, :, None]  # 60 x 60 cell, 40 x 40 crop
    y, x = crop_origin(masks, (0, 0, 100, 100), (40, 40), rng)
    assert (y, x) == (30, 40)
    # A window 20 rows high cannot hold a 40-row crop: the rows come from the whole image.
    y, x = crop_origin(masks, (40, 0, 60, 100), (40, 40), rng)
    assert (y, x) == (30, 40) and 0 <= y <= 60
    # No cell: any place inside the window.
    for _ in range(20):
        y, x = crop_origin(np.zeros((100, 100, 0), bool), (10, 20, 90, 80), (40, 40), rng)
        assert 10 <= y <= 50 and 20 <= x <= 40


def test_content_window_follows_the_padding_after_a_turn():
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:56] = 200  # padded above and below
    assert content_window(image) == (8, 0, 56, 64)
    assert content_window(np.ascontiguousarray(np.rot90(image))) == (0, 8, 64, 56)
    assert content_window(np.zeros((10, 12, 3), np.uint8)) == (0, 0, 10, 12)


def reference_mosaic(tiles, origins, per_side, min_visible):
    """The canvas and targets written out pixel by pixel from given crop origins."""
    height, width = tiles[0][0].shape[:2]
    h, w = height // per_side, width // per_side
    canvas = np.zeros_like(tiles[0][0])
    masks, ids = [], []
    for index, ((image, tile_masks, tile_ids, _), (oy, ox)) in enumerate(zip(tiles, origins)):
        row, col = divmod(index, per_side)
        for dy in range(h):
            for dx in range(w):
                canvas[row * h + dy, col * w + dx] = image[oy + dy, ox + dx]
        for i in range(tile_masks.shape[-1]):
            placed = np.zeros((height, width), bool)
            for dy in range(h):
                for dx in range(w):
                    placed[row * h + dy, col * w + dx] = tile_masks[oy + dy, ox + dx, i]
            if placed.sum() > 0 and placed.sum() >= min_visible * tile_masks[:, :, i].sum():
                masks.append(placed)
                ids.append(tile_ids[i])
    return canvas, masks, ids


@pytest.mark.parametrize("per_side", [2, 3])
def test_compose_matches_the_pixel_reference(rng, per_side):
    size = 30
    tiles = []
    for _ in range(per_side ** 2):
        image = rng.integers(1, 255, size=(size, size, 3)).astype(np.uint8)
        count = int(rng.integers(0, 3))
        boxes = [(*np.sort(rng.integers(0, size, 2)), *np.sort(rng.integers(0, size, 2))) for _ in range(count)]
        masks = np.stack([box_mask((size, size), y1, x1, y2 + 1, x2 + 1) for y1, y2, x1, x2 in boxes], axis=-1) \
            if count else np.zeros((size, size, 0), bool)
        tiles.append((image, masks, rng.integers(1, 6, size=count), (0, 0, size, size)))
    crop = size // per_side
    origins = [tuple(int(v) for v in rng.integers(0, size - crop + 1, size=2)) for _ in tiles]
    canvas, masks, ids = compose_mosaic(tiles, per_side, None, min_visible=0.5, origins=origins)
    ref_canvas, ref_masks, ref_ids = reference_mosaic(tiles, origins, per_side, 0.5)
    np.testing.assert_array_equal(canvas, ref_canvas)
    assert ids.tolist() == [int(i) for i in ref_ids] and masks.shape[-1] == len(ref_masks)
    for i, mask in enumerate(ref_masks):
        np.testing.assert_array_equal(masks[:, :, i], mask)
    # Drawn places (the default) keep every tile's crop inside the tile: no black canvas pixel.
    canvas, _, _ = compose_mosaic(tiles, per_side, rng)
    assert canvas.shape == (size, size, 3) and canvas[:crop * per_side, :crop * per_side].all()


def test_a_cut_cell_is_kept_only_with_enough_pixels_inside():
    image = np.full((40, 40, 3), 9, np.uint8)
    # 4 tiles of 40 x 40, crops of 20 x 20 at a forced place: a 20 x 20 cell at the crop's corner.
    cell = box_mask((40, 40), 0, 0, 20, 20)
    half_out = box_mask((40, 40), 10, 0, 30, 20)  # half of it below the crop
    tiles = [(image, np.stack([cell, half_out], -1), np.array([1, 2]), (0, 0, 20, 20))] * 4
    _, masks, ids = compose_mosaic(tiles, 2, np.random.default_rng(0), min_visible=0.5)
    assert ids.tolist() == [1, 2] * 4 and masks.shape == (40, 40, 8)
    _, masks, ids = compose_mosaic(tiles, 2, np.random.default_rng(0), min_visible=0.6)
    assert ids.tolist() == [1] * 4
    assert masks[:, :, 0].sum() == 400 and masks[:20, :20, 0].all()


def test_tiles_of_different_shapes_are_refused():
    a = (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 0), bool), np.zeros(0, int), (0, 0, 20, 20))
    b = (np.zeros((24, 20, 3), np.uint8), np.zeros((24, 20, 0), bool), np.zeros(0, int), (0, 0, 24, 20))
    with pytest.raises(ValueError, match="differ in shape"):
        compose_mosaic([a, b, a, a], 2, np.random.default_rng(0))


def test_load_mosaic_gt_holds_every_tiles_cells(dataset):
    config = MosaicConfig()
    ids = [int(i) for i in dataset.image_ids[:4]]
    image, meta, class_ids, boxes, masks = load_mosaic_gt(dataset, config, ids, 2, lambda i: None,
                                                          use_mini_mask=True, rng=np.random.default_rng(3))
    assert image.shape == (128, 128, 3) and masks.shape == (16, 16, class_ids.size)
    assert meta[0] == ids[0] and list(meta[7:11]) == [0, 0, 128, 128]
    # The synthetic cells (11-24 px at 128 px) fit a 64 px quarter: every tile's cells come through, in tile order.
    expected = []
    for i in ids:
        expected += load_image_gt(dataset, config, i, rng=np.random.default_rng(0))[2].tolist()
    assert class_ids.tolist() == expected
    # Each box lies inside one quarter.
    assert np.all((boxes[:, 2] - 1) // 64 == boxes[:, 0] // 64) and np.all((boxes[:, 3] - 1) // 64 == boxes[:, 1] // 64)


def test_generator_builds_mosaics_in_training_only_and_repeats_with_its_seed(dataset):
    config = MosaicConfig()
    train = DataGenerator(dataset, config, shuffle=True, seed=4, steps=3)
    assert train.mosaic_tiles == 2
    assert DataGenerator(dataset, config, shuffle=False).mosaic_tiles == 1  # validation: whole images
    assert DataGenerator(dataset, config, shuffle=True, mosaic_tiles=1).mosaic_tiles == 1
    a, b = train.inputs(1), DataGenerator(dataset, config, shuffle=True, seed=4, steps=3).inputs(1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # Mosaic i shows stream images 4i .. 4i+3: a pass of the stream is still every image once.
    single = DataGenerator(dataset, config, shuffle=True, seed=4, steps=3, mosaic_tiles=1)
    stream = [single._image_at(p) for p in range(4 * len(dataset.image_ids))]
    assert sorted(stream[:len(dataset.image_ids)]) == sorted(dataset.image_ids)
    # More cells per image than without the mosaic, from the same stream.
    count = lambda gen: int((gen.inputs(0)[4] > 0).sum())  # noqa: E731
    assert count(train) > count(single)


def test_mosaic_tiles_must_be_a_whole_number():
    config = MosaicConfig()
    config.MOSAIC_TILES = 0
    with pytest.raises(ConfigError, match=r"Config.MOSAIC_TILES = 0 is invalid: use a whole number >= 1"):
        config.refresh()

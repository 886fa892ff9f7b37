"""The colour typer in TensorFlow (`mrcnn_tf.inference.colour_typer_graph`) computes the numpy typer's features,
probabilities, types and scores: skimage's colour spaces, the statistics of each mask, the exact Otsu split.

Random images and masks, plus the cases that have their own branch: a one-pixel mask, an empty mask, a mask of one
colour (no nucleus), masks on the border, a grey image, no masks at all. Agreement is to 1e-9 relative (1e-10
absolute for values that are 0 up to numpy's rounding, e.g. the std of one colour or a* of grey).
"""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.colour_typer import (FEATURE_SETS, ColourTyper, colour_features, compartment_features,
                                             otsu_split, retype)
from mrcnn_tf.inference.colour_typer_graph import GraphTyper, otsu_nucleus, pixel_spaces
from mrcnn_tf.inference.colour_typer_graph import colour_features as graph_features

TOLERANCE = dict(rtol=1e-9, atol=1e-10)
DIRECTION = (0.2, -0.4, -0.894)
NAMES = ["BG", "Eosinophil", "Lymphocyte", "Neutrophil"]


def numpy_features(image, masks, feature_set, direction=DIRECTION):
    if feature_set == "colour":
        rows = [colour_features(image, masks[..., n]) for n in range(masks.shape[-1])]
    else:
        rows = [compartment_features(image, masks[..., n], direction) for n in range(masks.shape[-1])]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_SETS[feature_set])))


def cell_image(rng, shape=(37, 53)):
    """Noise with a two-colour cell (reddish cytoplasm, bluish nucleus) and a patch of one colour."""
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    image[5:25, 8:30] = (200, 80, 90)
    image[10:18, 14:22] = (60, 40, 140)
    image[28:34, 40:50] = (120, 160, 40)
    return image


def special_masks(rng, shape=(37, 53)):
    """bool [H, W, 10]: random ones, one pixel, empty, one colour, two colours, border strips, everything."""
    masks = np.zeros(shape + (10,), bool)
    masks[..., 0] = rng.random(shape) < 0.3
    masks[..., 1] = rng.random(shape) < 0.05
    masks[20, 7, 2] = True  # one pixel
    # masks[..., 3] stays empty
    masks[29:33, 41:49, 4] = True  # one colour: no nucleus
    masks[5:25, 8:30, 5] = True  # a cell: cytoplasm and nucleus
    masks[0, :, 6] = masks[:, -1, 6] = True  # the border
    masks[-3:, :, 7] = True
    masks[:, :3, 8] = rng.random((shape[0], 3)) < 0.7
    masks[..., 9] = True
    return masks


def test_pixel_spaces_are_skimages():
    from skimage import color

    levels = np.arange(0, 256, 5)
    grid = np.stack(np.meshgrid(levels, levels[::2], levels[1::3], indexing="ij"), -1).reshape(-1, 1, 3)
    greys = np.repeat(np.arange(256)[:, None, None], 3, axis=2)
    ties = np.array([[[200, 200, 10]], [[10, 200, 200]], [[200, 10, 200]], [[0, 0, 0]], [[255, 255, 255]]])
    image = np.concatenate([grid, greys, ties]).astype(np.uint8)  # [P, 1, 3]
    rgb = image.astype(np.float64) / 255.0
    expected = np.concatenate([rgb, color.rgb2hsv(rgb), color.rgb2lab(rgb)], axis=2)[:, 0]
    got = pixel_spaces(tf.constant(image)).numpy()
    np.testing.assert_array_equal(got[:, :6], expected[:, :6])  # RGB and HSV: the same operations, bit for bit
    np.testing.assert_allclose(got[:, 6:], expected[:, 6:], rtol=1e-12, atol=1e-12)  # Lab: a cube root apart
    assert np.all(got[len(grid):len(grid) + 256, 3:5] == 0)  # grey: hue and saturation 0


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
@pytest.mark.parametrize("grey", [False, True])
def test_features_are_the_numpy_typers(rng, feature_set, grey):
    image = cell_image(rng)
    if grey:  # a grey-converted image: R = G = B
        image = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    masks = special_masks(rng)
    got = graph_features(image, masks, feature_set, DIRECTION).numpy()
    expected = numpy_features(image, masks, feature_set)
    assert got.shape == expected.shape == (10, len(FEATURE_SETS[feature_set])) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    np.testing.assert_array_equal(got[3], 0)  # the empty mask
    if feature_set != "colour":
        assert got[4, -1] == 0 and got[2, -1] == 0  # one colour, one pixel: no nucleus
        assert 0 < got[5, -1] < 1  # the cell has both


def test_features_in_a_traced_function_of_unknown_sizes(rng):
    """As in the export: shapes known only when called; several image sizes through one trace."""
    function = tf.function(lambda image, masks: graph_features(image, masks, "colour+compartments", DIRECTION),
                           input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                            tf.TensorSpec([None, None, None], tf.bool)])
    for shape, count in [((37, 53), 10), ((20, 20), 0), ((64, 9), 3)]:
        image = cell_image(rng, shape) if shape == (37, 53) else rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        masks = special_masks(rng, shape) if count == 10 else rng.random(shape + (count,)) < 0.4
        got = function(tf.constant(image), tf.constant(masks)).numpy()
        assert got.shape == (count, 56)
        np.testing.assert_allclose(got, numpy_features(image, masks, "colour+compartments"), **TOLERANCE)
    assert function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("values", [[], [3.0], [2.0, 2.0, 2.0], [1.0, 5.0], [1.0, 1.0, 2.0, 9.0, 9.0, 9.0],
                                    "random", "few levels"])
def test_otsu_nucleus_is_otsu_split(rng, values):
    if values == "random":
        values = rng.normal(0, 1, 500)
    elif values == "few levels":
        values = rng.integers(0, 6, 300).astype(np.float64)  # many ties
    values = np.asarray(values, np.float64)
    threshold = otsu_split(values)
    expected = values > threshold if threshold is not None else np.zeros(len(values), bool)
    np.testing.assert_array_equal(otsu_nucleus(tf.constant(values, tf.float64)).numpy(), expected)


def random_typer(features, feature_set, seed=0):
    """A typer of random weights whose standardisation fits the features (so the probabilities spread)."""
    rng = np.random.default_rng(seed)
    f, k = features.shape[1], len(NAMES) - 1
    return ColourTyper(NAMES, features.mean(0), features.std(0) + 0.5, rng.normal(0, 1, (f, k)),
                       rng.normal(0, 0.3, k), l2=0.1, feature_set=feature_set, nucleus_direction=DIRECTION)


@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_probabilities_types_and_scores_are_retypes(rng, feature_set):
    image, masks = cell_image(rng), special_masks(rng)
    typer = random_typer(numpy_features(image, masks, feature_set), feature_set)
    graph = GraphTyper(typer)
    features = graph.features(image, masks)
    np.testing.assert_allclose(graph.probabilities(features).numpy(),
                               typer.probabilities(numpy_features(image, masks, feature_set)), rtol=1e-9, atol=1e-12)
    class_ids, scores = (t.numpy() for t in graph.type_cells(image, masks))
    expected = retype({"class_ids": np.ones(10, np.int32), "scores": np.ones(10, np.float32), "masks": masks},
                      image, typer)
    assert class_ids.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(class_ids, expected["class_ids"])
    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-6)
    assert len(set(class_ids.tolist())) > 1  # the typer's choices vary: the comparison says something
    no_cells = [t.numpy() for t in graph.type_cells(image, np.zeros((37, 53, 0), bool))]
    assert no_cells[0].shape == no_cells[1].shape == (0,)


def test_bad_input_is_a_one_line_error(rng):
    image = cell_image(rng)
    cases = [(image, np.zeros((37, 53, 2), np.uint8), "colour", "bool masks"),
             (image, np.zeros((37, 52, 2), bool), "colour", "not the image's size"),
             (image, np.zeros((37, 53), bool), "colour", "bool masks"),
             (image[..., :2], np.zeros((37, 53, 2), bool), "colour", "RGB image"),
             (image, np.zeros((37, 53, 2), bool), "colours", "unknown")]
    for bad_image, masks, feature_set, message in cases:
        with pytest.raises(MrcnnError, match=message) as info:
            graph_features(bad_image, masks, feature_set)
        assert "\n" not in str(info.value)

"""The colour typer in TensorFlow: `ColourTyper.features` and `probabilities` as graph ops, so that the exported
SavedModel types its own detections (`mrcnn_tf.inference.export`).

Everything is float64 and follows the numpy typer (`mrcnn_tf.inference.colour_typer`) operation by operation:

- the image is converted once, every pixel to RGB (0-1), HSV and CIE Lab with skimage's conventions (``rgb2hsv``:
  hue 0 and saturation 0 for grey, the later of R, G, B wins a tie for the maximum; ``rgb2lab``: sRGB gamma above
  0.04045, the D65 2-degree white (0.95047, 1, 1.08883), f(t) = t^(1/3) above 0.008856 else 7.787 t + 16/116);
- each detection's pixels are gathered (`tf.map_fn` over the masks) and their mean and population standard
  deviation taken in two passes, as numpy does: E[x^2] - E[x]^2 from a matrix product of the masks cancels to
  up to ~3e-5 in the Lab std of a cell of one colour, whose standard deviation is 0;
- "colour+compartments" splits each cell by the exact Otsu of `otsu_split` on its Lab pixels projected on the
  typer's ``nucleus_direction``.

The results agree with numpy to ~1e-12 relative (summation order and the last bit of a cube root differ).
"""
import numpy as np
import tensorflow as tf

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.colour_typer import FEATURE_SETS, check_feature_set

# skimage.color.colorconv.xyz_from_rgb (sRGB, D65) and the D65 2-degree white point it divides by.
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def _linear_table():
    """[256] float64 linear sRGB of each uint8 level, computed with numpy exactly as skimage's ``rgb2xyz``."""
    values = np.arange(256, dtype=np.float64) / 255.0
    above = values > 0.04045
    values[above] = np.power((values[above] + 0.055) / 1.055, 2.4)
    values[~above] /= 12.92
    return values


def _cube_root(x):
    """x^(1/3) for positive float64 x: pow, then one Newton step to the last bit or so (TF has no cbrt)."""
    y = tf.pow(x, 1.0 / 3.0)
    return y - (y * y * y - x) / (3.0 * y * y)


def _as_rgb(image):
    """uint8 [H, W, C] or [H, W] -> [H, W, 3]: an alpha channel is dropped, grey counts as R = G = B."""
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape.rank != 3 or image.shape[-1] not in (1, 3, 4):
        raise MrcnnError(f"colour typing needs an RGB image [H, W, 3] (or grey [H, W]); got shape {image.shape}")
    return tf.tile(image, [1, 1, 3]) if image.shape[-1] == 1 else image[..., :3]


def pixel_spaces(image):
    """float64 [H*W, 9]: each pixel's RGB (0-1), HSV and CIE Lab, row-major, for a uint8 [H, W, 3] image."""
    codes = tf.reshape(tf.cast(_as_rgb(tf.convert_to_tensor(image)), tf.int32), [-1, 3])
    rgb = tf.cast(codes, tf.float64) / 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    value = tf.reduce_max(rgb, axis=1)
    delta = value - tf.reduce_min(rgb, axis=1)
    grey = tf.equal(delta, 0.0)
    one, zero = tf.ones_like(delta), tf.zeros_like(delta)  # tf.where takes a Python 1.0 as float32 in a graph
    safe_delta = tf.where(grey, one, delta)  # grey gets hue 0 and saturation 0 below, as in skimage
    saturation = tf.where(grey, zero, delta / tf.where(grey, one, value))
    # skimage assigns the red, green, then blue case in turn: the last channel equal to the maximum wins.
    hue = tf.where(tf.equal(b, value), 4.0 + (r - g) / safe_delta,
                   tf.where(tf.equal(g, value), 2.0 + (b - r) / safe_delta, (g - b) / safe_delta))
    hue = tf.where(grey, zero, tf.math.floormod(hue / 6.0, 1.0))  # floormod: numpy's % on floats
    linear = tf.gather(tf.constant(_linear_table()), codes)  # [P, 3]: the gamma as numpy computes it
    xyz = tf.matmul(linear, tf.constant(XYZ_FROM_RGB.T)) / tf.constant(D65_WHITE)
    f = tf.where(xyz > 0.008856, _cube_root(tf.maximum(xyz, 0.008856)), 7.787 * xyz + 16.0 / 116.0)
    lab = tf.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)
    return tf.concat([rgb, tf.stack([hue, saturation, value], axis=1), lab], axis=1)


def _statistics(pixels):
    """[P, 9] -> [18]: per space (RGB, HSV, Lab) the mean then the population std of its channels; zeros if P = 0."""
    count = tf.cast(tf.maximum(tf.shape(pixels)[0], 1), tf.float64)  # an empty set sums to 0: its stats are 0
    mean = tf.reduce_sum(pixels, axis=0) / count
    std = tf.sqrt(tf.reduce_sum(tf.square(pixels - mean), axis=0) / count)  # two passes, as numpy's std
    return tf.reshape(tf.stack([tf.reshape(mean, [3, 3]), tf.reshape(std, [3, 3])], axis=1), [18])


def otsu_nucleus(projection):
    """bool [P]: the projections above exact Otsu's threshold (`otsu_split`); all False for fewer than two
    distinct values.

    Args:
        projection: float64 [P], one cell's Lab pixels projected on the nucleus direction.
    """
    values = tf.sort(projection)
    size = tf.size(values)

    def split():
        n = tf.cast(size, tf.float64)
        below = tf.cast(tf.range(1, size), tf.float64)  # counts below the split after each position
        sums = tf.cumsum(values)[:-1]
        mean_below, mean_above = sums / below, (tf.reduce_sum(values) - sums) / (n - below)
        between = below * (n - below) * tf.square(mean_below - mean_above)
        # A split between equal values is no split.
        between = tf.where(tf.equal(values[:-1], values[1:]), -tf.ones_like(between), between)
        first = tf.reduce_min(tf.where(tf.equal(between, tf.reduce_max(between)))[:, 0])  # np.argmax: the first
        return projection > values[first]

    # reduce_max/min of nothing are -inf/+inf: an empty cell is "one colour" without indexing it.
    distinct = tf.logical_and(size >= 2, tf.reduce_max(values) > tf.reduce_min(values))
    return tf.cond(distinct, split, lambda: tf.zeros_like(projection, tf.bool))


def _cell_features(spaces, mask, feature_set, nucleus_direction):
    """[F] one cell's features from the image's `pixel_spaces` [H*W, 9] and its flat bool mask [H*W]."""
    pixels = tf.boolean_mask(spaces, mask)  # [P, 9]
    count = tf.cast(tf.shape(pixels)[0], tf.float64)
    log_area = tf.math.log(tf.maximum(count, 1.0))[None]  # an empty mask: 0, as numpy's zeros
    whole = tf.concat([_statistics(pixels), log_area], axis=0)
    if feature_set == "colour":
        return whole
    projection = tf.linalg.matvec(pixels[:, 6:9], nucleus_direction)
    nucleus = otsu_nucleus(projection)
    share = tf.reduce_sum(tf.cast(nucleus, tf.float64)) / tf.maximum(count, 1.0)
    return tf.concat([whole, _statistics(tf.boolean_mask(pixels, nucleus)),
                      _statistics(tf.boolean_mask(pixels, tf.logical_not(nucleus))), share[None]], axis=0)


def colour_features(image, masks, feature_set="colour", nucleus_direction=None):
    """float64 [N, F]: row n is the numpy `ColourTyper.features(image, masks[..., n])` of `feature_set`.

    Args:
        image: uint8 [H, W, 3] RGB (a grey [H, W] image counts as R = G = B; an alpha channel is dropped).
        masks: bool [H, W, N], N may be 0.
        feature_set: a key of `FEATURE_SETS` ("colour": F = 19, "colour+compartments": F = 56).
        nucleus_direction: [3] Lab direction of the nucleus split ("colour+compartments" only).
    """
    check_feature_set(feature_set)
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank != 3 or masks.dtype != tf.bool:
        raise MrcnnError(f"colour typing needs bool masks [H, W, N]; got {masks.dtype.name} of shape {masks.shape}")
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and not image.shape[:2].is_compatible_with(masks.shape[:2]):
        raise MrcnnError(f"the masks {masks.shape[:2]} are not the image's size {image.shape[:2]}")
    if nucleus_direction is None:
        from mrcnn_tf.inference.colour_typer import NUCLEUS_DIRECTION

        nucleus_direction = NUCLEUS_DIRECTION
    direction = tf.constant(np.asarray(nucleus_direction, np.float64))
    spaces = pixel_spaces(image)
    flat = tf.transpose(tf.reshape(masks, [-1, tf.shape(masks)[2]]))  # [N, H*W]: map_fn walks the detections
    return tf.map_fn(lambda mask: _cell_features(spaces, mask, feature_set, direction), flat,
                     fn_output_signature=tf.TensorSpec([len(FEATURE_SETS[feature_set])], tf.float64))


class GraphTyper:
    """A `ColourTyper`'s arrays as float64 constants, and its typing as graph ops.

    Args:
        typer: a `ColourTyper`.
    """

    def __init__(self, typer):
        self.feature_set = typer.feature_set
        self.nucleus_direction = np.asarray(typer.nucleus_direction, np.float64)
        self.mean, self.scale = tf.constant(typer.mean), tf.constant(typer.scale)
        self.weights, self.bias = tf.constant(typer.weights), tf.constant(typer.bias)

    def features(self, image, masks):
        """float64 [N, F] features of each mask [H, W, N] on the uint8 image [H, W, 3]."""
        return colour_features(image, masks, self.feature_set, self.nucleus_direction)

    def probabilities(self, features):
        """float64 [N, K-1] softmax of the standardised features (column j is class id j + 1)."""
        logits = tf.matmul((features - self.mean) / self.scale, self.weights) + self.bias
        exp = tf.exp(logits - tf.reduce_max(logits, axis=1, keepdims=True))  # as numpy's softmax
        return exp / tf.reduce_sum(exp, axis=1, keepdims=True)

    def type_cells(self, image, masks):
        """(class_ids int32 [N], scores float32 [N]): `retype`'s types and their probabilities."""
        probabilities = self.probabilities(self.features(image, masks))
        best = tf.reduce_max(probabilities, axis=1, keepdims=True)
        # The first column reaching the maximum, as numpy's argmax (tf.argmax leaves ties unspecified).
        columns = tf.range(tf.shape(probabilities)[1])[None, :]
        chosen = tf.reduce_min(tf.where(tf.equal(probabilities, best), columns, tf.shape(probabilities)[1]), axis=1)
        return chosen + 1, tf.cast(best[:, 0], tf.float32)

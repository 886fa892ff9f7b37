"""Instance-mask resizing in numpy: resize with the image, mini-masks, and pasting predicted masks.

Masks are [H, W, N] arrays (one channel per instance); boxes are pixel (y1, x1, y2, x2) with
y2/x2 exclusive.
"""
import warnings

import numpy as np
import scipy.ndimage
import skimage.transform

from mrcnn_tf.errors import MrcnnError


class MaskError(MrcnnError, ValueError):
    """A mask/box pair that cannot be resized (e.g. a zero-area box)."""


def resize(image, output_shape, order=1, mode="constant", cval=0, clip=True, preserve_range=False,
           anti_aliasing=False, anti_aliasing_sigma=None):
    """`skimage.transform.resize` with Matterport's defaults (no anti-aliasing).

    Args:
        image: [H, W(, C)] array.
        output_shape: (rows, cols) wanted.
        order: spline order (0 nearest, 1 bilinear).
        mode, cval, clip, preserve_range, anti_aliasing, anti_aliasing_sigma: as skimage.

    Returns:
        The resized array (float unless `preserve_range` keeps the value range).
    """
    image = np.asarray(image)
    # skimage refuses to interpolate bool data; [0, 1] floats give the same result.
    if image.dtype == bool and order > 0:
        image = image.astype(np.float32)
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip, preserve_range=preserve_range,
        anti_aliasing=anti_aliasing, anti_aliasing_sigma=anti_aliasing_sigma)


def resize_mask(mask, scale, padding, crop=None):
    """Resize, pad or crop instance masks the way `resize_image` changed their image.

    Args:
        mask: [H, W, N] masks.
        scale: the `scale` returned by `resize_image`.
        padding: its `padding`, [(top, bottom), (left, right), (0, 0)].
        crop: its `crop` (y, x, h, w) in "crop" mode, else None.

    Returns:
        [H', W', N] masks of the same dtype (bool in, bool out), nearest-neighbour resized.
    """
    mask = np.asarray(mask)
    dtype = mask.dtype
    rows, cols, count = mask.shape
    if count == 0 or rows == 0 or cols == 0:
        # scipy cannot zoom an empty array; the output size rule is the same round() it uses.
        resized = np.zeros((round(rows * scale), round(cols * scale), count), dtype=dtype)
    else:
        source = mask.astype(np.uint8) if dtype == bool else mask
        with warnings.catch_warnings():
            # scipy warns about its output-shape rounding; the shape is what resize_image produced.
            warnings.simplefilter("ignore")
            # mode="nearest": with the default "constant", float error can put the last row/column's
            # source coordinate a hair past the edge and scipy fills it with 0 (a lost mask column).
            resized = scipy.ndimage.zoom(source, zoom=[scale, scale, 1], order=0, mode="nearest")
        resized = resized.astype(dtype)
    if crop is not None:
        y, x, h, w = crop
        return resized[y:y + h, x:x + w]
    return np.pad(resized, padding, mode="constant", constant_values=0)


def minimize_mask(bbox, mask, mini_shape):
    """Crop each mask to its box and resize it to `mini_shape` (Matterport's mini-masks, saves memory).

    Args:
        bbox: [N, 4] pixel boxes (y1, x1, y2, x2) from `extract_bboxes`.
        mask: [H, W, N] masks.
        mini_shape: (rows, cols), e.g. MINI_MASK_SHAPE.

    Returns:
        bool [rows, cols, N] mini-masks.

    Raises:
        MaskError: a box has zero area (drop empty masks before minimizing).
    """
    mini_shape = tuple(int(s) for s in mini_shape)
    mini_mask = np.zeros(mini_shape + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        crop = np.asarray(mask[y1:y2, x1:x2, i]).astype(np.float32)
        if crop.size == 0:
            raise MaskError(f"minimize_mask: instance {i} has a zero-area box {(y1, x1, y2, x2)}; "
                            "remove empty masks (np.sum(mask, axis=(0, 1)) > 0) before minimizing")
        mini_mask[:, :, i] = np.around(resize(crop, mini_shape)) > 0
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Paste mini-masks back at their boxes in a full-size image (inverse of `minimize_mask`).

    Args:
        bbox: [N, 4] pixel boxes (y1, x1, y2, x2).
        mini_mask: [rows, cols, N] mini-masks.
        image_shape: (H, W[, C]) of the full image.

    Returns:
        bool [H, W, N] masks; a zero-area box leaves its channel empty.
    """
    count = mini_mask.shape[-1]
    mask = np.zeros(tuple(image_shape[:2]) + (count,), dtype=bool)
    for i in range(count):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        if y2 <= y1 or x2 <= x1:
            continue
        m = resize(np.asarray(mini_mask[:, :, i]).astype(np.float32), (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m) > 0
    return mask


def unmold_mask(mask, bbox, image_shape):
    """Turn one predicted mask (mask-head output) into a full-image binary mask.

    Args:
        mask: [rows, cols] float scores in [0, 1] (e.g. 28x28).
        bbox: (y1, x1, y2, x2) pixel box of the detection in the original image.
        image_shape: (H, W[, C]) of the original image.

    Returns:
        bool [H, W] mask, True where the resized score is >= 0.5; empty for a zero-area box.
    """
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    paste_mask(full_mask, mask, bbox)
    return full_mask


def paste_mask(out, mask, bbox):
    """`unmold_mask` into an existing all-False [H, W] view `out` (e.g. ``masks[:, :, i]``), writing only the box.

    A detection's box covers a few percent of the image: writing that part alone, rather than a full-size mask per
    detection copied into a channel of an [H, W, N] array, keeps `detect`'s unmolding off the image's full size.

    Args:
        out: bool [H, W] array or view, False outside the box (it is not cleared).
        mask, bbox: as `unmold_mask`.

    Returns:
        (rows, cols) slices of `out` that were written, or None (a zero-area box, or one outside the image).
    """
    y1, x1, y2, x2 = (int(v) for v in bbox[:4])
    # Paste only the part inside the image: a box that pokes out must not raise a shape error.
    height, width = out.shape[:2]
    top, left = max(y1, 0), max(x1, 0)
    bottom, right = min(y2, height), min(x2, width)
    if y2 <= y1 or x2 <= x1 or bottom <= top or right <= left:
        return None
    resized = resize(np.asarray(mask, dtype=np.float32), (y2 - y1, x2 - x1)) >= 0.5
    region = (slice(top, bottom), slice(left, right))
    out[region] = resized[top - y1:bottom - y1, left - x1:right - x1]
    return region

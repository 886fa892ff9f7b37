"""Image resizing, molding and image-meta packing in numpy (Matterport's behaviour).

``window`` is the pixel box (y1, x1, y2, x2), y2/x2 exclusive, of the real image inside the
resized-and-padded one.
"""
import numpy as np

from mrcnn_tf.errors import ConfigError
from mrcnn_tf.ops.masks import resize

RESIZE_MODES = ("none", "square", "pad64", "crop")


def _cast_like(image, dtype):
    """Back to the input dtype; integer images are rounded and clipped rather than truncated."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = np.clip(np.round(image), info.min, info.max)
    return image.astype(dtype)


def _pad_to_64(size):
    """(before, after) padding that brings `size` up to the next multiple of 64, centred."""
    if size % 64 == 0:
        return 0, 0
    total = size - size % 64 + 64 - size
    return total // 2, total - total // 2


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square", rng=None):
    """Resize and pad (or crop) an image, keeping its aspect ratio, as Matterport's ``resize_image``.

    Modes:
        "none": unchanged.
        "square": scale up so the short side is >= `min_dim` (never down for it), cap the long side
            at `max_dim`, then zero-pad centred to `max_dim` x `max_dim`.
        "pad64": scale as above (no cap; `max_dim` ignored), then zero-pad each side, centred, up to a
            multiple of 64. `min_dim` must be a multiple of 64.
        "crop": scale as above, then take a random `min_dim` x `min_dim` crop (training only).
    `min_scale` (any mode but "none") is a lower bound on the scale applied before the cap.

    Args:
        image: [H, W, C] array (any dtype; [H, W] is accepted too).
        min_dim, max_dim, min_scale: IMAGE_MIN_DIM, IMAGE_MAX_DIM, IMAGE_MIN_SCALE.
        mode: IMAGE_RESIZE_MODE.
        rng: numpy Generator for the random crop, so a seeded pipeline repeats; a fresh one if None.

    Returns:
        image: the resized image, same dtype as the input.
        window: (y1, x1, y2, x2) pixel box of the image inside the padded output.
        scale: the scale factor applied (float).
        padding: [(top, bottom), (left, right), (0, 0)] pixels added.
        crop: (y, x, h, w) of the crop in the scaled image for "crop" mode, else None.
    """
    image = np.asarray(image)
    dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1.0
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode not in RESIZE_MODES:
        raise ConfigError(f"IMAGE_RESIZE_MODE = {mode!r} is invalid: use one of {', '.join(RESIZE_MODES)}")
    if mode == "none":
        return image, window, scale, padding, crop
    if mode == "square" and not max_dim:
        raise ConfigError("IMAGE_MAX_DIM is needed for IMAGE_RESIZE_MODE 'square': set it to the output side")
    if mode in ("pad64", "crop") and not min_dim:
        raise ConfigError(f"IMAGE_MIN_DIM is needed for IMAGE_RESIZE_MODE {mode!r}: set it (a multiple of 64)")
    if mode == "pad64" and min_dim % 64:
        raise ConfigError(f"IMAGE_MIN_DIM = {min_dim} must be a multiple of 64 in 'pad64' mode")

    if min_dim:
        scale = max(1.0, min_dim / min(h, w))  # scale up only
    if min_scale and scale < min_scale:
        scale = float(min_scale)
    if max_dim and mode == "square" and round(max(h, w) * scale) > max_dim:
        scale = max_dim / max(h, w)
    if scale != 1:
        resized = resize(image, (round(h * scale), round(w * scale)), preserve_range=True)
        image = _cast_like(resized, dtype)

    h, w = image.shape[:2]
    if mode == "square":
        top = (max_dim - h) // 2
        left = (max_dim - w) // 2
        padding = [(top, max_dim - h - top), (left, max_dim - w - left), (0, 0)]
        window = (top, left, top + h, left + w)
    elif mode == "pad64":
        padding = [_pad_to_64(h), _pad_to_64(w), (0, 0)]
        window = (padding[0][0], padding[1][0], padding[0][0] + h, padding[1][0] + w)
    else:  # crop
        if h < min_dim or w < min_dim:
            raise ConfigError(f"image of {h}x{w} after scaling is smaller than the {min_dim}x{min_dim} crop: "
                              "raise IMAGE_MIN_SCALE or lower IMAGE_MIN_DIM")
        rng = np.random.default_rng() if rng is None else rng
        y = int(rng.integers(0, h - min_dim + 1))
        x = int(rng.integers(0, w - min_dim + 1))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
        return image, window, scale, padding, crop
    image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
    return image, window, scale, padding, crop


def mold_image(images, config):
    """Network input from RGB image(s): float32 with MEAN_PIXEL subtracted (Matterport's only normalisation).

    Args:
        images: [..., H, W, C] array.
        config: a `Config` (MEAN_PIXEL).

    Returns:
        float32 array of the same shape.
    """
    return (np.asarray(images, dtype=np.float32) - np.asarray(config.MEAN_PIXEL, dtype=np.float32))


def unmold_image(normalized_images, config):
    """Inverse of `mold_image`: add MEAN_PIXEL back, round and clip to uint8.

    Args:
        normalized_images: [..., H, W, C] molded images.
        config: a `Config` (MEAN_PIXEL).

    Returns:
        uint8 array of the same shape.
    """
    images = np.asarray(normalized_images, dtype=np.float64) + np.asarray(config.MEAN_PIXEL, dtype=np.float64)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale, active_class_ids):
    """Pack an image's attributes into one 1-D array (the graph's ``input_image_meta``).

    Layout (length 12 + NUM_CLASSES = IMAGE_META_SIZE): image_id, original_image_shape (3),
    image_shape (3, after resize and padding), window (4, pixel y1, x1, y2, x2 in the molded image),
    scale, active_class_ids (NUM_CLASSES; 1 where the image's dataset has that class).

    Returns:
        float64 [12 + NUM_CLASSES] array.
    """
    return np.array([image_id] + list(original_image_shape) + list(image_shape) + list(window)
                    + [scale] + list(active_class_ids), dtype=np.float64)


def parse_image_meta(meta):
    """Unpack a batch of image metas written by `compose_image_meta`.

    Args:
        meta: [B, IMAGE_META_SIZE] array (a single [IMAGE_META_SIZE] row is treated as a batch of one).

    Returns:
        dict of arrays with a leading batch axis: image_id int32 [B], original_image_shape int32 [B, 3],
        image_shape int32 [B, 3], window int32 [B, 4] (pixels), scale float32 [B],
        active_class_ids int32 [B, NUM_CLASSES].
    """
    meta = np.atleast_2d(np.asarray(meta))
    return {
        "image_id": meta[:, 0].astype(np.int32),
        "original_image_shape": meta[:, 1:4].astype(np.int32),
        "image_shape": meta[:, 4:7].astype(np.int32),
        "window": meta[:, 7:11].astype(np.int32),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": meta[:, 12:].astype(np.int32),
    }

"""Matterport ``utils`` helpers that mrcnn_tf itself does not need, kept for code written against them.

`batch_slice` is Matterport's Python loop over a batch (mrcnn_tf's layers are batched instead);
`mold_mask` is the name Matterport declared and left empty, here given the meaning its name says:
the masks' half of molding an image.
"""
import numpy as np

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.ops.image import resize_image
from mrcnn_tf.ops.masks import resize_mask


def batch_slice(inputs, graph_fn, batch_size, names=None):
    """Run `graph_fn` on each item of a batch and stack the results (Matterport's ``utils.batch_slice``).

    Call it eagerly or inside a ``Layer.call`` (Keras 3 rejects raw TF ops on symbolic tensors).

    Args:
        inputs: a tensor (or array), or a list of them, batch axis first.
        graph_fn: called with the i-th slice of every input; returns one value or a list/tuple of them.
        batch_size: number of items to slice (Matterport passed IMAGES_PER_GPU).
        names: optional names of the stacked results.

    Returns:
        the stacked result [batch_size, ...], or a list of them when `graph_fn` returns several.
    """
    import tensorflow as tf  # here, so that `mrcnn_tf.utils` imports without TensorFlow

    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    if int(batch_size) < 1:
        raise MrcnnError(f"batch_slice: batch_size = {batch_size}; give the number of items (>= 1)")
    per_item = []
    for i in range(int(batch_size)):
        result = graph_fn(*[x[i] for x in inputs])
        per_item.append(list(result) if isinstance(result, (list, tuple)) else [result])
    names = list(names) if names is not None else [None] * len(per_item[0])
    stacked = [tf.stack(list(values), axis=0, name=name) for values, name in zip(zip(*per_item), names)]
    return stacked[0] if len(stacked) == 1 else stacked


def mold_mask(mask, config):
    """Resize and pad instance masks the way `MaskRCNN.mold_inputs` resizes their image.

    The same scale and padding `resize_image` gives an image of this size under the config's IMAGE_*
    settings, so the masks line up with the molded image (as `load_image_gt` makes them for training).

    Args:
        mask: [H, W, N] masks in the coordinates of the original image.
        config: a `Config` (IMAGE_RESIZE_MODE, IMAGE_MIN_DIM, IMAGE_MAX_DIM, IMAGE_MIN_SCALE).

    Returns:
        [h, w, N] masks of the same dtype, in the molded image's pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise MrcnnError(f"mold_mask: masks of shape {mask.shape}; give [H, W, N] instance masks")
    if config.IMAGE_RESIZE_MODE == "crop":
        raise MrcnnError("mold_mask: IMAGE_RESIZE_MODE 'crop' crops at random, so masks cannot follow an image "
                         "molded apart from them; use load_image_gt, which crops both together")
    # Only the size matters for the scale and padding, so a one-channel blank stands in for the image.
    _, _, scale, padding, _ = resize_image(np.zeros(mask.shape[:2] + (1,), np.uint8),
                                           min_dim=config.IMAGE_MIN_DIM, max_dim=config.IMAGE_MAX_DIM,
                                           min_scale=config.IMAGE_MIN_SCALE, mode=config.IMAGE_RESIZE_MODE)
    return resize_mask(mask, scale, padding)

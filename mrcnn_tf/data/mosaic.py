"""Training mosaics: k x k training images' cells, each cropped around its cells, in one image.

A BCCD field holds one white cell in 640x480 pixels of red cells: a batch of four fields shows the class
head four cells. A 2 x 2 mosaic of the same size shows it sixteen, at the same resolution and the same
cost per step (YOLOv4's mosaic without its rescaling: a cell keeps the size it has at inference).

Each tile is one image of the training stream, loaded, resized and augmented as usual (`load_image_gt`),
then cropped to (H / k, W / k) at a random place that keeps its cells whole where they fit, preferring
the image's window (not its padding). A cell cut by the crop is kept if at least `min_visible` of its
pixels remain, else dropped from the targets.
"""
import numpy as np

from mrcnn_tf.data.targets import load_image_gt
from mrcnn_tf.ops.boxes import extract_bboxes
from mrcnn_tf.ops.image import compose_image_meta, parse_image_meta
from mrcnn_tf.ops.masks import minimize_mask


def _origin(low, high, cells_low, cells_high, size, rng):
    """First row (or column) of a `size` crop inside [low, high) that holds [cells_low, cells_high) if it can."""
    first, last = low, max(low, high - size)  # every crop origin that stays inside [low, high)
    fit_first, fit_last = max(first, cells_high - size), min(last, cells_low)
    if fit_first <= fit_last:
        return int(rng.integers(fit_first, fit_last + 1))
    # The cells do not fit (or lie outside the window): centre on them, inside the bounds.
    return int(np.clip((cells_low + cells_high - size) // 2, first, last))


def crop_origin(masks, window, crop_shape, rng):
    """(y, x) of a crop of `crop_shape` inside `window` (y1, x1, y2, x2) that holds every instance if it can.

    Args:
        masks: bool [H, W, N] instance masks (N may be 0: a random place in the window).
        window: the image's content (not padding) in pixels; crops fall outside it only where it is
            smaller than the crop.
        crop_shape: (h, w), at most the image's shape.
        rng: numpy Generator.
    """
    height, width = masks.shape[:2]
    h, w = crop_shape
    y1, x1, y2, x2 = (int(v) for v in window)
    if y2 - y1 < h:
        y1, y2 = 0, height
    if x2 - x1 < w:
        x1, x2 = 0, width
    if masks.any():
        rows, cols = np.flatnonzero(masks.any(axis=(1, 2))), np.flatnonzero(masks.any(axis=(0, 2)))
        cells = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        # No cell: any crop of the window (an empty "cell" at a random point fits everywhere).
        cells = (int(rng.integers(y1, y2 - h + 1)),) * 2 + (int(rng.integers(x1, x2 - w + 1)),) * 2
    return (_origin(y1, y2, cells[0], cells[1], h, rng), _origin(x1, x2, cells[2], cells[3], w, rng))


def content_window(image):
    """(y1, x1, y2, x2) around the pixels that are not padding (exact zeros) of an augmented image.

    The resize's window is not used: a right-angle turn moves the padding to the other axis.
    """
    content = image.any(axis=-1)
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if rows.size == 0:
        return 0, 0, image.shape[0], image.shape[1]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def compose_mosaic(tiles, per_side, rng, min_visible=0.5, origins=None):
    """Place `per_side` ** 2 tiles' crops on one canvas of the tiles' shape.

    Args:
        tiles: list of per_side ** 2 tuples (image uint8 [H, W, 3], masks bool [H, W, N], class_ids [N],
            window (y1, x1, y2, x2)), all of the same H, W; a fifth item, nucleus masks bool [H, W, N],
            is cropped and placed with its cells (an instance's nucleus stays with it or goes with it).
        per_side: tiles per side (k); a tile's crop is (H // k, W // k), the canvas rest (H % k rows) black.
        rng: numpy Generator for the crop places.
        min_visible: an instance is kept when at least this share of its pixels is inside its crop.
        origins: (y, x) of each tile's crop; default `crop_origin` of each tile, drawn from `rng`.

    Returns:
        image uint8 [H, W, 3], masks bool [H, W, M], class_ids int32 [M] (tile order, then instance order);
        with nucleus masks in the tiles a fourth, nucleus masks bool [H, W, M].
    """
    height, width = tiles[0][0].shape[:2]
    h, w = height // per_side, width // per_side
    canvas = np.zeros_like(tiles[0][0])
    masks, class_ids, nuclei = [], [], []
    with_nucleus = len(tiles[0]) > 4
    for index, (image, tile_masks, tile_ids, window, *tile_nuclei) in enumerate(tiles):
        if image.shape[:2] != (height, width):
            raise ValueError(f"mosaic tiles differ in shape: {image.shape[:2]} and {(height, width)}")
        row, col = divmod(index, per_side)
        y, x = crop_origin(tile_masks, window, (h, w), rng) if origins is None else origins[index]
        canvas[row * h:(row + 1) * h, col * w:(col + 1) * w] = image[y:y + h, x:x + w]
        crop = tile_masks[y:y + h, x:x + w]
        visible, whole = crop.sum(axis=(0, 1)), tile_masks.sum(axis=(0, 1))
        for i in np.flatnonzero((visible > 0) & (visible >= min_visible * whole)):
            placed = np.zeros((height, width), bool)
            placed[row * h:(row + 1) * h, col * w:(col + 1) * w] = crop[:, :, i]
            masks.append(placed)
            class_ids.append(int(tile_ids[i]))
            if with_nucleus:
                nucleus = np.zeros((height, width), bool)
                nucleus[row * h:(row + 1) * h, col * w:(col + 1) * w] = tile_nuclei[0][y:y + h, x:x + w, i]
                nuclei.append(nucleus)
    masks = np.stack(masks, axis=-1) if masks else np.zeros((height, width, 0), bool)
    if with_nucleus:
        nuclei = np.stack(nuclei, axis=-1) if nuclei else np.zeros((height, width, 0), bool)
        return canvas, masks, np.asarray(class_ids, np.int32), nuclei
    return canvas, masks, np.asarray(class_ids, np.int32)


def load_mosaic_gt(dataset, config, image_ids, per_side, augmentation_for_image, augment=False,
                   use_mini_mask=False, rng=None, cache=None, nucleus_masks=False):
    """`load_image_gt` for a mosaic of `image_ids` (per_side ** 2 of them, row by row).

    Args:
        augmentation_for_image: callable image_id -> the imgaug augmenter for that image (or None).
        Others as `load_image_gt`.

    Returns:
        image, image_meta, class_ids, bbox, mask (and nucleus_mask with `nucleus_masks`) as `load_image_gt`;
        the meta names the first tile's image, with the whole canvas as its window and scale 1 (training reads
        only its shape and class ids).
    """
    tiles, active = [], np.zeros([dataset.num_classes], dtype=np.int32)
    for image_id in image_ids:
        image, meta, ids, _, masks, *nuclei = load_image_gt(
            dataset, config, image_id, augment=augment, augmentation=augmentation_for_image(image_id),
            use_mini_mask=False, rng=rng, cache=cache, nucleus_masks=nucleus_masks)
        tiles.append((image, masks, ids, content_window(image), *nuclei))
        active |= parse_image_meta(meta)["active_class_ids"][0]
    image, masks, class_ids, *nuclei = compose_mosaic(tiles, per_side, rng)
    bbox = extract_bboxes(masks).astype(np.int32)
    if use_mini_mask:
        masks = minimize_mask(bbox, masks, config.MINI_MASK_SHAPE)
        nuclei = [minimize_mask(bbox, n, config.MINI_MASK_SHAPE) for n in nuclei]
    meta = compose_image_meta(image_ids[0], image.shape, image.shape, (0, 0) + image.shape[:2], 1.0, active)
    return (np.ascontiguousarray(image), meta, class_ids, bbox, masks, *nuclei)

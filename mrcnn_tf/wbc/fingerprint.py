"""A dataset's fingerprint and the from-scratch plan derived from it (nnU-Net's idea, for Mask R-CNN on smears).

`fingerprint(dataset)` measures the training annotations: image sizes and colour, cells per image, cell sizes,
type counts, cells cut by the image border. `plan(fp)` turns those into settings of the CPU recipe
(`BccdConfig`'s, with what the data decides replaced): the resize that brings the median cell to
`TARGET_CELL_PX`, anchor scales that cover the spread of cell sizes, the mean pixel, instance limits, repeat
factors for rare types, mosaics where each image holds one cell small enough to crop around, the steps from the
dataset's size, and a nucleus head where every cell has a nucleus mask. Each choice carries what was measured and
why (`Choice`), so `mrcnn-tf fingerprint DIR` and `mrcnn-tf train --dataset DIR --weights none` (with no
`--config`) print one table and the run's config JSON keeps it (`Config.FINGERPRINT`). `--set` still overrides
any line.
"""
import math

import numpy as np

from mrcnn_tf.errors import DatasetError

TARGET_CELL_PX = 90  # the median cell's diameter after resizing: BCCD's recipe size, lobes and granules visible
SIZE_STEP = 64  # image sides are multiples of 64 (the backbone's stride)
MIN_SIDE, MAX_SIDE = 128, 512  # below 128 the P6 anchors see nothing; above 512 a 2-core CPU step grows too slow
PASSES = 56  # training passes over the fields: the BCCD recipe's 800 steps x 16 fields over its 227 fields
MIN_STEPS, MAX_STEPS, STEPS_PER_EPOCH = 200, 800, 50  # 800 steps: about fifteen minutes on two CPU cores


class Choice:
    """One line of a plan: the config `key`, its `value`, what was `measured` and `why`."""

    def __init__(self, key, value, measured, why):
        self.key, self.value, self.measured, self.why = key, value, measured, why

    def to_dict(self):
        value = self.value.tolist() if isinstance(self.value, np.ndarray) else self.value
        value = list(value) if isinstance(value, tuple) else value
        return {"key": self.key, "value": value, "measured": self.measured, "why": self.why}


def fingerprint(dataset):
    """Measure a prepared `Dataset` (images and masks as `load_image` / `load_mask` give them; crowds left out).

    Returns:
        dict: images, cells, cells_per_image (list), image_shapes (distinct (h, w)), grey_images, mean_pixel
        [3], cell_diameters (equivalent diameters, px, sorted), cell_extents (longest box sides, px),
        border_cells, classes (names, BG first), type_counts {name: cells} for every class but BG, has_nucleus.

    Raises:
        DatasetError: no image, or no cell in any image.
    """
    if not dataset.image_ids.size:
        raise DatasetError("the training set has no image: nothing to fingerprint")
    counts, shapes, diameters, extents = [], set(), [], []
    grey, border, channel_sums, pixels = 0, 0, np.zeros(3), 0
    types = np.zeros(len(dataset.class_names), int)
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        keep = np.asarray(class_ids) > 0  # crowd regions (negative ids) are not cells
        masks, class_ids = np.asarray(masks, bool)[..., keep], np.asarray(class_ids)[keep]
        shapes.add(tuple(int(v) for v in image.shape[:2]))
        grey += bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
        channel_sums += image.reshape(-1, image.shape[-1])[:, :3].sum(axis=0)
        pixels += image.shape[0] * image.shape[1]
        counts.append(int(masks.shape[-1]))
        for i, class_id in enumerate(class_ids):
            rows, cols = np.flatnonzero(masks[..., i].any(axis=1)), np.flatnonzero(masks[..., i].any(axis=0))
            if not rows.size:
                continue
            diameters.append(math.sqrt(4 * masks[..., i].sum() / math.pi))
            extents.append(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
            border += bool(rows[0] == 0 or cols[0] == 0 or rows[-1] == image.shape[0] - 1
                           or cols[-1] == image.shape[1] - 1)
            types[int(class_id)] += 1
    if not diameters:
        raise DatasetError("the training set holds no cell (every mask empty): annotate the cells before training")
    return {"images": len(counts), "cells": len(diameters), "cells_per_image": counts,
            "image_shapes": sorted(shapes), "grey_images": grey, "mean_pixel": (channel_sums / pixels).round(1).tolist(),
            "cell_diameters": sorted(diameters), "cell_extents": sorted(int(e) for e in extents), "border_cells": border,
            "classes": list(dataset.class_names),
            "type_counts": {name: int(n) for name, n in zip(dataset.class_names[1:], types[1:])},
            "has_nucleus": bool(getattr(dataset, "has_nucleus", False))}


def _side(length):
    """`length` px rounded to a multiple of SIZE_STEP within [MIN_SIDE, MAX_SIDE]."""
    return int(min(MAX_SIDE, max(MIN_SIDE, SIZE_STEP * round(length / SIZE_STEP))))


def plan(fp, images_per_step=4, start="none"):
    """The settings the fingerprint `fp` decides, as `Choice`s in print order, and the warnings it raises.

    Args:
        fp: `fingerprint(...)`.
        images_per_step: images per training step (for the step count).
        start: "none" (random weights) or "coco" / "imagenet": pretrained weights keep the input mean they were
            trained with and Matterport's staged schedule (heads, then all layers); the rest is the data's.

    Returns:
        (choices, warnings): a list of `Choice` and a list of one-line warnings (bad or unusual data).
    """
    diameters = np.asarray(fp["cell_diameters"], float)
    median, low, high = (float(np.percentile(diameters, q)) for q in (50, 5, 95))
    longest_side = max(max(h, w) for h, w in fp["image_shapes"])
    shortest_side = min(min(h, w) for h, w in fp["image_shapes"])
    side = _side(longest_side * TARGET_CELL_PX / median)
    scale = side / longest_side
    choices = [Choice("NUM_CLASSES", len(fp["classes"]), f"{len(fp['classes']) - 1} types in the annotations",
                      "one class per type, and the background"),
               Choice("IMAGE_MAX_DIM", side, f"median cell {median:.0f} px, images up to {longest_side} px",
                      f"the median cell becomes ~{median * scale:.0f} px (target {TARGET_CELL_PX}), sides a multiple "
                      f"of {SIZE_STEP} in [{MIN_SIDE}, {MAX_SIDE}]"),
               Choice("IMAGE_MIN_DIM", side, f"{len(fp['image_shapes'])} image size(s)",
                      "square inputs of one size: every image padded to IMAGE_MAX_DIM")]
    middle = 2 ** max(5, round(math.log2(median * scale)))
    scales = tuple(middle * 2 ** k // 4 for k in range(5))
    choices.append(Choice("RPN_ANCHOR_SCALES", scales, f"cells {low * scale:.0f}-{high * scale:.0f} px after resize "
                          "(5th-95th percentile)", "five octaves centred on the median cell: each cell size has "
                          "anchors at IoU >= 0.5"))
    pretrained = start != "none"
    choices.append(Choice("MEAN_PIXEL", None if pretrained else np.array(fp["mean_pixel"]),
                          "mean colour {} of {} images".format(np.round(fp["mean_pixel"], 1).tolist(), fp["images"]),
                          f"kept: the {start} weights were trained on inputs centred on it" if pretrained else
                          "the data's own mean, subtracted before the backbone"))
    per_image = np.asarray(fp["cells_per_image"])
    one_cell = float(np.mean(per_image == 1))
    extent_high = float(np.percentile(fp["cell_extents"], 95))
    tiles = 2 if one_cell >= 0.8 and extent_high <= shortest_side / 2 else 1  # a tile crops 1/2 of each side
    choices.append(Choice("MOSAIC_TILES", tiles, f"{one_cell:.0%} of images hold one cell; 95% of cells span "
                          f"<= {extent_high:.0f} px of the images' shortest {shortest_side} px side",
                          "2 x 2 mosaics of crops around the cells: four times the cells per step"
                          if tiles == 2 else "no mosaics: a crop of half the image would cut the cells, or images "
                          "hold several cells already"))
    most = int(per_image.max())
    choices.append(Choice("MAX_GT_INSTANCES", max(8, most * tiles * tiles), f"at most {most} cells in an image",
                          "room for every cell of a (mosaic) training image"))
    choices.append(Choice("DETECTION_MAX_INSTANCES", max(5, 2 * most), f"at most {most} cells in an image",
                          "twice the most cells seen in one image"))
    present = {name: n for name, n in fp["type_counts"].items() if n}
    share = min(present.values()) / fp["cells"]
    threshold = 0.3 if len(present) > 1 and max(present.values()) / min(present.values()) >= 3 else 0.0
    choices.append(Choice("REPEAT_FACTOR_THRESHOLD", threshold, f"rarest type {share:.1%} of the cells",
                          "rare types shown more often (repeat-factor sampling)" if threshold else
                          "types balanced enough: no repeats"))
    fields_per_step = images_per_step * tiles * tiles
    steps = int(min(MAX_STEPS, max(MIN_STEPS, math.ceil(PASSES * fp["images"] / fields_per_step))))
    epochs = math.ceil(steps / STEPS_PER_EPOCH)
    if pretrained:
        from mrcnn_tf.engine.driver import DEFAULT_SCHEDULE

        choices.append(Choice("SCHEDULE", DEFAULT_SCHEDULE, f"start: {start} weights", "Matterport's stages: the new "
                              "heads first, then every layer"))
    else:
        choices.append(Choice("SCHEDULE", f"all:{epochs}", f"{fp['images']} training images, {fields_per_step} per "
                              f"step", f"{PASSES} passes over the images in {epochs} epochs of {STEPS_PER_EPOCH} "
                              f"steps, {MIN_STEPS}-{MAX_STEPS} steps"))
    choices.append(Choice("COLOUR_TYPING", len(present) > 1 and fp["grey_images"] < fp["images"],
                          f"{len(present)} types present, {fp['grey_images']} grey images",
                          "types from the colour inside each cell" if len(present) > 1 and fp["grey_images"] <
                          fp["images"] else "one type or grey images: the class head types"))
    choices.append(Choice("NUCLEUS_MASKS", fp["has_nucleus"], "every cell has a nucleus mask" if fp["has_nucleus"]
                          else "no nucleus masks", "the mask head also learns each cell's nucleus (N:C ratio, lobes "
                          "in cells.csv)" if fp["has_nucleus"] else "cell masks only"))
    return choices, _warnings(fp, present)


def _warnings(fp, present):
    found = []
    missing = [name for name, n in fp["type_counts"].items() if not n]
    if len(present) == 1:
        found.append(f"only one type in the training cells ({next(iter(present))}): every cell will get that type")
    if missing:
        found.append(f"no training cell of {', '.join(missing)}: the model cannot learn to find or type them; "
                     "annotate some or remove the category")
    if fp["grey_images"]:
        found.append(f"{fp['grey_images']} of {fp['images']} images are grey: stain colour cannot help typing there")
    if fp["border_cells"]:
        found.append(f"{fp['border_cells']} of {fp['cells']} cells touch the image border: their outlines and "
                     "sizes are cut")
    if len(fp["image_shapes"]) > 1:
        found.append(f"images of {len(fp['image_shapes'])} sizes (e.g. {fp['image_shapes'][0]} and "
                     f"{fp['image_shapes'][-1]}): all are resized to one square size")
    return found


def format_plan(fp, choices, warnings):
    """The printed table: what was measured, what was chosen, why; then the warnings."""
    lines = [f"Fingerprint: {fp['images']} training images, {fp['cells']} cells, types "
             + ", ".join(f"{name} {n}" for name, n in fp["type_counts"].items()),
             f"{'setting':24} {'chosen':22} {'measured':58} why"]
    for choice in choices:
        value = choice.to_dict()["value"]
        lines.append(f"{choice.key:24} {str(value):22} {choice.measured:58} {choice.why}")
    lines += [f"Warning: {warning}" for warning in warnings]
    return "\n".join(lines)


def planned_config(fp, base=None, images_per_step=None, start="none"):
    """A config of the recipe for `start` with the fingerprint's choices applied and recorded (`FINGERPRINT`).

    Args:
        fp: `fingerprint(...)`.
        base: the Config to start from (default: `BccdConfig()`, the CPU recipe from random weights, or for
            pretrained weights `LiscConfig()`, the ResNet-50 recipe they fit).
        images_per_step: images per step for the step count (default: the base's BATCH_SIZE).
        start: "none", "coco" or "imagenet" (see `plan`).

    Returns:
        (config, schedule text, choices, warnings); a choice that keeps the base's value carries that value.
    """
    if base is None and start == "none":
        from mrcnn_tf.wbc.bccd import BccdConfig

        base = BccdConfig()
    elif base is None:
        from mrcnn_tf.lisc import LiscConfig

        base = LiscConfig()
    config = base
    config.NAME = "wbc"
    choices, warnings = plan(fp, images_per_step or config.BATCH_SIZE, start)
    schedule = None
    for choice in choices:
        if choice.key == "SCHEDULE":
            schedule = choice.value
        elif choice.value is None:  # kept from the base recipe
            choice.value = getattr(config, choice.key)
        else:
            setattr(config, choice.key, choice.value)
    measured = ("images", "cells", "image_shapes", "grey_images", "border_cells", "type_counts", "has_nucleus")
    config.FINGERPRINT = {"measured": {key: fp[key] for key in measured},
                          "choices": [choice.to_dict() for choice in choices], "warnings": warnings}
    config.refresh()
    return config, schedule, choices, warnings

"""The COCO instance format: reading and checking an annotation file, decoding segmentations.

A COCO instance file is one JSON object with ``images`` (``id``, ``file_name``, ``width``,
``height``), ``categories`` (``id``, ``name``) and ``annotations`` (``id``, ``image_id``,
``category_id``, ``iscrowd``, ``segmentation``; ours may add a ``nucleus`` segmentation of the same
kinds). A segmentation is a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` in pixels, an
uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` or a compressed one (``counts`` a
string), both column-major as pycocotools writes them.

Everything is checked before use and every problem is a `DatasetError` naming the file and the
entry, since pycocotools itself clips polygons silently and fails deep inside its C code on the
rest. Decoding goes through pycocotools (its ``frPyObjects``/``merge``/``decode``), so a mask is
exactly what ``COCO.annToMask`` gives.
"""
import json
import math
import numbers
import pathlib

from pycocotools import mask as mask_utils

from mrcnn_tf.errors import DatasetError

# Polygon points may lie this far beyond the border: annotation tools round outward by up to a pixel,
# and pycocotools clips such points onto the edge. Anything farther is a misplaced annotation.
EDGE_TOLERANCE = 1.0


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def annotation_label(annotation, index):
    """How messages name an annotation: by its id, or by its position when it has none."""
    ann_id = annotation.get("id") if isinstance(annotation, dict) else None
    return f"annotation {ann_id}" if ann_id is not None else f"annotations[{index}]"


def read_annotation_file(path):
    """Parse and check a COCO instance file.

    Checks: valid UTF-8 JSON; ``images``, ``annotations`` and ``categories`` are lists of objects;
    image and category ids are unique integers; ``file_name`` is a string; ``width``/``height``, when
    given, are positive integers; category names are unique (ignoring case); every annotation names a
    known image and category and has a ``segmentation``; ``iscrowd`` is 0 or 1. Segmentations
    themselves are checked when decoded (`segmentation_to_rle`).

    Returns:
        the parsed dict (``images``, ``annotations``, ``categories``; other keys kept).

    Raises:
        DatasetError: naming the file and the first bad entry.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found; give a COCO instance JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file; save the annotations as COCO JSON") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                           "fix the file or export the annotations again") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a COCO instance file holds one object with 'images', 'annotations' and "
                           f"'categories', not a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise DatasetError(f"{path}: '{key}' is {found}; a COCO instance file needs a list of {key}")
    images = _check_images(path, data["images"])
    categories = _check_categories(path, data["categories"])
    for index, annotation in enumerate(data["annotations"]):
        label = annotation_label(annotation, index)
        if not isinstance(annotation, dict):
            raise DatasetError(f"{path}: {label} is a {type(annotation).__name__}, not an object")
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if not _is_int(image_id) or image_id not in images:
            raise DatasetError(f"{path}: {label}: image_id {image_id!r} is not in 'images'; fix the annotation or "
                               "add the image")
        where = f"{label} (image {image_id}, {images[image_id]['file_name']!r})"
        if not _is_int(category_id) or category_id not in categories:
            known = ", ".join(str(c) for c in sorted(categories))
            raise DatasetError(f"{path}: {where}: category_id {category_id!r} is not in 'categories' (ids {known}); "
                               "fix the annotation or add the category")
        if annotation.get("iscrowd", 0) not in (0, 1) or isinstance(annotation.get("iscrowd"), bool):
            raise DatasetError(f"{path}: {where}: iscrowd is {annotation.get('iscrowd')!r}; use 0 or 1")
        if "segmentation" not in annotation:
            raise DatasetError(f"{path}: {where}: no 'segmentation'; give a polygon or RLE mask, or remove the "
                               "annotation (boxes alone cannot train Mask R-CNN)")
    return data


def _check_images(path, images):
    by_id = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise DatasetError(f"{path}: images[{index}] needs an integer 'id' (found "
                               f"{image.get('id') if isinstance(image, dict) else image!r})")
        where = f"image {image['id']}"
        if image["id"] in by_id:
            raise DatasetError(f"{path}: {where} is listed twice in 'images'; image ids must be unique")
        if not isinstance(image.get("file_name"), str) or not image["file_name"].strip():
            raise DatasetError(f"{path}: {where} has no 'file_name'; give the image file's name")
        for key in ("width", "height"):
            if key in image and (not _is_int(image[key]) or image[key] < 1):
                raise DatasetError(f"{path}: {where} ({image['file_name']!r}): {key} {image[key]!r} is not a "
                                   "positive whole number; fix it or remove it (it is then read from the file)")
        by_id[image["id"]] = image
    return by_id


def _check_categories(path, categories):
    by_id, names = {}, {}
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise DatasetError(f"{path}: categories[{index}] needs an integer 'id'")
        where = f"category {category['id']}"
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{path}: {where} has no 'name'; give each category a name")
        if category["id"] in by_id:
            raise DatasetError(f"{path}: {where} is listed twice in 'categories'; category ids must be unique")
        if name.strip().lower() in names:
            raise DatasetError(f"{path}: categories {names[name.strip().lower()]} and {category['id']} are both "
                               f"named {name!r}; merge them or rename one")
        by_id[category["id"]] = category
        names[name.strip().lower()] = category["id"]
    if not by_id:
        raise DatasetError(f"{path}: 'categories' is empty; list the object types with their ids and names")
    return by_id


# ---------------------------------------------------------------------------------------- segmentations
def string_counts(text):
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, written out).

    Each count is stored in 5-bit groups, low bits first, as characters ``chr(48 + group)``; bit 0x20
    says another group follows, bit 0x10 of the last group is the sign. From the third count on, a
    count is stored as its difference to the count two places before.

    Raises:
        ValueError: a character outside the code range, or a count cut off at the end.
    """
    counts, p = [], 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("the string ends inside a count")
            group = ord(text[p]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"character {text[p]!r} at position {p} is not an RLE code")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            p += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_counts(counts, height, width, where):
    if any(c < 0 for c in counts):
        raise DatasetError(f"{where}: RLE counts hold a negative run; the mask is damaged: export it again")
    if sum(counts) != height * width:
        raise DatasetError(f"{where}: RLE runs cover {sum(counts)} pixels but the image has {height}x{width} = "
                           f"{height * width}; the mask does not belong to this image size: export it again")


def segmentation_to_rle(segmentation, height, width, where):
    """A compressed RLE of a polygon list, an uncompressed RLE or a compressed RLE, after checking it.

    Args:
        segmentation: the annotation's ``segmentation`` (or ``nucleus``) value.
        height, width: the image's size in pixels.
        where: "<file>: annotation N (image M, 'name')", the start of every message.

    Returns:
        a pycocotools RLE dict for an image of ``height x width``.

    Raises:
        DatasetError: an empty or malformed segmentation, polygon points outside the image, an RLE
            whose size is not the image's or whose runs do not cover it exactly.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            raise DatasetError(f"{where}: empty segmentation ([]); draw the object's outline or remove the "
                               "annotation")
        polygons = []
        for k, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                raise DatasetError(f"{where}: polygon {k} is not a list of numbers [x1, y1, x2, y2, ...]")
            if len(polygon) < 6 or len(polygon) % 2:
                raise DatasetError(f"{where}: polygon {k} has {len(polygon)} numbers; a polygon needs at least "
                                   "3 points given as x, y pairs (an even count >= 6)")
            xs, ys = polygon[0::2], polygon[1::2]
            for axis, values, limit in (("x", xs, width), ("y", ys, height)):
                bad = next((v for v in values if not -EDGE_TOLERANCE <= v <= limit + EDGE_TOLERANCE), None)
                if bad is not None:
                    i = values.index(bad)
                    raise DatasetError(f"{where}: polygon {k} point ({xs[i]:g}, {ys[i]:g}) lies outside the "
                                       f"{width}x{height} image ({axis} must be within 0-{limit}); fix the "
                                       "annotation or the image's width/height")
            polygons.append([float(v) for v in polygon])
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE object with 'size' "
                           f"and 'counts' (found {type(segmentation).__name__})")
    size, counts = segmentation["size"], segmentation["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise DatasetError(f"{where}: RLE size {size!r} must be [height, width]")
    if list(size) != [height, width]:
        raise DatasetError(f"{where}: RLE size is [{size[0]}, {size[1]}] (height, width) but the image is "
                           f"[{height}, {width}]; the mask lies outside the image: export it at the image's size")
    if isinstance(counts, list):
        if not all(_is_int(c) for c in counts):
            raise DatasetError(f"{where}: uncompressed RLE counts must be whole numbers")
        _check_counts(counts, height, width, where)
        return mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise DatasetError(f"{where}: RLE counts must be a list of run lengths or a compressed string")
    try:
        runs = string_counts(counts)
    except ValueError as exc:
        raise DatasetError(f"{where}: compressed RLE counts are damaged ({exc}); export the mask again") from None
    _check_counts(runs, height, width, where)
    return {"size": [height, width], "counts": counts.encode("ascii")}


def decode_segmentation(segmentation, height, width, where):
    """bool [height, width] mask of a segmentation (see `segmentation_to_rle` for the checks)."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width, where)).astype(bool)

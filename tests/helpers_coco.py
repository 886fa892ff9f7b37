"""Small COCO-layout folders written on the fly, and plain references for COCO masks.

    from helpers_coco import write_coco, polygon_ann, rle_ann
    root = write_coco(tmp_path, {"a.png": (48, 64)}, [polygon_ann(1, "a.png", ...)], subset="train")
"""
import json
import pathlib

import numpy as np
from PIL import Image

BCCD_FIELDS = pathlib.Path(__file__).parent / "data" / "bccd"
LISC_CATEGORIES = [{"id": i, "name": n} for i, n in
                   enumerate(["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"], start=1)]


def write_coco(root, images, annotations, categories=LISC_CATEGORIES, subset="train", image_dir="images"):
    """A COCO layout under `root`: PNGs of the given sizes and ``annotations/instances_<subset>.json``.

    Args:
        images: {file_name: (height, width)}; image ids are 1, 2, ... in this order.
        annotations: dicts whose ``image_id`` may be given as a file name (turned into its id);
            ``id`` and ``iscrowd`` are filled in when absent.

    Returns:
        `root` as a Path.
    """
    root = pathlib.Path(root)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = {}
    entries = []
    for k, (name, (height, width)) in enumerate(images.items(), start=1):
        ids[name] = k
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / image_dir / name)
        entries.append({"id": k, "file_name": name, "height": height, "width": width})
    anns = []
    for k, ann in enumerate(annotations, start=1):
        ann = dict(ann)
        ann.setdefault("id", k)
        ann.setdefault("iscrowd", 0)
        if isinstance(ann.get("image_id"), str):
            ann["image_id"] = ids[ann["image_id"]]
        anns.append(ann)
    data = {"images": entries, "annotations": anns, "categories": categories}
    (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(data))
    return root


def polygon_ann(category_id, image, *polygons, **extra):
    return dict(image_id=image, category_id=category_id, segmentation=[list(p) for p in polygons], **extra)


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a bool mask, written out plainly: column-major runs, starting with a 0 run."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    counts, current, run = [], False, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(np.shape(mask)), "counts": counts}


def decode_uncompressed(rle):
    """Plain decode of an uncompressed RLE: alternate 0 and 1 runs, filled column by column."""
    height, width = rle["size"]
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for count in rle["counts"]:
        flat[position:position + count] = value
        position += count
        value = not value
    return flat.reshape((height, width), order="F")


def rle_ann(category_id, image, mask, compressed=False, **extra):
    """An annotation with the RLE of `mask` (uncompressed, or compressed by pycocotools)."""
    if compressed:
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    else:
        rle = uncompressed_rle(mask)
    return dict(image_id=image, category_id=category_id, segmentation=rle, **extra)


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2

"""LISC white-blood-cell data: `LiscConfig` and `LiscDataset` (the README's "Real LISC data").

Two layouts load with one call, ``LiscDataset().load_lisc(dataset_dir, subset)``:

- LISC's own: ``LISC Database/Main Dataset/<Baso|eosi|lymp|mono|neut|mixt>/<n>.bmp`` with grey-coded
  masks at ``LISC Database/Ground Truth Segmentation/<same>/areaforexpert1/<n>_expert.bmp``
  (4 px smaller each way). Instances are connected cells of one type; the type comes from the grey
  levels, so ``mixt`` and multi-cell images work. ``subset`` train / val / all picks from a
  deterministic, seeded split, stratified by folder; byte-identical images share a split.
- The older WBC project's: ``WBC/{train,val}/{image,mask}/<Class>/<file>``: the class from the folder,
  instances the connected components of the mask; the split is the folders'.

Typical use (Matterport style)::

    config = LiscConfig()
    train = LiscDataset(); train.load_lisc("/data/LISC", "train"); train.prepare()
    val = LiscDataset(); val.load_lisc("/data/LISC", "val"); val.prepare()
"""
import hashlib
import pathlib
import warnings
import zlib

import numpy as np
import scipy.ndimage

from mrcnn_tf.config import Config
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.data.lisc_format import (CLASS_NAMES, FOLDERS, class_from_folder, decode_lisc_mask,
                                       decode_lisc_nucleus, list_images, image_size, natural_key, pad_lisc_mask,
                                       read_grey_mask, read_image)
from mrcnn_tf.errors import DatasetError

SOURCE = "lisc"
SUBSETS = ("train", "val", "all")
INSTANCE_KINDS = ("cell", "nucleus")


class LiscConfig(Config):
    """Defaults for LISC: 720x576 smears, 1-4 leukocytes of 60-135 px per image, 5 types.

    Each value differs from Matterport's default for the reason given beside it.
    """

    NAME = "lisc"
    NUM_CLASSES = 1 + 5  # BG + Basophil, Eosinophil, Lymphocyte, Monocyte, Neutrophil
    BACKBONE = "resnet50"  # 250 images: ResNet-101's extra depth overfits and costs 1.6x the compute
    IMAGES_PER_GPU = 2
    # 720x576 -> 512x410 (scale 0.71) padded to 512x512: cells become 43-96 px, still wide enough to
    # show lobes and granules, at 2.25x less compute than keeping 768x768.
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    # One size per level P2..P6; 48 and 96 bracket the resized cells (43-96 px) so each cell has an
    # anchor with IoU >= 0.5; 24 catches cut-off cells at the border, 192/384 are spare (>= one per level).
    RPN_ANCHOR_SCALES = (24, 48, 96, 192, 384)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]  # cells are round to oval; Matterport's ratios cover that
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128  # few objects per image: 256 would be >95% negatives
    PRE_NMS_LIMIT = 3000  # ~65k anchors at 512x512; a few thousand top scores hold every cell
    POST_NMS_ROIS_TRAINING = 500  # <= 6 cells per image need far fewer than COCO's 2000 proposals
    POST_NMS_ROIS_INFERENCE = 300
    TRAIN_ROIS_PER_IMAGE = 64  # 33% positive -> ~21 positives, plenty for 1-4 cells
    MAX_GT_INSTANCES = 10  # LISC images hold 1-4 cells (mixt a few more)
    DETECTION_MAX_INSTANCES = 20  # never more than ~6 leukocytes in a field
    # A cell's score is its type probability; between two look-alike types it can sit near 0.5, and
    # 0.7 would drop the cell altogether (a missed cell costs more than a low-confidence one).
    DETECTION_MIN_CONFIDENCE = 0.5
    DETECTION_NMS_THRESHOLD = 0.3  # leukocytes rarely overlap
    # RGB mean of stained smears (pale pink background), measured on `mrcnn-tf synth` output; on real
    # LISC recompute with `LiscDataset.mean_pixel()` and set it.
    MEAN_PIXEL = np.array([220.7, 191.2, 193.0])
    STEPS_PER_EPOCH = 100  # ~200 training images / batch of 2: one pass per epoch
    VALIDATION_STEPS = 25  # ~50 validation images / 2


class LiscDataset(Dataset):
    """LISC (or WBC-layout) images with their cell instances; Matterport's `Dataset` API.

    After `load_lisc` and `prepare`, `load_image` returns uint8 RGB [H, W, 3] and `load_mask` returns
    bool [H, W, N] masks in image coordinates with int32 class ids (1 Basophil .. 5 Neutrophil).
    Each `image_info` entry holds ``path``, ``mask_path``, ``folder``, ``layout``, ``height``, ``width``,
    ``digest`` (md5 of the image file) and, once verified, ``class_ids`` of its instances.
    """

    def load_lisc(self, dataset_dir, subset="all", val_fraction=0.2, seed=0, instance="cell", min_area=30,
                  expert=1, verify=True, on_missing_mask="warn"):
        """Register the images of `subset` found under `dataset_dir`.

        Args:
            dataset_dir: a folder holding ``LISC Database`` (or that folder itself, or its ``Main
                Dataset`` parent), or a WBC-layout folder (holding ``train``/``val``, or ``WBC``).
            subset: "train", "val" or "all".
            val_fraction: share of each LISC folder's images put in "val" (LISC layout only).
            seed: seed of the split (LISC layout only); the same seed gives the same split everywhere.
            instance: "cell" (whole cell) or "nucleus" (LISC layout only: WBC masks have no compartments).
            min_area: regions with fewer pixels (stray specks in a mask) are not instances.
            expert: which expert's masks, ``areaforexpert<expert>``.
            verify: decode every image and mask now, so a bad file fails here (naming it) and not hours
                into training; also records each image's class ids (an empty mask warns, naming it).
            on_missing_mask: "warn" (skip the image with a warning), "ignore" (skip silently) or "error".

        Raises:
            DatasetError: missing folder, unreadable file, wrong mask size, unknown grey level ...
        """
        if subset not in SUBSETS:
            raise DatasetError(f"subset {subset!r} is invalid: use one of {', '.join(SUBSETS)}")
        if instance not in INSTANCE_KINDS:
            raise DatasetError(f"instance {instance!r} is invalid: use 'cell' or 'nucleus'")
        if on_missing_mask not in ("warn", "ignore", "error"):
            raise DatasetError(f"on_missing_mask {on_missing_mask!r} is invalid: use 'warn', 'ignore' or 'error'")
        if not 0 <= val_fraction < 1:
            raise DatasetError(f"val_fraction {val_fraction!r} is invalid: use a number in [0, 1)")
        self._instance = instance
        self._min_area = int(min_area)
        for class_id, name in enumerate(CLASS_NAMES, start=1):
            self.add_class(SOURCE, class_id, name)
        layout, root = find_layout(dataset_dir)
        if layout == "lisc":
            entries = _lisc_entries(root, expert, on_missing_mask)
            keep = split_subset(entries, subset, val_fraction, seed)
        else:
            if instance == "nucleus":
                raise DatasetError(f"{root}: instance='nucleus' needs LISC's grey-coded masks; the WBC layout's "
                                   "masks have no nucleus level: use instance='cell'")
            entries = _wbc_entries(root, subset, on_missing_mask)
            keep = range(len(entries))
        for i in keep:
            entry = entries[i]
            self.add_image(SOURCE, image_id=entry["id"], path=entry["path"], mask_path=entry["mask_path"],
                           folder=entry["folder"], layout=layout, digest=entry.get("digest"),
                           folder_class=entry["folder_class"], height=None, width=None)
        if verify:
            for index in range(len(self.image_info)):
                image = self.load_image(index)
                _, class_ids = self.load_mask(index)
                self.image_info[index].update(class_ids=[int(c) for c in class_ids])
                if not len(class_ids):
                    # Kept (it still teaches the RPN what background looks like), but rarely intended.
                    warnings.warn(f"{self.image_info[index]['mask_path']}: mask holds no cell (no region of "
                                  f">= {self._min_area} px with a cell grey level); the image is kept with no "
                                  "leukocytes: fix the mask if it should have some", stacklevel=2)
                del image
        return self

    # ------------------------------------------------------------------ loading
    def load_image(self, image_id):
        """uint8 RGB [H, W, 3]; grey/RGBA/16-bit files converted; a bad file is a DatasetError naming it."""
        info = self.image_info[image_id]
        image = read_image(info["path"])
        info["height"], info["width"] = image.shape[:2]
        return image

    def load_mask(self, image_id):
        """bool [H, W, N] instance masks in image coordinates and int32 [N] class ids (N may be 0)."""
        info = self.image_info[image_id]
        if info["height"] is None:
            info["height"], info["width"] = image_size(info["path"])
        shape = (info["height"], info["width"])
        grey = read_grey_mask(info["mask_path"])
        if info["layout"] == "lisc":
            masks, class_ids = decode_lisc_mask(grey, info["mask_path"], nucleus=self._instance == "nucleus",
                                                min_area=self._min_area)
            masks = pad_lisc_mask(masks, shape, info["mask_path"])
        else:
            if grey.shape != shape:
                raise DatasetError(f"{info['mask_path']}: mask is {grey.shape[1]}x{grey.shape[0]} but its image is "
                                   f"{shape[1]}x{shape[0]}; masks must match their images")
            masks = _components(grey > 0, self._min_area)
            class_ids = np.full([masks.shape[-1]], info["folder_class"], dtype=np.int32)
        return masks, class_ids

    @property
    def has_nucleus(self):
        """True when every image is in LISC's layout, whose grey codes draw each cell's nucleus (the WBC
        layout's masks have no compartments): `load_nucleus_mask` then works on every image."""
        return bool(self.image_info) and all(info["layout"] == "lisc" for info in self.image_info)

    def load_nucleus_mask(self, image_id):
        """The nucleus of each instance of `load_mask`, same order and class ids: bool [H, W, N], int32 [N].

        From LISC's grey codes: a cell's nucleus is its pixels at its type's nucleus level (Eosinophil 100,
        Lymphocyte 150, Monocyte 200, Neutrophil 255; cytoplasm 75/125/175/225). A Basophil is drawn with one
        level (50) for the whole cell, its granules hiding the nucleus, so its nucleus is the whole cell.
        With ``instance="nucleus"`` the instances are the nuclei, and each is its own nucleus.

        Raises:
            DatasetError: a WBC-layout image (its masks have no nucleus level), or a bad mask file.
        """
        info = self.image_info[image_id]
        if info["layout"] != "lisc":
            raise DatasetError(f"{info['mask_path']}: the WBC layout's masks have no nucleus level; nucleus masks "
                               "need LISC's grey-coded masks (or train with --set NUCLEUS_MASKS=false)")
        if self._instance == "nucleus":
            return self.load_mask(image_id)
        if info["height"] is None:
            info["height"], info["width"] = image_size(info["path"])
        grey = read_grey_mask(info["mask_path"])
        masks, class_ids = decode_lisc_nucleus(grey, info["mask_path"], min_area=self._min_area)
        return pad_lisc_mask(masks, (info["height"], info["width"]), info["mask_path"]), class_ids

    def image_reference(self, image_id):
        """The image's file path."""
        return str(self.image_info[image_id]["path"])

    def mean_pixel(self, limit=None):
        """RGB mean over the dataset's images (for Config.MEAN_PIXEL); `limit` caps the image count."""
        total, count = np.zeros(3), 0
        for index in range(len(self.image_info))[:limit]:
            image = self.load_image(index).astype(np.float64)
            total += image.reshape(-1, 3).sum(axis=0)
            count += image.shape[0] * image.shape[1]
        return total / max(count, 1)


# ---------------------------------------------------------------------------------------- layouts
def _subdir(parent, name):
    """`parent/name`, matched case-insensitively (LISC copies differ in case); None if absent."""
    exact = parent / name
    if exact.is_dir():
        return exact
    for child in parent.iterdir() if parent.is_dir() else ():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def find_layout(dataset_dir):
    """("lisc", <LISC Database folder>) or ("wbc", <folder holding train/val>) for `dataset_dir`.

    Raises:
        DatasetError: the folder is missing, or holds neither layout (the message says what was expected).
    """
    root = pathlib.Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; give the folder holding 'LISC Database' "
                           "(make a synthetic one with `mrcnn-tf synth DIR`)")
    for candidate in (root, _subdir(root, "LISC Database")):
        if candidate is None:
            continue
        main, truth = _subdir(candidate, "Main Dataset"), _subdir(candidate, "Ground Truth Segmentation")
        if main and truth:
            return "lisc", candidate
        if main:
            raise DatasetError(f"{candidate}: has 'Main Dataset' but no 'Ground Truth Segmentation' folder; copy "
                               "the whole LISC Database folder, masks included")
        if truth:
            raise DatasetError(f"{candidate}: has 'Ground Truth Segmentation' but no 'Main Dataset' folder; copy "
                               "the whole LISC Database folder, images included")
    for candidate in (root, _subdir(root, "WBC")):
        if candidate is not None and any(_subdir(candidate, s) and _subdir(_subdir(candidate, s), "image")
                                         for s in ("train", "val")):
            return "wbc", candidate
    raise DatasetError(f"{root}: no LISC data found; expected 'LISC Database/Main Dataset/<class>/<n>.bmp' with "
                       "'Ground Truth Segmentation', or 'WBC/{train,val}/{image,mask}/<Class>/'")


def _missing(path, mask_path, policy):
    message = f"{path}: no mask at {mask_path}; add the mask or remove the image"
    if policy == "error":
        raise DatasetError(message)
    if policy == "warn":
        warnings.warn(message + " (image skipped)", stacklevel=4)


def _lisc_entries(root, expert, on_missing_mask):
    """One dict per image with a mask in LISC's layout, folders in LISC's order, images in natural order."""
    main, truth = _subdir(root, "Main Dataset"), _subdir(root, "Ground Truth Segmentation")
    folders = {}
    for child in sorted(p for p in main.iterdir() if p.is_dir()):
        key = next((f for f in FOLDERS if f.lower() == child.name.lower()), None)
        if key is None:
            warnings.warn(f"{child}: unknown LISC folder skipped (expected {', '.join(FOLDERS)})", stacklevel=3)
            continue
        folders[key] = child
    if not folders:
        raise DatasetError(f"{main}: no class folders; expected {', '.join(FOLDERS)} holding <n>.bmp images")
    entries = []
    for key in (f for f in FOLDERS if f in folders):
        mask_dir = _subdir(truth, folders[key].name)
        mask_dir = mask_dir and _subdir(mask_dir, f"areaforexpert{expert}")
        for path in list_images(folders[key]):
            mask_path = _find_mask(mask_dir, f"{path.stem}_expert")
            if mask_path is None:
                _missing(path, (mask_dir or truth / folders[key].name / f"areaforexpert{expert}")
                         / f"{path.stem}_expert.bmp", on_missing_mask)
                continue
            entries.append({"id": f"{key}/{path.stem}", "path": path, "mask_path": mask_path, "folder": key,
                            "folder_class": FOLDERS[key], "digest": _digest(path)})
    if not entries:
        raise DatasetError(f"{main}: no image with a mask found; masks belong in "
                           f"{truth}/<folder>/areaforexpert{expert}/<n>_expert.bmp")
    return entries


def _wbc_entries(root, subset, on_missing_mask):
    """One dict per image of the WBC layout's `subset` folder(s) (all: train then val)."""
    entries = []
    for part in ("train", "val") if subset == "all" else (subset,):
        part_dir = _subdir(root, part)
        image_dir = part_dir and _subdir(part_dir, "image")
        if image_dir is None:
            raise DatasetError(f"{root / part / 'image'}: folder not found; the WBC layout is "
                               "WBC/{train,val}/{image,mask}/<Class>/")
        mask_root = _subdir(part_dir, "mask")
        for class_dir in sorted((p for p in image_dir.iterdir() if p.is_dir()), key=natural_key):
            class_id = class_from_folder(class_dir.name)
            if class_id is None:
                raise DatasetError(f"{class_dir}: unknown class folder; name it after a type "
                                   f"({', '.join(CLASS_NAMES)})")
            mask_dir = mask_root and _subdir(mask_root, class_dir.name)
            for path in list_images(class_dir):
                mask_path = _find_mask(mask_dir, path.stem)
                if mask_path is None:
                    _missing(path, (mask_dir or root / part / "mask" / class_dir.name) / path.name, on_missing_mask)
                    continue
                entries.append({"id": f"{part}/{class_dir.name}/{path.stem}", "path": path, "mask_path": mask_path,
                                "folder": class_dir.name, "folder_class": class_id})
    if not entries:
        raise DatasetError(f"{root}: no image with a mask in the {subset!r} part of the WBC layout")
    return entries


def _find_mask(mask_dir, stem):
    """The image file named `stem` (any image suffix, any case) in `mask_dir`, or None."""
    if mask_dir is None:
        return None
    matches = [p for p in list_images(mask_dir) if p.stem.lower() == stem.lower()]
    return matches[0] if matches else None


def _digest(path):
    return hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()


def _components(binary, min_area):
    """Connected components (8-neighbour) of a binary mask with at least `min_area` pixels, as [H, W, N]."""
    labels, count = scipy.ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = [i for i in range(1, count + 1) if areas[i] >= min_area]
    if not keep:
        return np.zeros(binary.shape + (0,), dtype=bool)
    return np.stack([labels == i for i in keep], axis=-1)


# ---------------------------------------------------------------------------------------- split
def split_subset(entries, subset, val_fraction=0.2, seed=0):
    """Indices of `entries` in `subset` of a deterministic split stratified by folder.

    Byte-identical images (same ``digest``) form one group and go to the same part; a group belongs to
    its first member's folder. Within each folder the groups are shuffled by a generator seeded with
    (seed, crc32 of the folder name), so a folder's split does not depend on the others, and
    ``round(val_fraction * groups)`` of them (at least one when the folder has two or more groups and
    val_fraction > 0, never all of them) go to "val".
    """
    if subset == "all":
        return list(range(len(entries)))
    groups = {}  # digest (or id when unknown) -> member indices, in entry order
    for i, entry in enumerate(entries):
        groups.setdefault(entry.get("digest") or entry["id"], []).append(i)
    by_folder = {}
    for members in groups.values():
        by_folder.setdefault(entries[members[0]]["folder"], []).append(members)
    val = set()
    for folder, folder_groups in by_folder.items():
        n = len(folder_groups)
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        rng = np.random.default_rng([int(seed), zlib.crc32(folder.encode("utf-8"))])
        for g in rng.permutation(n)[:n_val]:
            val.update(folder_groups[g])
    return [i for i in range(len(entries)) if (i in val) == (subset == "val")]

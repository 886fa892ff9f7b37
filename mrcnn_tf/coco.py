"""COCO-format instance datasets: `CocoDataset` (Matterport's sample name) and `is_coco_layout`.

Two ways to load, both Matterport style (then call ``prepare()``)::

    train = CocoDataset(); train.load_coco("/data/bccd-wbc", "train"); train.prepare()
    # DIR/annotations/instances_train.json, images in DIR/images/ (or DIR/train/, or the path in file_name)
    test = CocoDataset(); test.load_coco_file("smears.json", "smear_images/"); test.prepare()

Polygons, uncompressed and compressed RLE all decode through pycocotools, so `load_mask` gives
exactly ``COCO.annToMask``. As in Matterport's coco.py: boxes come from the masks (the file's
``bbox`` is ignored); a crowd region (``iscrowd`` 1) gets the negative of its class id, so the
training targets leave it out and never take an anchor touching it as background; an annotation
whose mask covers no pixel is skipped; an image with no annotation at all is not loaded.
Unlike Matterport, skipped annotations and left-out images are reported with a warning naming them,
and a crowd RLE of another size than its image is an error instead of being replaced by the whole
image.

Classes: when every category is one of LISC's five types (names matched ignoring case), they map
onto LISC's ids (1 Basophil .. 5 Neutrophil, all five registered, so ``LiscConfig``'s
NUM_CLASSES = 6 fits whatever ids the file uses); any other set keeps its own categories, in
category-id order, as classes 1..K.

The optional per-annotation ``nucleus`` segmentation (BCCD-WBC has one per cell) is read by
`load_nucleus_mask`.
"""
import collections
import contextlib
import io
import pathlib
import warnings

import numpy as np

from mrcnn_tf.data.coco_format import annotation_label, decode_segmentation, read_annotation_file
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.data.lisc_format import CLASS_NAMES, image_size
from mrcnn_tf.errors import DatasetError

SOURCE = "coco"
ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "images"
_LISTED = 5  # names shown in one warning before "and N more"


def is_coco_layout(dataset_dir):
    """True when `dataset_dir` holds an ``annotations/`` or ``images/`` folder (a COCO layout).

    LISC's layouts (``LISC Database/...``, ``WBC/{train,val}/image``) have neither at their top,
    so a folder with ``images/`` but no annotations is reported as a COCO folder missing its JSON.
    """
    root = pathlib.Path(dataset_dir).expanduser()
    return root.is_dir() and ((root / ANNOTATIONS_DIR).is_dir() or (root / IMAGES_DIR).is_dir())


def coco_subsets(dataset_dir):
    """Subset names of a COCO layout: NAME for every ``annotations/instances_NAME.json``, sorted."""
    folder = pathlib.Path(dataset_dir).expanduser() / ANNOTATIONS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name[len("instances_"):-len(".json")] for p in folder.glob("instances_*.json") if p.is_file())


def annotation_file_for(dataset_dir, subset):
    """``DIR/annotations/instances_<subset>.json``, checked to exist.

    Raises:
        DatasetError: no annotations folder, or no file for `subset` (the message lists the subsets there).
    """
    root = pathlib.Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; a COCO layout is DIR/annotations/"
                           "instances_<subset>.json with the images in DIR/images/")
    subset = str(subset)
    if not subset or "/" in subset or "\\" in subset:
        raise DatasetError(f"subset {subset!r} is invalid: give the NAME of annotations/instances_NAME.json")
    folder = root / ANNOTATIONS_DIR
    if not folder.is_dir():
        raise DatasetError(f"{root}: has {IMAGES_DIR}/ but no {ANNOTATIONS_DIR}/ folder; a COCO layout needs "
                           f"{ANNOTATIONS_DIR}/instances_<subset>.json (COCO instance JSON) beside {IMAGES_DIR}/")
    path = folder / f"instances_{subset}.json"
    if path.is_file():
        return path
    available = coco_subsets(root)
    if not available:
        raise DatasetError(f"{folder}: no instances_<subset>.json file; put the COCO instance JSON of each "
                           f"subset there (instances_train.json, instances_val.json, ...)")
    raise DatasetError(f"{path}: not found; this folder has the subset(s) {', '.join(available)} "
                       "(instances_<NAME>.json): choose one of them (--subset NAME)")


def lisc_category_map(categories):
    """{category id: LISC class id} when every category name is a LISC type (any case), else None."""
    lookup = {name.lower(): i for i, name in enumerate(CLASS_NAMES, start=1)}
    mapped = {c["id"]: lookup.get(c["name"].strip().lower()) for c in categories}
    return mapped if mapped and all(mapped.values()) else None


def _listed(items):
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


class CocoDataset(Dataset):
    """Images and instance masks of COCO instance JSON files; Matterport's `Dataset` API.

    After `load_coco` (or `load_coco_file`) and `prepare`, `load_image` returns uint8 RGB [H, W, 3]
    and `load_mask` bool [H, W, N] masks with int32 [N] class ids (negative for crowd regions).
    Each `image_info` entry holds ``id`` (the COCO image id), ``path``, ``width``, ``height``,
    ``file_name``, ``annotation_file``, ``annotations`` (the file's annotation dicts of that image),
    ``annotation_labels`` (how messages name them) and ``category_map`` ({category id: source class id}).

    Attributes:
        has_nucleus: True when every non-crowd annotation loaded has a ``nucleus`` segmentation.
    """

    has_nucleus = False

    def load_coco(self, dataset_dir, subset, year="", class_ids=None, class_map=None, return_coco=False,
                  verify=True, keep_empty_images=False):
        """Register the images of ``dataset_dir/annotations/instances_<subset><year>.json``.

        Images are looked up by ``file_name`` in ``dataset_dir/images/``, then in
        ``dataset_dir/<subset><year>/`` (MS-COCO's own layout, e.g. ``val2017/``), then in
        `dataset_dir` itself (a ``file_name`` of ``images/x.jpg``); an absolute ``file_name`` is used as is.

        Args:
            dataset_dir: the dataset folder.
            subset: NAME of ``instances_NAME.json`` ("train", "val", "test", ...).
            year: appended to the subset name, as Matterport's ("2017" reads instances_val2017.json).
            class_ids: category ids to load (images without any are left out); all when None.
            class_map: unused, as in Matterport.
            return_coco: also return the pycocotools ``COCO`` object of the file.
            verify: decode every mask and read every image header now, so a bad entry fails here
                (naming it) and not during training.
            keep_empty_images: keep images without annotations as background-only images
                (Matterport leaves them out; a warning names them either way).

        Returns:
            the ``COCO`` object with `return_coco`, else self.

        Raises:
            DatasetError: missing folder or file, malformed JSON, unknown ids, missing images, bad masks.
        """
        root = pathlib.Path(dataset_dir).expanduser()
        annotation_file = annotation_file_for(root, f"{subset}{year}")
        image_dirs = [root / IMAGES_DIR, root / f"{subset}{year}", root]
        return self._load(annotation_file, image_dirs, class_ids, return_coco, verify, keep_empty_images)

    def load_coco_file(self, annotation_file, image_dir=None, class_ids=None, return_coco=False, verify=True,
                       keep_empty_images=False):
        """Register the images of one COCO instance JSON file whose images are in `image_dir`.

        Args:
            annotation_file: path of the JSON file.
            image_dir: folder the ``file_name`` entries are relative to; the JSON file's folder when None.
            class_ids, return_coco, verify, keep_empty_images: as in `load_coco`.
        """
        annotation_file = pathlib.Path(annotation_file).expanduser()
        folder = pathlib.Path(image_dir).expanduser() if image_dir is not None else annotation_file.parent
        if image_dir is not None and not folder.is_dir():
            raise DatasetError(f"{folder}: image folder not found; give the folder holding the images of "
                               f"{annotation_file.name}")
        return self._load(annotation_file, [folder], class_ids, return_coco, verify, keep_empty_images)

    # ------------------------------------------------------------------ loading
    def _load(self, annotation_file, image_dirs, class_ids, return_coco, verify, keep_empty_images):
        data = read_annotation_file(annotation_file)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        if class_ids is not None:
            unknown = sorted(set(class_ids) - {c["id"] for c in categories})
            if unknown:
                raise DatasetError(f"{annotation_file}: class_ids {unknown} are not in its categories")
        wanted = {c["id"] for c in categories if class_ids is None or c["id"] in class_ids}
        category_map = self._register_classes(categories, wanted)
        by_image = collections.defaultdict(list)
        for index, annotation in enumerate(data["annotations"]):
            if annotation["category_id"] in wanted:
                # Messages name an annotation by its id, or by its place in the file when it has none.
                by_image[annotation["image_id"]].append((annotation_label(annotation, index), annotation))
        unannotated, missing, first = [], [], len(self.image_info)
        for image in data["images"]:
            labelled = by_image.get(image["id"], [])
            annotations = [a for _, a in labelled]
            if not annotations and class_ids is not None:
                continue  # filtered out on request, as Matterport's class_ids
            if not annotations:
                unannotated.append(image["file_name"])
                if not keep_empty_images:
                    continue
            path = self._image_path(image["file_name"], image_dirs)
            if not path.is_file():
                missing.append((image, path))
                continue
            self.add_image(SOURCE, image_id=image["id"], path=str(path), width=image.get("width"),
                           height=image.get("height"), file_name=image["file_name"],
                           annotation_file=str(annotation_file), annotations=annotations,
                           annotation_labels=[label for label, _ in labelled], category_map=category_map)
        if missing:
            image, path = missing[0]
            raise DatasetError(f"{annotation_file}: image {image['id']} ({image['file_name']!r}) not found at {path} "
                               f"({len(missing)} of {len(data['images'])} images missing); copy the images there "
                               "or fix file_name")
        if unannotated:
            fate = "kept as background-only images" if keep_empty_images else \
                "left out, as Matterport's load_coco does (keep_empty_images=True keeps them as background)"
            warnings.warn(f"{annotation_file}: {len(unannotated)} image(s) have no annotation and are {fate}: "
                          f"{_listed(unannotated)}", stacklevel=3)
        loaded = self.image_info[first:]
        self.has_nucleus = all("nucleus" in a for info in self.image_info for a in info["annotations"]
                               if not a.get("iscrowd")) and bool(self.image_info)
        for info in loaded:
            if verify or info["height"] is None or info["width"] is None:
                self._check_size(info, annotation_file)
        if verify:
            self._verify(loaded, annotation_file)
        if return_coco:
            return self._coco_object(data)
        return self

    def _register_classes(self, categories, wanted):
        """add_class for the file's categories; returns {category id: registered (source) class id}."""
        lisc = lisc_category_map(categories)
        if lisc is not None:
            for class_id, name in enumerate(CLASS_NAMES, start=1):
                self.add_class(SOURCE, class_id, name)
            return lisc
        for category in categories:
            if category["id"] in wanted:
                self.add_class(SOURCE, category["id"], category["name"].strip())
        return {c["id"]: c["id"] for c in categories}

    @staticmethod
    def _image_path(file_name, image_dirs):
        path = pathlib.Path(file_name)
        if path.is_absolute():
            return path
        candidates = [folder / file_name for folder in image_dirs]
        return next((p for p in candidates if p.is_file()), candidates[0])

    @staticmethod
    def _check_size(info, annotation_file):
        height, width = image_size(info["path"])
        if info["height"] is not None and (info["height"], info["width"]) != (height, width):
            raise DatasetError(f"{annotation_file}: image {info['id']} ({info['file_name']!r}) is listed as "
                               f"{info['width']}x{info['height']} but {info['path']} is {width}x{height}; fix width "
                               "and height (or remove them: they are then read from the file)")
        info["height"], info["width"] = height, width

    def _verify(self, infos, annotation_file):
        """Decode every mask (and nucleus) now; warn about annotations that cover no pixel."""
        empty, background = [], []
        for info in infos:
            masks, _, skipped = self._decode(info)
            for annotation in info["annotations"]:
                if "nucleus" in annotation and not annotation.get("iscrowd"):
                    decode_segmentation(annotation["nucleus"], info["height"], info["width"],
                                        self._where(info, annotation) + " nucleus")
            empty += [f"{self._label(info, a)} of {info['file_name']!r}" for a in skipped]
            if not masks and info["annotations"]:
                background.append(info["file_name"])
        if empty:
            warnings.warn(f"{annotation_file}: {len(empty)} annotation(s) cover no pixel and are skipped, as "
                          f"Matterport does: {_listed(empty)}", stacklevel=4)
        if background:
            warnings.warn(f"{annotation_file}: {len(background)} image(s) are left with no usable annotation and are "
                          f"kept as background-only images (training skips them): {_listed(background)}",
                          stacklevel=4)

    @staticmethod
    def _label(info, annotation):
        index = next(i for i, a in enumerate(info["annotations"]) if a is annotation)
        return info["annotation_labels"][index]

    def _where(self, info, annotation):
        return (f"{info['annotation_file']}: {self._label(info, annotation)} (image {info['id']}, "
                f"{info['file_name']!r})")

    def _decode(self, info):
        """(masks, annotations, skipped): decoded [H, W] masks with their annotations, and those covering no pixel."""
        masks, kept, skipped = [], [], []
        for annotation in info["annotations"]:
            mask = decode_segmentation(annotation["segmentation"], info["height"], info["width"],
                                       self._where(info, annotation))
            if not mask.any():
                skipped.append(annotation)  # sub-pixel objects round to nothing (Matterport skips them)
                continue
            masks.append(mask)
            kept.append(annotation)
        return masks, kept, skipped

    def _class_id(self, info, annotation):
        class_id = self.map_source_class_id(f"{SOURCE}.{info['category_map'][annotation['category_id']]}")
        return -class_id if annotation.get("iscrowd") else class_id

    def _stack(self, info, masks, class_ids):
        if not masks:
            return np.zeros((info["height"], info["width"], 0), dtype=bool), np.zeros([0], dtype=np.int32)
        return np.stack(masks, axis=-1), np.asarray(class_ids, dtype=np.int32)

    def load_mask(self, image_id):
        """bool [H, W, N] instance masks and int32 [N] class ids (negative for crowd regions; N may be 0)."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().load_mask(image_id)
        masks, kept, _ = self._decode(info)
        return self._stack(info, masks, [self._class_id(info, a) for a in kept])

    def load_nucleus_mask(self, image_id):
        """The nucleus of each instance of `load_mask`, same order and class ids: bool [H, W, N], int32 [N].

        A crowd region has no nucleus (an all-False channel).

        Raises:
            DatasetError: a cell annotation without a ``nucleus`` segmentation (names it).
        """
        info = self.image_info[image_id]
        _, kept, _ = self._decode(info)
        masks = []
        for annotation in kept:
            if annotation.get("iscrowd"):
                masks.append(np.zeros((info["height"], info["width"]), dtype=bool))
                continue
            if "nucleus" not in annotation:
                raise DatasetError(f"{self._where(info, annotation)}: no 'nucleus' segmentation; nucleus masks need "
                                   "one per annotation (an RLE or polygon like 'segmentation')")
            masks.append(decode_segmentation(annotation["nucleus"], info["height"], info["width"],
                                             self._where(info, annotation) + " nucleus"))
        return self._stack(info, masks, [self._class_id(info, a) for a in kept])

    def image_reference(self, image_id):
        """The image's file path."""
        return str(self.image_info[image_id]["path"])

    def instance_counts(self):
        """{class name: number of non-crowd annotations} over the loaded images (after `prepare`)."""
        counts = collections.Counter()
        for info in self.image_info:
            for annotation in info["annotations"]:
                if not annotation.get("iscrowd"):
                    counts[self.class_names[abs(self._class_id(info, annotation))]] += 1
        return {name: counts[name] for name in self.class_names[1:]}

    @staticmethod
    def _coco_object(data):
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
        return coco

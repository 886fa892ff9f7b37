"""`Dataset`: Matterport's dataset base class, same attributes and methods.

Subclass it, register classes with `add_class` and images with `add_image`, override `load_mask`
(and `image_reference` if you like), then call `prepare()` before use::

    class CellDataset(Dataset):
        def load_mask(self, image_id):
            ...
            return masks_bool_hwn, class_ids_int32

Ids: each class and image has a source-specific id (``info["id"]``) and an internal id (its index,
``0..num_classes-1`` / ``0..num_images-1``); class 0 is always BG.
"""
import warnings

import numpy as np
import skimage.color
import skimage.io
from PIL import Image, UnidentifiedImageError

from mrcnn_tf.data.lisc_format import read_image
from mrcnn_tf.errors import DatasetError


def _clean_name(name):
    """Short display name: text before the first comma ("person, human" -> "person")."""
    return name.split(",", 1)[0]


def _to_uint8(image):
    """Scale any integer/float/bool image to uint8 (16-bit images by 257 so 65535 -> 255)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        image = image * 255.0 if image.size and np.nanmax(image) <= 1.0 else image
        return np.clip(np.round(np.nan_to_num(image)), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        if info.max <= 255:  # int8 and the like
            return np.clip(image, 0, 255).astype(np.uint8)
        # A fixed 16-bit range (0..65535 -> 0..255), not a per-image stretch, so intensities stay
        # comparable between images; wider integer types holding larger values use their dtype range.
        top = 65535 if image.max(initial=0) <= 65535 else info.max
        return np.clip(np.round(image.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    raise DatasetError(f"unsupported image dtype {image.dtype}: convert the file to 8-bit RGB")


def _pillow_knows(path):
    """True when Pillow identifies the file (a damaged one included: `read_image` then names it)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, FileNotFoundError, IsADirectoryError, PermissionError):
        return False
    except Exception:  # damaged header: Pillow recognised the format but cannot parse it
        return True


class Dataset:
    """Base class for datasets (Matterport's API).

    Args:
        class_map: unused, kept for Matterport compatibility.

    Attributes (after `prepare`):
        class_info, image_info: lists of dicts (class_info[0] is BG).
        num_classes, class_ids, class_names, num_images, image_ids,
        class_from_source_map / image_from_source_map: "source.id" -> internal id,
        sources: sorted list of source names ("" for BG included),
        source_class_ids: source -> internal class ids usable by that source (BG in every one).
    """

    def __init__(self, class_map=None):
        self._image_ids = []
        self.image_info = []
        # Background is always class 0.
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}

    # ------------------------------------------------------------------ registration
    def add_class(self, source, class_id, class_name):
        """Register a class of `source`; a (source, class_id) pair already present is ignored."""
        if "." in source:
            raise DatasetError(f"class source {source!r} contains '.': source names cannot contain dots "
                               "(ids are keyed 'source.id')")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image; extra keyword arguments are kept in its `image_info` dict."""
        image_info = {"id": image_id, "source": source, "path": path}
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id):
        """A link or description of the image for debugging (override; default "")."""
        return ""

    def prepare(self, class_map=None):
        """Build the lookup tables; call after adding classes and images, before using the dataset.

        Args:
            class_map: unused, kept for Matterport compatibility.
        """
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)
        self.class_from_source_map = {f"{info['source']}.{info['id']}": class_id
                                      for info, class_id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {f"{info['source']}.{info['id']}": image_id
                                      for info, image_id in zip(self.image_info, self._image_ids)}
        # Sorted rather than set order, so runs and processes agree.
        self.sources = sorted({info["source"] for info in self.class_info})
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info) if i == 0 or info["source"] == source]

    # ------------------------------------------------------------------ id mapping
    def map_source_class_id(self, source_class_id):
        """Internal class id of a "source.id" string, e.g. ``map_source_class_id("coco.12")``."""
        try:
            return self.class_from_source_map[source_class_id]
        except AttributeError:
            raise DatasetError("Dataset.prepare() has not been called: call it after adding classes") from None
        except KeyError:
            raise DatasetError(f"unknown class {source_class_id!r}: register it with add_class(source, id, name) "
                               "and call prepare()") from None

    def get_source_class_id(self, class_id, source):
        """The source's own id of internal class `class_id`, which must belong to `source`."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise DatasetError(f"class {class_id} ({info['name']!r}) comes from source {info['source']!r}, "
                               f"not {source!r}")
        return info["id"]

    @property
    def image_ids(self):
        """Internal image ids, ``np.arange(num_images)`` after `prepare`."""
        return self._image_ids

    def source_image_link(self, image_id):
        """Path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    # ------------------------------------------------------------------ loading
    def load_image(self, image_id):
        """Load an image as uint8 RGB [H, W, 3].

        Grey images become RGB, an alpha channel is dropped, 16-bit images are scaled to 8 bits (by
        257), CMYK and palette images are converted. Files Pillow knows are read by Pillow; others
        (exotic TIFFs) by skimage.

        Raises:
            DatasetError: the file is missing, unreadable or not an image (the message names it).
        """
        path = self.image_info[image_id]["path"]
        if _pillow_knows(path):
            # Pillow converts by colour mode (CMYK, palette, LA, 16-bit): skimage would hand CMYK back as
            # four channels that read as RGBA, a silently wrong image.
            return read_image(path)
        try:
            image = skimage.io.imread(path)
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file not found; check the dataset folder") from None
        except Exception:  # the readers raise many types (OSError, ValueError, struct.error ...)
            # Neither Pillow nor imageio knows these bytes: their own messages (missing backends,
            # struct unpacking) would only mislead.
            raise DatasetError(f"{path}: not an image file (no reader recognises it); save it as PNG, BMP, "
                               "JPEG or TIFF, or remove it") from None
        image = np.asarray(image)
        if image.dtype == object or image.ndim not in (2, 3) or image.size == 0:
            raise DatasetError(f"{path}: not a 2-D image (array of shape {image.shape}, dtype {image.dtype}); "
                               "replace or remove the file")
        image = _to_uint8(image)
        if image.ndim == 3 and image.shape[-1] in (1, 2):  # grey or grey + alpha
            image = image[..., 0]
        if image.ndim == 2:
            image = skimage.color.gray2rgb(image)
        if image.shape[-1] == 4:
            image = image[..., :3]
        if image.shape[-1] != 3:
            raise DatasetError(f"{path}: image has {image.shape[-1]} channels; use grey, RGB or RGBA files")
        return image

    def load_mask(self, image_id):
        """Instance masks of an image: override in your dataset.

        Returns:
            masks: bool [H, W, N], one channel per instance.
            class_ids: int32 [N] internal class ids.

        This default warns and returns no instances (bool [0, 0, 0] and int32 [0]), as Matterport.
        """
        warnings.warn("You are using the default load_mask(), maybe you need to define your own one.",
                      stacklevel=2)
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], dtype=np.int32)


def check_nucleus_masks(dataset, enabled, role="dataset", name=None, error=DatasetError):
    """Refuse Config.NUCLEUS_MASKS on a dataset without nucleus masks, with the one message the generator,
    `load_image_gt` and `train_run` give.

    Args:
        dataset: a `Dataset`; it has nucleus masks when ``has_nucleus is True`` and it has `load_nucleus_mask`.
        enabled: Config.NUCLEUS_MASKS (False: nothing to check).
        role: what the data is to the caller ("dataset", "training set", "validation set").
        name: how the message names it, e.g. the dataset folder (default: its class and first image).
        error: the exception class to raise (each caller keeps its own: DatasetError, ConfigError).

    Raises:
        `error`: "NUCLEUS_MASKS is on but the <role> (<name>) has no nucleus masks (...)", with the fix.
    """
    has_nucleus = getattr(dataset, "has_nucleus", None)
    if not enabled or (has_nucleus is True and hasattr(dataset, "load_nucleus_mask")):
        return
    if not name:
        ids = getattr(dataset, "image_ids", ())
        first = dataset.image_reference(ids[0]) if len(ids) and hasattr(dataset, "image_reference") else None
        name = type(dataset).__name__ + (f", first image {first}" if first else "")
    why = "it has no load_nucleus_mask method" if has_nucleus is True else f"has_nucleus is {has_nucleus!r}"
    raise error(f"NUCLEUS_MASKS is on but the {role} ({name}) has no nucleus masks ({why}; COCO 'nucleus' "
                "segmentations or LISC grey-coded masks give them): train with --set NUCLEUS_MASKS=false, or add "
                "nucleus masks to the data")

"""The LISC file format: folders, grey codes, image/mask readers, a BMP writer and the mask decoder.

Facts, checked on the real files: images are 720x576 24-bit BMPs at ``Main Dataset/<folder>/<n>.bmp``; expert
masks are 712x568 8-bit grey BMPs at ``Ground Truth Segmentation/<folder>/areaforexpert1/<n>_expert.bmp``,
4 px smaller on every side. Grey levels code type and compartment. Everything here is numpy + Pillow,
so the synthetic generator and the CLI load without TensorFlow.

Box and pixel coordinates are image pixels, (y1, x1, y2, x2) with y2/x2 exclusive.
"""
import pathlib
import re
import struct

import numpy as np
import scipy.ndimage
from PIL import Image, UnidentifiedImageError

from mrcnn_tf.errors import DatasetError

# Internal class ids: 0 is BG.
CLASS_NAMES = ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")
# LISC's folder names, in its own spelling, and the class each holds (`mixt`: several types).
FOLDERS = {"Baso": 1, "eosi": 2, "lymp": 3, "mono": 4, "neut": 5, "mixt": None}
# Grey level -> (class id, compartment). A Basophil is one level for the whole cell.
GREY_LEVELS = {50: (1, "cell"), 75: (2, "cytoplasm"), 100: (2, "nucleus"), 125: (3, "cytoplasm"),
               150: (3, "nucleus"), 175: (4, "cytoplasm"), 200: (4, "nucleus"), 225: (5, "cytoplasm"),
               255: (5, "nucleus")}
CYTOPLASM_LEVEL = {1: 50, 2: 75, 3: 125, 4: 175, 5: 225}
NUCLEUS_LEVEL = {1: 50, 2: 100, 3: 150, 4: 200, 5: 255}
MASK_PAD = 4  # a LISC mask is 8 px smaller each way than its image
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Lookup tables over all 256 grey values: class id, nucleus flag, and "is this level known".
_CLASS_LUT = np.zeros(256, dtype=np.uint8)
_NUCLEUS_LUT = np.zeros(256, dtype=bool)
_KNOWN_LUT = np.zeros(256, dtype=bool)
_KNOWN_LUT[0] = True
for _level, (_cid, _part) in GREY_LEVELS.items():
    _CLASS_LUT[_level] = _cid
    _NUCLEUS_LUT[_level] = _part in ("nucleus", "cell")
    _KNOWN_LUT[_level] = True


def class_from_folder(name):
    """Class id of a folder name by its first four letters ("Basophil", "baso", "Baso" -> 1); None if unknown."""
    key = name.strip().lower()[:4]
    for i, class_name in enumerate(CLASS_NAMES, start=1):
        if class_name.lower().startswith(key) and len(key) == 4:
            return i
    return None


def is_image_file(path):
    """True for image files by suffix; `Thumbs.db`, `desktop.ini`, hidden and other files are not."""
    path = pathlib.Path(path)
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder):
    """Image files of a folder in natural order (2.bmp before 10.bmp); other files are ignored."""
    files = [p for p in pathlib.Path(folder).iterdir() if is_image_file(p)]
    return sorted(files, key=natural_key)


def natural_key(path):
    """Sort key that orders embedded numbers numerically ("Baso_2" < "Baso_10")."""
    name = pathlib.Path(path).name
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------- reading
def _open(path, what):
    """Open and fully decode an image with Pillow; every failure is a DatasetError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file not found; check the dataset folder")
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            if img.mode == "P":
                # A grey palette (masks) keeps its values; a colour palette becomes RGBA (alpha dropped later).
                return img.convert("RGBA") if _palette_is_colour(img) else img.convert("L")
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); "
                           "replace the file or remove it from the dataset") from None
    except Image.DecompressionBombError:
        raise DatasetError(f"{path}: {what} is too large to decode safely; resize it") from None


def image_size(path):
    """(height, width) of an image file from its header only; a DatasetError naming the file if unreadable."""
    path = pathlib.Path(path)
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found; check the dataset folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); "
                           "replace the file or remove it from the dataset") from None


def _palette_is_colour(img):
    palette = np.asarray(img.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(palette.size) and bool(np.any(palette != palette[:, :1]))


def _as_uint8(array, path, what):
    """Any decoded pixel array as uint8: 16-bit divided by 257 (65535 -> 255), floats in [0, 1] scaled."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float64))
        if array.size and array.max() <= 1.0:
            array = array * 255.0
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.max() > 255:
            # A fixed full-range mapping, not a per-image stretch, so intensities stay comparable.
            return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    raise DatasetError(f"{path}: unsupported {what} pixel type {array.dtype}; convert it to 8-bit")


def read_image(path):
    """An image file as uint8 RGB [H, W, 3].

    Grey, palette, grey+alpha, RGBA, CMYK and 16-bit files are converted (alpha dropped, 16-bit
    divided by 257). Raises `DatasetError` naming the file when it is missing, truncated or not an image.
    """
    img = _open(path, "image")
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(img)
        if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
            # Known 16-bit data: always the full-range mapping, also for a dark image whose values
            # all stay <= 255 (left as they are, it would come out up to 257x too bright).
            grey = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
        else:
            grey = _as_uint8(array, path, "image")
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")  # handles 1, L, LA, RGBA, CMYK, YCbCr ...
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise DatasetError(f"{path}: decoded to an array of shape {array.shape}; save it as an RGB image")
    return np.ascontiguousarray(array)


def read_grey_mask(path):
    """A mask file as uint8 [H, W] grey values.

    Grey, palette-with-grey-palette and 16-bit files holding values <= 255 are read as they are; an
    RGB file is accepted when its three channels are equal. Anything else is a `DatasetError`.
    """
    img = _open(path, "mask")
    array = np.asarray(img)
    if array.ndim == 3:
        if array.shape[2] in (2, 4):  # drop alpha
            array = array[:, :, :-1]
        if array.shape[2] == 3 and not (np.array_equal(array[:, :, 0], array[:, :, 1])
                                        and np.array_equal(array[:, :, 0], array[:, :, 2])):
            raise DatasetError(f"{path}: mask is a colour image; save it as an 8-bit grey BMP with LISC's grey levels")
        array = array[:, :, 0]
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating) or (array.size and array.max() > 255) or \
            (array.size and array.min() < 0):
        raise DatasetError(f"{path}: mask values outside 0..255 ({array.dtype}); save it as an 8-bit grey BMP")
    return np.ascontiguousarray(array.astype(np.uint8))


# ---------------------------------------------------------------------------------------- decoding
def decode_lisc_mask(grey, path="<mask>", nucleus=False, min_area=1):
    """Instances of a LISC grey-coded mask.

    A cell is a connected (8-neighbour) region of the non-zero levels of ONE type, so two touching
    cells of different types stay apart. With `nucleus` the instance is the cell's nucleus levels
    (a Basophil's single level counts as its nucleus); lobes split in the mask remain one instance.

    Args:
        grey: uint8 [h, w] grey values.
        path: file name for error messages.
        nucleus: take the nucleus instead of the whole cell.
        min_area: drop regions with fewer pixels (stray specks).

    Returns:
        masks: bool [h, w, N] (same size as `grey`), class_ids: int32 [N]; N may be 0.

    Raises:
        DatasetError: the mask holds a grey level that is not a LISC code (names file and value).
    """
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise DatasetError(f"{path}: mask must be an 8-bit grey image, got an array of shape {grey.shape} "
                           f"and type {grey.dtype}")
    unknown = ~_KNOWN_LUT[grey]
    if unknown.any():
        values = np.unique(grey[unknown])
        ys, xs = np.nonzero(unknown)
        shown = ", ".join(str(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
        raise DatasetError(f"{path}: unknown grey level(s) {shown} (first at row {ys[0]}, column {xs[0]}); "
                           f"LISC uses {sorted(GREY_LEVELS)} and 0 for background: fix or re-export the mask")
    types = _CLASS_LUT[grey]
    masks, class_ids = [], []
    structure = np.ones((3, 3), dtype=bool)
    for class_id in np.unique(types[types > 0]):
        labels, count = scipy.ndimage.label(types == class_id, structure=structure)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        for label in range(1, count + 1):
            if areas[label] < min_area:
                continue
            region = labels == label
            if nucleus:
                region = region & _NUCLEUS_LUT[grey]
                if not region.any():
                    continue  # a cytoplasm region without nucleus pixels has no nucleus instance
            masks.append(region)
            class_ids.append(int(class_id))
    if not masks:
        return np.zeros(grey.shape + (0,), dtype=bool), np.zeros([0], dtype=np.int32)
    return np.stack(masks, axis=-1), np.array(class_ids, dtype=np.int32)


def decode_lisc_nucleus(grey, path="<mask>", min_area=1):
    """The nucleus of each cell of ``decode_lisc_mask(grey, nucleus=False, min_area)``: same order and ids.

    A cell's nucleus is its pixels at its type's nucleus level (Eosinophil 100, Lymphocyte 150, Monocyte
    200, Neutrophil 255). A Basophil's mask has one level (50) for the whole cell, so its nucleus is the
    whole cell. A cell drawn without nucleus pixels has an empty (all-False) nucleus.

    Returns:
        masks: bool [h, w, N], class_ids: int32 [N], aligned with the cells.

    Raises:
        DatasetError: as `decode_lisc_mask`.
    """
    cells, class_ids = decode_lisc_mask(grey, path, nucleus=False, min_area=min_area)
    return cells & _NUCLEUS_LUT[np.asarray(grey)][..., None], class_ids


def pad_lisc_mask(masks, image_shape, path="<mask>"):
    """Place decoded masks in image coordinates: 4 px of background on every side (or none if same size).

    Raises:
        DatasetError: the mask is neither 8 px smaller than the image each way nor the same size.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    mh, mw = masks.shape[:2]
    if (mh, mw) == (h, w):
        return masks
    if (mh, mw) != (h - 2 * MASK_PAD, w - 2 * MASK_PAD):
        raise DatasetError(f"{path}: mask is {mw}x{mh} but its image is {w}x{h}; a LISC mask must be "
                           f"{w - 2 * MASK_PAD}x{h - 2 * MASK_PAD} (4 px smaller on each side) or {w}x{h}")
    return np.pad(masks, [(MASK_PAD, MASK_PAD), (MASK_PAD, MASK_PAD), (0, 0)])


# ---------------------------------------------------------------------------------------- writing
def write_bmp(path, array):
    """Write a 24-bit RGB ([H, W, 3] uint8) or 8-bit grey-palette ([H, W] uint8) BMP, as LISC's files.

    Hand-written because the layout must be exact (bottom-up rows padded to 4 bytes, BITMAPINFOHEADER,
    a 256-entry grey palette for masks) and it is faster than a general encoder.
    """
    array = np.asarray(array, dtype=np.uint8)
    h, w = array.shape[:2]
    if array.ndim == 3:
        bits, palette = 24, b""
        rows = array[::-1, :, ::-1]  # bottom-up, BGR
    else:
        bits = 8
        palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 4, axis=1)
        palette[:, 3] = 0
        palette = palette.tobytes()
        rows = array[::-1]
    row_bytes = w * bits // 8
    stride = (row_bytes + 3) & ~3
    data = np.zeros((h, stride), dtype=np.uint8)
    data[:, :row_bytes] = rows.reshape(h, row_bytes)
    offset = 14 + 40 + len(palette)
    size = offset + data.size
    header = struct.pack("<2sIHHI", b"BM", size, 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bits, 0, data.size, 2835, 2835,
                       256 if bits == 8 else 0, 0)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header + info + palette + data.tobytes())
    return path

"""Per-cell morphometry: size, shape, the nucleus-to-cell ratio, nuclear lobes and colours of each white cell.

`measure_cell` measures one cell from its mask (and its nucleus's mask, when there is one); `measure_cells`
measures the [H, W, N] masks of a detection. `write_cells_csv` / `append_cells_csv` write the per-cell table
(`CELL_COLUMNS`); `geojson_features` / `write_geojson` write the outlines as QuPath cell objects.

Units: pixels ("px"), or micrometres ("um") when `pixel_size` (micrometres per pixel) is given; lengths are then
multiplied by it and areas by its square. Ratios, circularities and lobe counts have no unit.
"""
import csv
import io
import json
import math
import os
import pathlib
import tempfile
import zlib

import numpy as np
from skimage import measure, morphology

from mrcnn_tf.errors import MrcnnError

# The opening cuts strands under ~1/4-1/3 of a lobe's width (filaments: segmented, not band); <5% area is a speck.
LOBE_OPENING_FRACTION, LOBE_SPECK_FRACTION = 1 / 5, 0.05
_COLOUR_KEYS = ("nucleus_mean_rgb", "cytoplasm_mean_rgb")
CELL_COLUMNS = ("image", "cell_id", "type", "score", "y1", "x1", "y2", "x2", "unit", "cell_area", "cell_perimeter",
                "cell_circularity", "cell_equivalent_diameter", "nucleus_area", "nucleus_perimeter",
                "nucleus_circularity", "nc_ratio", "nucleus_cytoplasm_ratio", "nucleus_lobes", "nucleus_mean_r",
                "nucleus_mean_g", "nucleus_mean_b", "cytoplasm_mean_r", "cytoplasm_mean_g", "cytoplasm_mean_b")
# Class colours for QuPath (its reader needs one beside each class name); a type's colour is fixed by its name.
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def measure_cell(image, cell_mask, nucleus_mask=None, pixel_size=None):
    """Measures one cell: area, perimeter, circularity, equivalent diameter; with a nucleus, N:C ratio, lobes, colours.

    Args:
        image: [H, W, 3] RGB (an alpha channel is dropped; [H, W] grey counts as R = G = B), any dtype;
            colours are means in the image's own values (0-255 for uint8).
        cell_mask: [H, W] bool, the whole cell (nucleus included).
        nucleus_mask: [H, W] bool or None. Clipped to `cell_mask`: nucleus pixels outside the cell are ignored.
        pixel_size: micrometres per pixel, or None for pixel units.

    Returns:
        dict: `unit` ("px" or "um"); `cell_area` (unit^2), `cell_perimeter` (unit, Crofton estimate),
        `cell_circularity` (4 pi area / perimeter^2 clipped to [0, 1], 1 for a disc; None without a perimeter),
        `cell_equivalent_diameter` (unit, of the disc of the same area). With `nucleus_mask` also `nucleus_area`,
        `nucleus_perimeter`, `nucleus_circularity`; `nc_ratio`, the nucleus-to-cell ratio: nucleus area / WHOLE
        cell area (nucleus included), in [0, 1], near 1 for a small lymphocyte; `nucleus_cytoplasm_ratio`, the
        nucleus:cytoplasm form some texts quote: nucleus area / (cell area - nucleus area), None when the nucleus
        fills the cell; `nucleus_lobes` (int, 0 for an empty nucleus; see `nucleus_lobes`); `nucleus_mean_rgb`
        and `cytoplasm_mean_rgb`: 3 floats each, None when that part is empty.

    Raises:
        MrcnnError: an empty cell mask, masks or image of different heights and widths, a bad `pixel_size`.
    """
    image = np.asarray(image)
    cell = _check_mask(cell_mask, image.shape[:2], "cell mask")
    if not cell.any():
        raise MrcnnError("cell mask is empty: morphometry needs at least one cell pixel")
    scale = _scale(pixel_size)
    rgb = _rgb(image)
    whole = _shape(cell)
    result = {"unit": "px" if pixel_size is None else "um",
              "cell_area": whole["area"] * scale ** 2, "cell_perimeter": whole["perimeter"] * scale,
              "cell_circularity": whole["circularity"],
              "cell_equivalent_diameter": whole["equivalent_diameter"] * scale}
    if nucleus_mask is None:
        return result
    nucleus = _check_mask(nucleus_mask, cell.shape, "nucleus mask") & cell
    inner = _shape(nucleus)
    cytoplasm_area = whole["area"] - inner["area"]
    result.update({
        "nucleus_area": inner["area"] * scale ** 2, "nucleus_perimeter": inner["perimeter"] * scale,
        "nucleus_circularity": inner["circularity"], "nc_ratio": inner["area"] / whole["area"],
        "nucleus_cytoplasm_ratio": inner["area"] / cytoplasm_area if cytoplasm_area else None,
        "nucleus_lobes": nucleus_lobes(nucleus),
        "nucleus_mean_rgb": _mean_rgb(rgb, nucleus), "cytoplasm_mean_rgb": _mean_rgb(rgb, cell & ~nucleus)})
    return result


def measure_cells(image, cell_masks, nucleus_masks=None, pixel_size=None):
    """Measures every cell of a detection: `measure_cell` on each mask, numbered `cell_id` 1..N.

    Args:
        image: [H, W, 3] RGB (see `measure_cell`).
        cell_masks: [H, W, N] bool, one cell per channel (Mask R-CNN's `masks`).
        nucleus_masks: [H, W, N] bool or None, cell i's nucleus in channel i.
        pixel_size: micrometres per pixel, or None for pixel units.

    Returns:
        list of N dicts, each `{"cell_id": i, **measure_cell(...)}`; [] when N = 0.
    """
    cell_masks = _check_stacks(cell_masks, nucleus_masks)
    rows = []
    for i in range(cell_masks.shape[-1]):
        nucleus = None if nucleus_masks is None else nucleus_masks[..., i]
        try:
            rows.append({"cell_id": i + 1, **measure_cell(image, cell_masks[..., i], nucleus, pixel_size)})
        except MrcnnError as error:
            raise MrcnnError(f"cell {i + 1}: {error}") from None
    return rows


def nucleus_lobes(nucleus_mask):
    """Number of lobes of a nucleus: the parts left by a size-scaled opening, specks ignored (int, 0 when empty).

    The opening's disk has radius max(1, round(`LOBE_OPENING_FRACTION` * equivalent radius)) px: strands
    narrower than about 2 radius + 1 px are cut (for two lobes, ~1/4-1/3 of a lobe's width), a short pinch (a
    peanut's waist) is not; parts under `LOBE_SPECK_FRACTION` of the area do not count. A nucleus too thin to
    survive the opening counts as one lobe.
    """
    nucleus = np.asarray(nucleus_mask, bool)
    area = int(nucleus.sum())
    if area == 0:
        return 0
    radius = max(1, round(LOBE_OPENING_FRACTION * math.sqrt(area / math.pi)))
    rows, cols = np.nonzero(nucleus)
    # The bounding box with a margin: the opening costs its size, not the image's, and the border reads empty.
    crop = np.pad(nucleus[rows.min():rows.max() + 1, cols.min():cols.max() + 1], radius + 1)
    opened = morphology.opening(crop, morphology.disk(radius))
    parts = [region.area for region in measure.regionprops(measure.label(opened, connectivity=2))]
    return max(1, sum(int(part >= LOBE_SPECK_FRACTION * area) for part in parts))


def write_cells_csv(path, rows):
    """Writes the per-cell table (header `CELL_COLUMNS`) atomically: a temp file in the same folder, then a rename.

    Args:
        path: output .csv.
        rows: dicts with `image`, `cell_id`, `type`, `score`, `y1`, `x1`, `y2`, `x2` and `measure_cell`'s keys;
            missing keys and None are empty fields, keys outside `CELL_COLUMNS` are left out, colour triples
            become `nucleus_mean_r/g/b` and `cytoplasm_mean_r/g/b`; floats keep 4 decimals.

    Returns:
        int, the number of rows written.
    """
    _write_atomically(_output_path(path), _csv_text(rows, header=True))
    return len(rows)


def append_cells_csv(path, rows):
    """Appends rows to the per-cell table, writing the header only when the file is new or empty (detect's batches).

    Args:
        path: .csv, created when missing; an existing one must start with the `CELL_COLUMNS` header.
        rows: as for `write_cells_csv`.

    Returns:
        int, the number of rows written.
    """
    path = _output_path(path)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if tuple(header or ()) != CELL_COLUMNS:
            raise MrcnnError(f"{path} is not a per-cell table (its header differs from CELL_COLUMNS): "
                             "append to a file this module wrote, or choose a new name")
    # One write call per batch: an interrupted run leaves whole batches, not half a row.
    with open(path, "a", newline="", encoding="utf-8") as f:
        f.write(_csv_text(rows, header=new))
    return len(rows)


def geojson_features(cell_masks, nucleus_masks=None, properties=None):
    """QuPath cell objects as GeoJSON Features, one per cell (QuPath's `PathObjectTypeAdapters` layout).

    Each Feature has `geometry`, a Polygon: the outline of the mask's largest 8-connected part (holes ignored), a
    closed ring of [x, y] pixel coordinates in QuPath's frame (pixel (0, 0) covers [0, 1] x [0, 1], so the ring
    runs along pixel edges), counter-clockwise by the shoelace sign in (x, y) (clockwise on a y-down screen).
    With a non-empty nucleus (clipped to the cell) the Feature also has `nucleusGeometry`, a sibling of
    `geometry` as QuPath writes it. `properties` holds `objectType` "cell"; with a `type`, `classification`
    {"name": type, "color": [r, g, b]} (the given `color`, else one fixed by the name: QuPath reads a class
    only with its colour); `measurements`, the numeric values (colour triples as `..._r/_g/_b`, None dropped);
    `metadata`, the other string values (e.g. `image`, `unit`).

    Args:
        cell_masks: [H, W, N] bool.
        nucleus_masks: [H, W, N] bool or None.
        properties: None or N dicts (e.g. `measure_cells` rows with `type` and `score` added).

    Returns:
        list of N JSON-serialisable Feature dicts.
    """
    cell_masks = _check_stacks(cell_masks, nucleus_masks)
    count = cell_masks.shape[-1]
    if properties is not None and len(properties) != count:
        raise MrcnnError(f"{len(properties)} property dicts for {count} cells: give one per cell")
    features = []
    for i in range(count):
        cell = cell_masks[..., i]
        ring = _outer_ring(cell)
        if ring is None:
            raise MrcnnError(f"cell {i + 1}: cell mask is empty, so it has no outline")
        feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
        nucleus_ring = None if nucleus_masks is None else _outer_ring(np.asarray(nucleus_masks[..., i], bool) & cell)
        if nucleus_ring is not None:
            feature["nucleusGeometry"] = {"type": "Polygon", "coordinates": [nucleus_ring]}
        feature["properties"] = _qupath_properties({} if properties is None else properties[i])
        features.append(feature)
    return features


def write_geojson(path, features):
    """Writes `geojson_features`'s list to `path` as a GeoJSON FeatureCollection, atomically; returns its length.

    QuPath's object import (e.g. the script command `importObjectsFromFile(path)`) reads it as cell objects.
    """
    features = list(features)
    _write_atomically(_output_path(path), json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


def _write_atomically(path, text):
    """A temp file in the same folder, then `os.replace`: readers never see half a file."""
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as f:
            f.write(text)
        os.replace(partial, path)
    except BaseException:
        pathlib.Path(partial).unlink(missing_ok=True)
        raise


def _check_mask(mask, shape, what):
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise MrcnnError(f"{what} has shape {mask.shape} but the image is {tuple(shape)}: "
                         "give masks of the image's height and width")
    return mask.astype(bool, copy=False)


def _check_stacks(cell_masks, nucleus_masks):
    cell_masks = np.asarray(cell_masks)
    if cell_masks.ndim != 3:
        raise MrcnnError(f"cell masks have shape {cell_masks.shape}: expected [H, W, N], one mask per channel")
    if nucleus_masks is not None and np.shape(nucleus_masks) != cell_masks.shape:
        raise MrcnnError(f"nucleus masks have shape {np.shape(nucleus_masks)}, the cell masks {cell_masks.shape}: "
                         "give one nucleus mask per cell mask")
    return cell_masks.astype(bool, copy=False)


def _scale(pixel_size):
    if pixel_size is None:
        return 1.0
    if not isinstance(pixel_size, (int, float, np.number)) or not math.isfinite(pixel_size) or pixel_size <= 0:
        raise MrcnnError(f"pixel_size {pixel_size!r} is not a positive number of micrometres per pixel")
    return float(pixel_size)


def _rgb(image):
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise MrcnnError(f"image has shape {image.shape}: expected [H, W, 3] RGB or [H, W] grey")
    image = image[..., :3]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _shape(mask):
    """Area (px^2), perimeter (px), circularity and equivalent diameter (px) of a mask taken as one region."""
    if not mask.any():
        return {"area": 0.0, "perimeter": 0.0, "circularity": None, "equivalent_diameter": 0.0}
    region = measure.regionprops(mask.astype(np.uint8))[0]
    # Crofton's estimate: the 8-step chain count used by `perimeter` reads a disc's outline 5% long.
    perimeter = float(region.perimeter_crofton)
    circularity = float(np.clip(4 * math.pi * region.area / perimeter ** 2, 0, 1)) if perimeter > 0 else None
    return {"area": float(region.area), "perimeter": perimeter, "circularity": circularity,
            "equivalent_diameter": float(region.equivalent_diameter_area)}


def _mean_rgb(rgb, mask):
    if not mask.any():
        return None
    region = measure.regionprops(mask.astype(np.uint8), intensity_image=rgb)[0]
    return tuple(float(v) for v in region.intensity_mean)


def _output_path(path):
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise MrcnnError(f"{path}: folder {path.parent} does not exist: create it first")
    return path


def _flat(row):
    """`row` with its colour triples split into _r, _g, _b entries."""
    flat = dict(row)
    for key in _COLOUR_KEYS:
        if key in flat:
            triple = flat.pop(key)
            for channel, value in zip("rgb", (None,) * 3 if triple is None else triple):
                flat[key[:-3] + channel] = value
    return flat


def _csv_field(value):
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.4f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _csv_text(rows, header):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CELL_COLUMNS)
    for row in rows:
        flat = _flat(row)
        writer.writerow([_csv_field(flat.get(column)) for column in CELL_COLUMNS])
    return buffer.getvalue()


def _shoelace(xy):
    """Signed area of a polygon: positive when counter-clockwise with y up."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _outer_ring(mask):
    """Closed counter-clockwise [[x, y], ...] outline of the largest 8-connected part of `mask`; None when empty."""
    regions = measure.regionprops(measure.label(mask, connectivity=2))
    if not regions:
        return None
    part = max(regions, key=lambda region: region.area)
    # Padding closes outlines at the image border; "high" joins diagonal pixels, as the labelling did.
    contours = measure.find_contours(np.pad(part.image, 1).astype(np.uint8), 0.5, fully_connected="high")
    outline = max(contours, key=lambda c: abs(_shoelace(c)))[:-1]  # the others are holes' outlines
    # Marching squares puts a vertex on every pixel edge: drop those in a straight run (approximate_polygon
    # would too, but its first call imports scipy.signal, a second).
    before, after = outline - np.roll(outline, 1, axis=0), np.roll(outline, -1, axis=0) - outline
    outline = outline[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]
    top, left = part.bbox[:2]
    # (row, col) in the padded crop -> (x, y) with pixel centres at +0.5, as in QuPath.
    xy = outline[:, ::-1] + (left - 1 + 0.5, top - 1 + 0.5)
    if _shoelace(xy) < 0:
        xy = xy[::-1]
    return np.vstack([xy, xy[:1]]).tolist()


def _qupath_properties(given):
    properties = {"objectType": "cell"}
    given = _flat(given)
    if given.get("type") is not None:
        name = str(given["type"])
        colour = given.get("color") or _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]
        properties["classification"] = {"name": name, "color": [int(c) for c in colour]}
    measurements, metadata = {}, {}
    for key, value in given.items():
        if key in ("type", "color") or value is None or isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)):
            if math.isfinite(value):  # JSON has no NaN; QuPath's reader wants numbers
                measurements[key] = float(value)
        elif isinstance(value, str):
            metadata[key] = value
    properties["measurements"] = measurements
    if metadata:
        properties["metadata"] = metadata
    return properties


class CellTable:
    """What `mrcnn-tf detect` measures and writes per cell, handed to `inference.detect_folder.run_detect`.

    Args:
        class_names: names by class id, 0 = BG.
        pixel_size: micrometres per pixel, or None for pixels.
        geojson: also write one QuPath GeoJSON FeatureCollection per image.
    """

    FILE_NAME = "cells.csv"

    def __init__(self, class_names, pixel_size=None, geojson=False):
        _scale(pixel_size)  # a bad size fails before any image is read
        self.class_names, self.pixel_size, self.geojson = list(class_names), pixel_size, bool(geojson)

    def rows(self, image_name, image, result):
        """One JSON-able row per detected cell: image, cell id, type, score, box and `measure_cell`'s measures."""
        masks, nuclei = result["masks"], result.get("nucleus_masks")
        rows = []
        for i in range(masks.shape[-1]):
            # A detection whose mask came out empty keeps its row (the counts have it), with nothing to measure.
            row = (measure_cell(image, masks[..., i], None if nuclei is None else nuclei[..., i], self.pixel_size)
                   if masks[..., i].any() else {"unit": "um" if self.pixel_size else "px", "cell_area": 0.0})
            y1, x1, y2, x2 = (int(v) for v in result["rois"][i])
            rows.append({"image": image_name, "cell_id": i + 1, "type": self.class_names[int(result["class_ids"][i])],
                         "score": float(result["scores"][i]), "y1": y1, "x1": x1, "y2": y2, "x2": x2,
                         **{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}})
        return rows

    def write_geojson(self, path, result, rows):
        """The image's cells (and nuclei) as QuPath cell objects, typed, with their measures (empty masks left out)."""
        keep = [i for i in range(result["masks"].shape[-1]) if result["masks"][..., i].any()]
        nuclei = result.get("nucleus_masks")
        return write_geojson(path, geojson_features(result["masks"][..., keep],
                                                    None if nuclei is None else nuclei[..., keep],
                                                    [rows[i] for i in keep]))

    def write(self, path, rows):
        """cells.csv: every cell of the run, in input order."""
        return write_cells_csv(path, rows)

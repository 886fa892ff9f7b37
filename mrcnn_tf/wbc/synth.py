"""Synthetic blood smears in exactly LISC's layout and grey coding (`mrcnn-tf synth`).

Each image is a 720x576 24-bit BMP of a stained smear: a plasma background packed with red cells
(overlapping, with central pallor), a few platelets, and one or more leukocytes drawn so that each
type has its own look, as on a Giemsa smear:

    Basophil    medium, packed with coarse purple-black granules that hide the nucleus
    Eosinophil  large, bilobed nucleus in dense orange-red granules
    Lymphocyte  small, a large round dark nucleus in a thin pale-blue rim
    Monocyte    the largest, kidney-shaped folded nucleus in grey-blue cytoplasm with vacuoles
    Neutrophil  medium-large, 3-5 nuclear lobes joined by strands in pale lilac cytoplasm

Stain tint, brightness, size and shape vary per image. Light is modelled as transmission
(Beer-Lambert): stains add optical density, so overlapping red cells come out darker, as on glass.
The expert mask (712x568 8-bit grey, 4 px trimmed on every side) carries LISC's codes: Basophil 50
for the whole cell; cytoplasm/nucleus Eosinophil 75/100, Lymphocyte 125/150, Monocyte 175/200,
Neutrophil 225/255.

Every image is drawn from its own generator seeded by (seed, folder, number), so a set is
deterministic for a seed, and image ``Baso/3.bmp`` is the same whatever ``per_class`` is.
"""
import json
import pathlib

import numpy as np
import scipy.ndimage

from mrcnn_tf.data.lisc_format import (CLASS_NAMES, CYTOPLASM_LEVEL, FOLDERS, MASK_PAD, NUCLEUS_LEVEL,
                                       write_bmp)

IMAGE_SHAPE = (576, 720)  # rows, cols
MANIFEST_NAME = "synth_manifest.json"
DATABASE = "LISC Database"
_FOLDER_OF_CLASS = {cid: name for name, cid in FOLDERS.items() if cid is not None}
_FOLDER_INDEX = {name: i for i, name in enumerate(FOLDERS)}


def _od(rgb):
    """Optical density of a colour seen over white light (Beer-Lambert: colour = 255 * exp(-od))."""
    return -np.log(np.asarray(rgb, dtype=np.float32) / 255.0)


PLASMA = _od((238, 226, 224))
RBC = _od((214, 128, 140)) - PLASMA
PLATELET = _od((150, 100, 175))
# Per leukocyte type: diameter range (px), cytoplasm, nucleus and granule colours (seen over white).
# A red cell is 48-66 px across (~7.5 um), which sets the scale: small lymphocytes 7-10 um, basophils
# and neutrophils 10-14 um, eosinophils 12-16 um, monocytes 14-18 um.
LOOKS = {
    1: dict(diameter=(76, 100), cytoplasm=(128, 104, 172), nucleus=(70, 45, 115), granules=(40, 22, 80)),
    2: dict(diameter=(90, 116), cytoplasm=(236, 196, 180), nucleus=(95, 55, 140), granules=(232, 105, 60)),
    3: dict(diameter=(56, 76), cytoplasm=(172, 196, 232), nucleus=(78, 48, 128), granules=None),
    4: dict(diameter=(106, 135), cytoplasm=(196, 190, 218), nucleus=(118, 80, 160), granules=None),
    5: dict(diameter=(86, 112), cytoplasm=(226, 206, 222), nucleus=(88, 50, 138), granules=(200, 170, 200)),
}


# ---------------------------------------------------------------------------------------- fields
def _smooth_noise(rng, shape, cells):
    """Low-frequency noise in [0, 1] of `shape`: a coarse random grid, bilinearly enlarged."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return scipy.ndimage.zoom(grid, (shape[0] / cells, shape[1] / cells), order=1, grid_mode=True,
                              mode="nearest")[:shape[0], :shape[1]]


def _dots(rng, shape, count, sigma, where):
    """A density field of `count` soft dots (granules, chromatin clumps) placed where `where` is True."""
    field = np.zeros(shape, dtype=np.float32)
    ys, xs = np.nonzero(where)
    if ys.size == 0 or count <= 0:
        return field
    pick = rng.integers(0, ys.size, size=count)
    np.add.at(field, (ys[pick], xs[pick]), 1.0)
    field = scipy.ndimage.gaussian_filter(field, sigma)
    return field / max(float(field.max()), 1e-6)


def _ellipse(y, x, cy, cx, a, b, angle):
    """Normalized distance to an ellipse centre (1 on its outline); a along `angle`, b across."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _soft(field, scale):
    """Alpha from an implicit field (inside < 1) with a one-pixel anti-aliased edge; 0.5 on the outline."""
    return np.clip((1.0 - field) * scale + 0.5, 0.0, 1.0)


# ---------------------------------------------------------------------------------------- nuclei
def _nucleus_field(rng, class_id, y, x, radius):
    """Implicit field (< 1 inside) of the nucleus of a cell of `radius` centred at (0, 0)."""
    turn = rng.uniform(0, 2 * np.pi)
    if class_id == 3:  # lymphocyte: large round nucleus, slightly off centre
        off = rng.uniform(0.04, 0.1) * radius
        r = rng.uniform(0.74, 0.84) * radius
        return _ellipse(y, x, off * np.sin(turn), off * np.cos(turn), r, r * rng.uniform(0.9, 1.0), turn)
    if class_id == 4:  # monocyte: an ellipse with a notch bitten out of one long side -> kidney
        a, b = rng.uniform(0.58, 0.66) * radius, rng.uniform(0.42, 0.5) * radius
        body = _ellipse(y, x, 0, 0, a, b, turn)
        ny, nx = 1.05 * b * np.cos(turn), -1.05 * b * np.sin(turn)
        notch = _ellipse(y, x, ny, nx, 0.5 * a, 0.55 * b, turn)
        return np.maximum(body, 2.0 - notch)
    if class_id == 2 or class_id == 1:  # eosinophil / basophil: two lobes joined by a bridge
        sep = rng.uniform(0.28, 0.34) * radius
        a, b = rng.uniform(0.24, 0.3) * radius, rng.uniform(0.2, 0.24) * radius
        dy, dx = sep * np.sin(turn), sep * np.cos(turn)
        lobes = [_ellipse(y, x, dy, dx, b, a, turn), _ellipse(y, x, -dy, -dx, b, a, turn),
                 _ellipse(y, x, 0, 0, sep, 0.07 * radius, turn)]
        return np.minimum.reduce(lobes)
    # neutrophil: 3-5 lobes along a C-shaped arc, each joined to the next by a thin strand
    count = int(rng.integers(3, 6))
    spacing = rng.uniform(0.42, 0.48) * radius  # centre to centre, wider than a lobe (0.3 radius)
    # The arc is widened for many lobes so the C spans at most ~250 degrees and its ends stay apart.
    arc = max(rng.uniform(0.36, 0.44) * radius, (count - 1) * spacing / 4.4)
    step = 2 * np.arcsin(min(spacing / (2 * arc), 1.0))
    angles = turn + (np.arange(count) - (count - 1) / 2) * step
    cys, cxs = arc * np.sin(angles), arc * np.cos(angles)
    parts = []
    for i in range(count):
        # Long axis radial, so neighbouring lobes stay apart and only the strands join them.
        parts.append(_ellipse(y, x, cys[i], cxs[i], rng.uniform(0.2, 0.25) * radius,
                              rng.uniform(0.14, 0.16) * radius, angles[i]))
        if i:
            my, mx = (cys[i] + cys[i - 1]) / 2, (cxs[i] + cxs[i - 1]) / 2
            length = np.hypot(cys[i] - cys[i - 1], cxs[i] - cxs[i - 1]) / 2 + 1
            parts.append(_ellipse(y, x, my, mx, length, 0.02 * radius + 0.8,
                                  np.arctan2(cys[i] - cys[i - 1], cxs[i] - cxs[i - 1])))
    return np.minimum.reduce(parts)


# ---------------------------------------------------------------------------------------- cells
def _draw_leukocyte(rng, od, label, class_id, cy, cx, radius, tint):
    """Draw one leukocyte into the optical-density canvas `od` and the grey label image `label`."""
    look = LOOKS[class_id]
    half = int(np.ceil(radius * 1.15)) + 3
    y0, x0 = cy - half, cx - half
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    theta = np.arctan2(y, x)
    # A slightly irregular outline: an ellipse with a little third-harmonic wobble.
    wobble = (1 + rng.uniform(0.0, 0.06) * np.cos(2 * (theta - rng.uniform(0, np.pi)))
              + rng.uniform(0.0, 0.03) * np.cos(3 * theta + rng.uniform(0, 2 * np.pi)))
    cell_field = np.hypot(y, x) / (radius * wobble)
    cell = cell_field <= 1.0
    cell_alpha = _soft(cell_field, radius)
    nucleus_field = _nucleus_field(rng, class_id, y, x, radius)
    nucleus = (nucleus_field <= 1.0) & cell
    nucleus_alpha = _soft(nucleus_field, 0.3 * radius) * cell_alpha

    shape = y.shape
    chromatin = 0.75 + 0.5 * _smooth_noise(rng, shape, 7)
    cyto_density = 0.8 + 0.4 * _smooth_noise(rng, shape, 5)
    cell_od = _od(look["cytoplasm"]) * tint * cyto_density[..., None]
    nucleus_od = (_od(look["nucleus"]) * tint) * (chromatin * nucleus_alpha)[..., None]
    cell_od = cell_od * (1 - nucleus_alpha)[..., None] + nucleus_od
    if class_id == 4:  # monocyte vacuoles: a few clear spots in the cytoplasm
        vac = _dots(rng, shape, int(rng.integers(2, 7)), radius * 0.04, cell & ~nucleus)
        cell_od *= (1 - 0.6 * vac)[..., None]
    if look["granules"] is not None:
        if class_id == 1:  # basophil: coarse dark granules over nucleus and cytoplasm alike, hiding the lobes
            count, sigma, where, strength = int(radius * 8.0), 1.8, cell_field < 0.95, 1.3
        elif class_id == 2:  # eosinophil: dense coarse orange granules fill the cytoplasm
            count, sigma, where, strength = int(radius * 9.0), 1.4, (cell_field < 0.95) & ~nucleus, 1.0
        else:  # neutrophil: fine faint granules
            count, sigma, where, strength = int(radius * 4.0), 0.8, cell_field < 0.95, 0.5
        grains = _dots(rng, shape, count, sigma, where)
        cell_od = cell_od + _od(look["granules"]) * tint * (strength * grains)[..., None]
    cell_od = cell_od * cell_alpha[..., None]
    # The cell displaces the red cells under it: plasma plus the cell's own stain inside its outline.
    window = od[y0:y0 + shape[0], x0:x0 + shape[1]]
    window *= (1 - cell_alpha)[..., None]
    window += PLASMA * tint * cell_alpha[..., None] + cell_od

    lab = label[y0:y0 + shape[0], x0:x0 + shape[1]]
    lab[cell] = CYTOPLASM_LEVEL[class_id]
    lab[nucleus] = NUCLEUS_LEVEL[class_id]
    ys, xs = np.nonzero(cell)
    # A Basophil's mask has one level for the whole cell, so its "nucleus" instance is the whole cell.
    nys, nxs = np.nonzero(cell if class_id == 1 else nucleus)
    return {
        "class_id": class_id, "class_name": CLASS_NAMES[class_id - 1],
        "bbox": [int(ys.min() + y0), int(xs.min() + x0), int(ys.max() + y0 + 1), int(xs.max() + x0 + 1)],
        "area": int(ys.size),
        "nucleus_bbox": [int(nys.min() + y0), int(nxs.min() + x0), int(nys.max() + y0 + 1), int(nxs.max() + x0 + 1)],
        "nucleus_area": int(nys.size),
    }


def _draw_red_cells(rng, od, tint, avoid):
    """Pack red cells (some overlapping) and platelets over the canvas, keeping clear of leukocytes."""
    h, w = od.shape[:2]
    count = int(rng.integers(45, 80))
    for _ in range(count):
        r = rng.uniform(24, 33)
        for _ in range(20):
            cy, cx = rng.uniform(-r / 2, h + r / 2), rng.uniform(-r / 2, w + r / 2)
            if all(np.hypot(cy - ay, cx - ax) > ar + 0.6 * r for ay, ax, ar in avoid):
                break
        else:
            continue
        half = int(r) + 3
        iy, ix = int(cy), int(cx)
        ya, yb, xa, xb = max(iy - half, 0), min(iy + half + 1, h), max(ix - half, 0), min(ix + half + 1, w)
        if ya >= yb or xa >= xb:
            continue
        y = (np.arange(ya, yb, dtype=np.float32) - cy)[:, None]
        x = (np.arange(xa, xb, dtype=np.float32) - cx)[None, :]
        d = _ellipse(y, x, 0, 0, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi))
        # Thicker rim, pale centre (the biconcave disc), soft one-pixel edge.
        density = _soft(d, r) * (0.55 + 0.45 * np.clip(d, 0, 1) ** 2) * rng.uniform(0.8, 1.1)
        od[ya:yb, xa:xb] += (RBC * tint) * density[..., None]
    for _ in range(int(rng.integers(0, 8))):
        r = rng.uniform(1.5, 3.5)
        cy, cx = int(rng.integers(8, h - 8)), int(rng.integers(8, w - 8))
        y, x = np.ogrid[-6:7, -6:7]
        blob = np.exp(-(y * y + x * x) / (2 * r * r)).astype(np.float32)
        od[cy - 6:cy + 7, cx - 6:cx + 7] += PLATELET * blob[..., None]


def _place(rng, radii, shape):
    """Centres for cells of `radii`, inside the mask area and at least 10 px apart."""
    h, w = shape
    centres = []
    for r in radii:
        margin = int(np.ceil(r * 1.15)) + MASK_PAD + 6
        for _ in range(500):
            cy, cx = int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin))
            if all(np.hypot(cy - y, cx - x) > 1.12 * (r + q) + 10 for (y, x), q in zip(centres, radii)):
                centres.append((cy, cx))
                break
        else:
            raise RuntimeError("could not place the cells without overlap; ask for fewer cells per image")
    return centres


def render_smear(rng, class_ids):
    """Draw one smear holding leukocytes of `class_ids`.

    Args:
        rng: numpy Generator.
        class_ids: list of class ids (1..5), one per leukocyte.

    Returns:
        image: uint8 [576, 720, 3] RGB.
        grey: uint8 [576, 720] LISC grey codes in image coordinates (untrimmed).
        instances: list of dicts (class_id, class_name, bbox, area, nucleus_bbox, nucleus_area), boxes in
            image pixels (y1, x1, y2, x2), y2/x2 exclusive.
    """
    h, w = IMAGE_SHAPE
    # Stain tint and strength vary from slide to slide.
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.15))
    od = np.empty((h, w, 3), dtype=np.float32)
    od[:] = PLASMA * tint
    # Uneven illumination/thickness: smooth noise made at 1/4 size and repeated (a 4-px step of a gentle
    # gradient is invisible, and it is 10x cheaper than interpolating at full size).
    shade = _smooth_noise(rng, (h // 4, w // 4), 6).repeat(4, axis=0).repeat(4, axis=1)
    od *= (0.85 + 0.3 * shade)[..., None]
    radii = [rng.uniform(*LOOKS[c]["diameter"]) / 2 for c in class_ids]
    centres = _place(rng, radii, (h, w))
    _draw_red_cells(rng, od, tint, [(cy, cx, r * 1.1) for (cy, cx), r in zip(centres, radii)])
    grey = np.zeros((h, w), dtype=np.uint8)
    instances = [_draw_leukocyte(rng, od, grey, c, cy, cx, r, tint)
                 for c, (cy, cx), r in zip(class_ids, centres, radii)]
    light = np.float32(rng.uniform(235, 255))
    image = light * np.exp(-od)
    image += rng.normal(0, 2.0, size=(h, w, 1)).astype(np.float32)  # sensor noise (shared by channels)
    return np.clip(image, 0, 255).astype(np.uint8), grey, instances


def _image_classes(rng, folder):
    """Leukocyte types of one image: the folder's type (a second one now and then), or 2-4 for `mixt`."""
    if folder == "mixt":
        count = int(rng.integers(2, 5))
        classes = [int(c) for c in rng.choice(5, size=count, replace=count > 5) + 1]
        return classes
    class_id = FOLDERS[folder]
    return [class_id] * (2 if rng.random() < 0.12 else 1)


def write_lisc(out_dir, per_class, mixt=0, seed=0):
    """Write a synthetic LISC tree under ``out_dir/LISC Database`` and its truth in ``out_dir/synth_manifest.json``.

    Args:
        out_dir: output folder (created).
        per_class: images per type folder (Baso, eosi, lymp, mono, neut), numbered 1..per_class.
        mixt: images in `mixt`, each with 2-4 leukocytes of different types.
        seed: seed of the whole set.

    Returns:
        The manifest dict: ``images`` list with ``folder``, ``image`` and ``mask`` (paths relative to
        `out_dir`) and ``instances`` (class_id, class_name, bbox, area, nucleus_bbox, nucleus_area;
        boxes in image pixels; a Basophil's nucleus fields are its cell's, as its mask has one level).
    """
    if int(per_class) < 0 or int(mixt) < 0:
        raise ValueError("per_class and mixt must be >= 0")
    out_dir = pathlib.Path(out_dir)
    root = out_dir / DATABASE
    images = []
    jobs = [(f, n) for f in FOLDERS if f != "mixt" for n in range(1, int(per_class) + 1)]
    jobs += [("mixt", n) for n in range(1, int(mixt) + 1)]
    for folder, number in jobs:
        rng = np.random.default_rng([int(seed), _FOLDER_INDEX[folder], number])
        image, grey, instances = render_smear(rng, _image_classes(rng, folder))
        image_rel = pathlib.PurePosixPath(DATABASE, "Main Dataset", folder, f"{number}.bmp")
        mask_rel = pathlib.PurePosixPath(DATABASE, "Ground Truth Segmentation", folder, "areaforexpert1",
                                         f"{number}_expert.bmp")
        write_bmp(out_dir / image_rel, image)
        write_bmp(out_dir / mask_rel, grey[MASK_PAD:-MASK_PAD, MASK_PAD:-MASK_PAD])
        images.append({"folder": folder, "number": number, "image": str(image_rel), "mask": str(mask_rel),
                       "instances": instances})
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "mrcnn_tf synthetic LISC", "version": 1, "seed": int(seed),
                "per_class": int(per_class), "mixt": int(mixt), "image_shape": list(IMAGE_SHAPE),
                "mask_pad": MASK_PAD, "class_names": ["BG", *CLASS_NAMES], "images": images}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest

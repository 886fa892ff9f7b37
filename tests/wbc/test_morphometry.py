"""Per-cell morphometry against known answers: discs, concentric nuclei, lobed nuclei, two-colour images."""
import csv
import json
import math

import numpy as np
import pytest

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.wbc import morphometry
from mrcnn_tf.wbc.morphometry import (CELL_COLUMNS, append_cells_csv, geojson_features, measure_cell,
                                      measure_cells, nucleus_lobes, write_cells_csv, write_geojson)

SHAPE = (96, 96)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Overrides conftest's Keras seeding: nothing here uses TensorFlow, whose import alone takes seconds."""


def disc(center, radius, shape=SHAPE):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2


def lobes(centers, radius, bridge_width):
    """Discs joined in a chain by straight strands `bridge_width` px wide (a square brush along the line)."""
    mask = np.zeros(SHAPE, bool)
    for center in centers:
        mask |= disc(center, radius)
    for (r0, c0), (r1, c1) in zip(centers, centers[1:]):
        for t in np.linspace(0, 1, 200):
            r, c = round(r0 + t * (r1 - r0)), round(c0 + t * (c1 - c0))
            mask[r:r + bridge_width, c:c + bridge_width] = True
    return mask


def shoelace(ring):
    xy = np.asarray(ring, float)
    return 0.5 * float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))


def blank():
    return np.zeros(SHAPE + (3,), np.uint8)


@pytest.mark.parametrize("radius", [20, 30, 40])  # below ~20 px the pixel grid, not the code, misses 2%
def test_a_disc_has_the_closed_form_area_perimeter_and_diameter(radius):
    m = measure_cell(blank(), disc((48, 48), radius))
    assert m["unit"] == "px"
    assert m["cell_area"] == pytest.approx(math.pi * radius ** 2, rel=0.02)
    assert m["cell_perimeter"] == pytest.approx(2 * math.pi * radius, rel=0.05)
    assert 0.85 < m["cell_circularity"] <= 1
    assert m["cell_equivalent_diameter"] == pytest.approx(2 * radius, rel=0.01)
    assert "nc_ratio" not in m and "nucleus_lobes" not in m  # no nucleus given, no nucleus measures


@pytest.mark.parametrize("height, width", [(40, 40), (8, 64)])
def test_rectangles_are_less_circular_than_discs(height, width):
    box = np.zeros(SHAPE, bool)
    box[10:10 + height, 10:10 + width] = True
    m = measure_cell(blank(), box)
    assert m["cell_area"] == height * width
    # Crofton's estimate reads straight axis-aligned edges ~6% short (and a disc's outline within 2%).
    assert m["cell_perimeter"] == pytest.approx(2 * (height + width), rel=0.07)
    assert m["cell_circularity"] < measure_cell(blank(), disc((48, 48), 22))["cell_circularity"] - 0.05
    assert m["cell_circularity"] == pytest.approx(4 * math.pi * height * width / (2 * (height + width)) ** 2,
                                                  rel=0.15)


@pytest.mark.parametrize("r_cell, r_nucleus", [(40, 20), (40, 30), (30, 12)])
def test_concentric_nucleus_gives_the_squared_radius_ratio(r_cell, r_nucleus):
    cell, nucleus = disc((48, 48), r_cell), disc((48, 48), r_nucleus)
    m = measure_cell(blank(), cell, nucleus)
    assert m["nc_ratio"] == pytest.approx((r_nucleus / r_cell) ** 2, rel=0.03)
    assert m["nc_ratio"] == nucleus.sum() / cell.sum()  # the plain numpy definition, exactly
    assert m["nucleus_cytoplasm_ratio"] == nucleus.sum() / (cell.sum() - nucleus.sum())
    assert m["nucleus_area"] == nucleus.sum() and m["nucleus_lobes"] == 1
    assert m["nucleus_circularity"] > 0.85


@pytest.mark.parametrize("mask, expected", [
    (disc((48, 48), 12), 1),
    (lobes([(48, 26), (48, 70)], 11, bridge_width=1), 2),
    (lobes([(48, 26), (48, 70)], 11, bridge_width=2), 2),
    (lobes([(20, 48), (48, 48), (76, 48)], 10, bridge_width=2), 3),  # vertical chain
    (lobes([(24, 24), (24, 72), (72, 48)], 10, bridge_width=1), 3),
    (disc((48, 38), 14) | disc((48, 58), 14), 1),  # a peanut: a broad waist is one lobe (a band), not two
    (disc((48, 48), 14) | disc((10, 10), 1), 1),  # a 5-px speck is not a lobe
], ids=["disc", "two-bridge1", "two-bridge2", "three-vertical", "three-triangle", "peanut", "speck"])
def test_lobes(mask, expected):
    assert nucleus_lobes(mask) == expected
    assert measure_cell(blank(), np.ones(SHAPE, bool), mask)["nucleus_lobes"] == expected


def test_lobe_opening_scales_with_the_nucleus():
    # Lobes of radius 20 joined by a 4-px strand: a fixed 1-px opening would keep it whole; scaled, it splits.
    big = np.zeros((160, 160), bool)
    big |= disc((80, 35), 20, shape=(160, 160)) | disc((80, 125), 20, shape=(160, 160))
    big[78:82, 35:126] = True
    assert nucleus_lobes(big) == 2
    big[70:90, 35:126] = True  # a strand half a lobe wide: a band's body, one lobe
    assert nucleus_lobes(big) == 1
    assert nucleus_lobes(np.zeros(SHAPE, bool)) == 0


def test_nucleus_outside_the_cell_is_clipped():
    cell, nucleus = disc((48, 48), 20), disc((48, 68), 12)  # half the nucleus pokes out
    m = measure_cell(blank(), cell, nucleus)
    inside = nucleus & cell
    assert inside.sum() < nucleus.sum()
    assert m["nucleus_area"] == inside.sum()
    assert m == measure_cell(blank(), cell, inside)


def test_pixel_size_scales_lengths_and_areas():
    cell, nucleus = disc((48, 48), 30), disc((48, 48), 15)
    px = measure_cell(blank(), cell, nucleus)
    um = measure_cell(blank(), cell, nucleus, pixel_size=0.25)
    assert px["unit"] == "px" and um["unit"] == "um"
    for key in ("cell_area", "nucleus_area"):
        assert um[key] == pytest.approx(px[key] * 0.0625)
    for key in ("cell_perimeter", "nucleus_perimeter", "cell_equivalent_diameter"):
        assert um[key] == pytest.approx(px[key] * 0.25)
    for key in ("cell_circularity", "nucleus_circularity", "nc_ratio", "nucleus_cytoplasm_ratio", "nucleus_lobes",
                "nucleus_mean_rgb"):
        assert um[key] == px[key]


def test_mean_colours_on_a_two_colour_image():
    image = blank()
    image[:, :48] = (200, 40, 90)
    image[:, 48:] = (10, 20, 250)
    cell, nucleus = disc((48, 48), 30), disc((48, 30), 10)  # the nucleus lies in the left colour only
    m = measure_cell(image, cell, nucleus)
    assert m["nucleus_mean_rgb"] == (200.0, 40.0, 90.0)
    cytoplasm = cell & ~nucleus
    assert m["cytoplasm_mean_rgb"] == pytest.approx(tuple(image[cytoplasm].mean(axis=0)), abs=1e-9)
    right_only = cell & (np.arange(96) >= 48)[None, :]
    assert measure_cell(image, cell, cell & ~right_only)["cytoplasm_mean_rgb"] == (10.0, 20.0, 250.0)


def test_empty_parts_give_none_and_grey_images_read_as_rgb():
    grey = np.full(SHAPE, 77, np.uint8)
    cell = disc((48, 48), 20)
    full = measure_cell(grey, cell, cell)  # the nucleus fills the cell: no cytoplasm
    assert full["cytoplasm_mean_rgb"] is None and full["nucleus_cytoplasm_ratio"] is None
    assert full["nc_ratio"] == 1 and full["nucleus_mean_rgb"] == (77.0, 77.0, 77.0)
    none = measure_cell(grey, cell, np.zeros(SHAPE, bool))
    assert none["nucleus_mean_rgb"] is None and none["nucleus_lobes"] == 0 and none["nc_ratio"] == 0
    assert none["nucleus_circularity"] is None and none["cytoplasm_mean_rgb"] == (77.0, 77.0, 77.0)


def test_bad_input_raises_one_line_errors():
    with pytest.raises(MrcnnError, match="cell mask is empty") as empty:
        measure_cell(blank(), np.zeros(SHAPE, bool))
    with pytest.raises(MrcnnError, match=r"cell mask has shape \(10, 10\) but the image is \(96, 96\)") as shape:
        measure_cell(blank(), np.ones((10, 10), bool))
    with pytest.raises(MrcnnError, match="nucleus mask has shape"):
        measure_cell(blank(), disc((48, 48), 9), np.ones((10, 10), bool))
    with pytest.raises(MrcnnError, match="pixel_size -1"):
        measure_cell(blank(), disc((48, 48), 9), pixel_size=-1)
    with pytest.raises(MrcnnError, match=r"cell 2: cell mask is empty"):
        measure_cells(blank(), np.stack([disc((48, 48), 9), np.zeros(SHAPE, bool)], axis=-1))
    with pytest.raises(MrcnnError, match="expected \\[H, W, N\\]"):
        measure_cells(blank(), disc((48, 48), 9))
    with pytest.raises(MrcnnError, match=r"nucleus masks have shape \(96, 96, 2\), the cell masks \(96, 96, 1\)"):
        measure_cells(blank(), disc((48, 48), 9)[..., None], np.zeros(SHAPE + (2,), bool))
    for error in (empty.value, shape.value):
        assert "\n" not in str(error)


def test_measure_cells_numbers_the_cells_and_accepts_none():
    cells = np.stack([disc((30, 30), 15), disc((66, 66), 20)], axis=-1)
    nuclei = np.stack([disc((30, 30), 5), disc((66, 66), 8)], axis=-1)
    rows = measure_cells(blank(), cells, nuclei, pixel_size=0.5)
    assert [row["cell_id"] for row in rows] == [1, 2]
    for i, row in enumerate(rows):
        assert row == {"cell_id": i + 1, **measure_cell(blank(), cells[..., i], nuclei[..., i], pixel_size=0.5)}
    assert measure_cells(blank(), np.zeros(SHAPE + (0,), bool)) == []
    assert measure_cells(blank(), np.zeros(SHAPE + (0,), bool), np.zeros(SHAPE + (0,), bool)) == []


def table_rows():
    image = blank()
    image[:, :48] = (200, 40, 90)
    cells = np.stack([disc((30, 30), 15), disc((66, 66), 20)], axis=-1)
    nuclei = np.stack([disc((30, 30), 5), np.zeros(SHAPE, bool)], axis=-1)
    rows = measure_cells(image, cells, nuclei)
    boxes = [(15, 15, 46, 46), (46, 46, 87, 87)]
    for row, kind, score, (y1, x1, y2, x2) in zip(rows, ["Neutrophil", "Lymphocyte"], [0.98765, 0.5], boxes):
        row.update(image="smear 1.png", type=kind, score=score, y1=y1, x1=x1, y2=y2, x2=x2)
    return rows


def assert_same(field, value):
    if value is None:
        assert field == ""
    elif isinstance(value, str):
        assert field == value
    else:
        assert float(field) == pytest.approx(value, abs=5e-5)


def test_csv_round_trip(tmp_path):
    rows = table_rows()
    path = tmp_path / "cells.csv"
    path.write_text("stale\n")
    assert write_cells_csv(path, rows) == 2  # replaces the old file
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        back = list(reader)
    assert tuple(reader.fieldnames) == CELL_COLUMNS
    assert len(back) == 2
    for row, read in zip(rows, back):
        for column in CELL_COLUMNS:
            if column[-2:] in ("_r", "_g", "_b"):
                triple = row[column[:-2] + "_rgb"]
                value = None if triple is None else triple["rgb".index(column[-1])]
            else:
                value = row.get(column)
            assert_same(read[column], value)
    assert back[0]["nucleus_mean_r"] == "200" and back[0]["score"] == "0.9877"
    assert back[1]["nucleus_mean_r"] == "" and back[1]["nucleus_lobes"] == "0"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]  # no temp file left behind


def test_append_writes_the_header_once(tmp_path):
    path = tmp_path / "cells.csv"
    rows = table_rows()
    assert append_cells_csv(path, rows[:1]) == 1
    assert append_cells_csv(path, rows[1:]) == 1
    assert append_cells_csv(path, []) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0] == ",".join(CELL_COLUMNS)
    with open(path, newline="") as f:
        assert [row["cell_id"] for row in csv.DictReader(f)] == ["1", "2"]
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(MrcnnError, match="not a per-cell table"):
        append_cells_csv(other, rows)
    with pytest.raises(MrcnnError, match="does not exist"):
        write_cells_csv(tmp_path / "missing" / "cells.csv", rows)


def test_geojson_polygons_follow_the_masks():
    block = np.zeros(SHAPE, bool)
    block[10:20, 30:50] = True  # rows 10-19, columns 30-49
    edge = disc((0, 95), 25)  # cut by the image's top and right borders
    two_parts = disc((60, 30), 14) | disc((85, 85), 4)  # the small part is dropped
    cells = np.stack([disc((48, 48), 30), block, edge, two_parts], axis=-1)
    features = geojson_features(cells)
    for i, feature in enumerate(features):
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) >= 4
        assert shoelace(ring) > 0  # counter-clockwise in (x, y)
        reference = disc((60, 30), 14).sum() if i == 3 else cells[..., i].sum()
        assert shoelace(ring) == pytest.approx(reference, rel=0.05)
        assert "nucleusGeometry" not in feature
        assert feature["properties"] == {"objectType": "cell", "measurements": {}}
    xs, ys = np.asarray(features[1]["geometry"]["coordinates"][0]).T
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (30, 50, 10, 20)  # along pixel edges, QuPath's frame


def test_geojson_cells_carry_nucleus_class_and_measurements(tmp_path):
    cells = np.stack([disc((30, 30), 15), disc((66, 66), 20)], axis=-1)
    nuclei = np.stack([disc((30, 36), 8), np.zeros(SHAPE, bool)], axis=-1)  # cell 2 has no nucleus
    rows = table_rows()
    rows[1]["color"] = (1, 2, 3)
    features = geojson_features(cells, nuclei, rows)
    first, second = features
    nucleus_ring = first["nucleusGeometry"]["coordinates"][0]
    assert first["nucleusGeometry"]["type"] == "Polygon" and nucleus_ring[0] == nucleus_ring[-1]
    assert shoelace(nucleus_ring) == pytest.approx((nuclei[..., 0] & cells[..., 0]).sum(), rel=0.05)
    assert "nucleusGeometry" not in second
    properties = first["properties"]
    assert properties["objectType"] == "cell"
    assert properties["classification"]["name"] == "Neutrophil"
    assert len(properties["classification"]["color"]) == 3
    assert second["properties"]["classification"] == {"name": "Lymphocyte", "color": [1, 2, 3]}
    measurements = properties["measurements"]
    assert measurements["nc_ratio"] == rows[0]["nc_ratio"] and measurements["score"] == 0.98765
    assert measurements["nucleus_mean_r"] == 200 and "nucleus_mean_rgb" not in measurements
    assert all(isinstance(v, float) for v in measurements.values())
    assert "nucleus_mean_r" not in second["properties"]["measurements"]  # None is left out
    assert properties["metadata"] == {"image": "smear 1.png", "unit": "px"}
    json.dumps(features, allow_nan=False)
    path = tmp_path / "cells.geojson"
    assert write_geojson(path, features) == 2
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"] == features
    with pytest.raises(MrcnnError, match="1 property dicts for 2 cells"):
        geojson_features(cells, nuclei, rows[:1])
    with pytest.raises(MrcnnError, match="cell 1: cell mask is empty"):
        geojson_features(np.zeros(SHAPE + (1,), bool))
    assert geojson_features(np.zeros(SHAPE + (0,), bool)) == []


def test_class_colours_are_fixed_by_the_name():
    cells = np.stack([disc((30, 30), 9), disc((66, 66), 9)], axis=-1)
    features = geojson_features(cells, properties=[{"type": "Monocyte"}, {"type": "Monocyte"}])
    assert features[0]["properties"]["classification"] == features[1]["properties"]["classification"]
    assert features[0]["properties"]["classification"]["color"] in [list(c) for c in morphometry._PALETTE]


def test_cell_table_rows_keep_every_detection_and_measure_its_nucleus(tmp_path):
    from mrcnn_tf.wbc.morphometry import CellTable

    image = np.full((40, 60, 3), 200, np.uint8)
    yy, xx = np.mgrid[:40, :60]
    cell = (yy - 20) ** 2 + (xx - 20) ** 2 < 100
    nucleus = (yy - 20) ** 2 + (xx - 20) ** 2 < 25
    masks = np.stack([cell, np.zeros_like(cell)], -1)  # the second detection's mask came out empty
    result = {"rois": np.array([[10, 10, 30, 30], [5, 40, 9, 44]]), "class_ids": np.array([5, 2]),
              "scores": np.array([0.9, 0.2]), "masks": masks, "nucleus_masks": np.stack([nucleus, nucleus], -1)}
    table = CellTable(["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"], geojson=True)
    rows = table.rows("a.png", image, result)
    assert [(r["cell_id"], r["type"], r["y2"]) for r in rows] == [(1, "Neutrophil", 30), (2, "Eosinophil", 9)]
    assert rows[0]["nc_ratio"] == pytest.approx(nucleus.sum() / cell.sum())
    assert rows[1]["cell_area"] == 0.0 and "nc_ratio" not in rows[1]
    json.dumps(rows)  # journal records hold them
    assert table.write_geojson(tmp_path / "a.geojson", result, rows) == 1  # the empty mask has no outline
    assert table.write(tmp_path / "cells.csv", rows) == 2
    with pytest.raises(MrcnnError):
        CellTable(["BG"], pixel_size=-1.0)

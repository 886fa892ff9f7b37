"""The synthetic LISC generator: layout, formats, grey coding, determinism, distinct looks, speed."""
import hashlib
import json
import pathlib
import struct
import time

import numpy as np
import pytest
from PIL import Image

from mrcnn_tf.wbc import synth
from mrcnn_tf.data.lisc_format import CYTOPLASM_LEVEL, GREY_LEVELS, MASK_PAD, NUCLEUS_LEVEL

FOLDERS = ("Baso", "eosi", "lymp", "mono", "neut", "mixt")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, synth.write_lisc(out, per_class=2, mixt=2, seed=7)


def _digests(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


def _bmp_header(path):
    data = pathlib.Path(path).read_bytes()[:30]
    width, height, planes, bits = struct.unpack("<iiHH", data[18:30])
    return data[:2], width, height, bits


def test_layout_and_formats(tree):
    out, manifest = tree
    root = out / "LISC Database"
    for folder in FOLDERS:
        count = 2
        for n in range(1, count + 1):
            image = root / "Main Dataset" / folder / f"{n}.bmp"
            mask = root / "Ground Truth Segmentation" / folder / "areaforexpert1" / f"{n}_expert.bmp"
            assert _bmp_header(image) == (b"BM", 720, 576, 24)
            assert _bmp_header(mask) == (b"BM", 712, 568, 8)
            with Image.open(image) as img:
                assert img.size == (720, 576) and img.mode == "RGB"
            with Image.open(mask) as img:
                assert img.size == (712, 568)
    assert len(manifest["images"]) == 5 * 2 + 2
    assert json.loads((out / "synth_manifest.json").read_text()) == manifest


def test_grey_codes_match_manifest(tree):
    out, manifest = tree
    for entry in manifest["images"]:
        with Image.open(out / entry["mask"]) as img:
            grey = np.asarray(img.convert("L"))
        padded = np.pad(grey, MASK_PAD)
        assert set(np.unique(grey)) <= set(GREY_LEVELS) | {0}
        covered = 0
        for inst in entry["instances"]:
            y1, x1, y2, x2 = inst["bbox"]
            assert MASK_PAD <= y1 < y2 <= 576 - MASK_PAD and MASK_PAD <= x1 < x2 <= 720 - MASK_PAD
            window = padded[y1:y2, x1:x2]
            cid = inst["class_id"]
            levels = set(np.unique(window)) - {0}
            assert levels == {CYTOPLASM_LEVEL[cid], NUCLEUS_LEVEL[cid]}
            assert np.count_nonzero(window) == inst["area"]
            assert np.count_nonzero(window == NUCLEUS_LEVEL[cid]) == inst["nucleus_area"]
            covered += inst["area"]
        assert covered == np.count_nonzero(grey)  # nothing labelled outside the listed cells
        if entry["folder"] == "mixt":
            assert len({i["class_id"] for i in entry["instances"]}) >= 2
        else:
            assert {i["class_id"] for i in entry["instances"]} == {FOLDERS.index(entry["folder"]) + 1}


def test_deterministic_for_a_seed(tree, tmp_path):
    out, _ = tree
    synth.write_lisc(tmp_path / "again", per_class=2, mixt=2, seed=7)
    assert _digests(tmp_path / "again") == _digests(out)
    synth.write_lisc(tmp_path / "other", per_class=1, mixt=0, seed=8)
    first = "LISC Database/Main Dataset/Baso/1.bmp"
    assert _digests(tmp_path / "other")[first] != _digests(out)[first]
    # An image depends on (seed, folder, number) only, not on how many were asked for.
    synth.write_lisc(tmp_path / "fewer", per_class=1, mixt=0, seed=7)
    assert _digests(tmp_path / "fewer")[first] == _digests(out)[first]


def _stats(class_id, seeds=range(4)):
    rows = []
    for seed in seeds:
        image, grey, instances = synth.render_smear(np.random.default_rng(seed), [class_id])
        cell = grey > 0
        nucleus = grey == NUCLEUS_LEVEL[class_id]
        rgb = image.astype(float)
        cytoplasm = cell & ~nucleus if class_id != 1 else cell
        rows.append(dict(area=cell.sum(), nucleus_share=nucleus.sum() / cell.sum(),
                         brightness=rgb[cell].mean(), red_minus_blue=(rgb[cytoplasm, 0] - rgb[cytoplasm, 2]).mean()))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def test_each_type_has_its_own_look():
    s = {cid: _stats(cid) for cid in range(1, 6)}
    # Lymphocyte: small, nucleus fills most of it; monocyte: the largest.
    assert s[3]["nucleus_share"] > 0.5 > max(s[c]["nucleus_share"] for c in (2, 4, 5))
    assert s[3]["area"] < min(s[c]["area"] for c in (2, 4, 5))
    assert s[4]["area"] > max(s[c]["area"] for c in (1, 2, 3, 5))
    # Basophil: the darkest cell; eosinophil: orange-red granular cytoplasm.
    assert s[1]["brightness"] < min(s[c]["brightness"] for c in (2, 3, 4, 5))
    assert s[2]["red_minus_blue"] > max(s[c]["red_minus_blue"] for c in (1, 3, 4, 5)) + 20


def test_neutrophil_lobes_and_kidney_monocyte():
    from scipy import ndimage

    for seed in range(3):
        _, grey, _ = synth.render_smear(np.random.default_rng(seed), [5])
        nucleus = grey == NUCLEUS_LEVEL[5]
        # Lobes joined by thin strands: an opening removes the strands and leaves 3-5 pieces.
        opened = ndimage.binary_opening(nucleus, structure=np.ones((5, 5)))
        assert 3 <= ndimage.label(opened)[1] <= 5
        _, grey, _ = synth.render_smear(np.random.default_rng(seed), [4])
        nucleus = grey == NUCLEUS_LEVEL[4]
        hull_share = nucleus.sum() / ndimage.binary_fill_holes(grey > 0).sum()
        assert 0.15 < hull_share < 0.6


def test_fast_enough(tmp_path):
    start = time.perf_counter()
    synth.write_lisc(tmp_path, per_class=5, mixt=5, seed=0)
    # 30 images; ~1 s on one core, generous for a shared CI machine.
    assert time.perf_counter() - start < 20


def test_rejects_negative_counts(tmp_path):
    with pytest.raises(ValueError):
        synth.write_lisc(tmp_path, per_class=-1)


@pytest.mark.parametrize("shape", [(5, 7, 3), (3, 5), (4, 8, 3), (1, 1)])
def test_write_bmp_round_trips_odd_sizes(tmp_path, shape):
    from mrcnn_tf.data.lisc_format import read_grey_mask, read_image, write_bmp

    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    write_bmp(tmp_path / "x.bmp", array)
    with Image.open(tmp_path / "x.bmp") as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB" if len(shape) == 3 else "L")), array)
    reader = read_image if len(shape) == 3 else read_grey_mask
    np.testing.assert_array_equal(reader(tmp_path / "x.bmp"), array)

"""LiscDataset on synthetic trees: instances and types, split, WBC layout, every bad-input path, fuzzing."""
import pathlib
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from mrcnn_tf.wbc import synth
from mrcnn_tf.data import lisc_format as fmt
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.lisc import LiscConfig, LiscDataset, split_subset
from mrcnn_tf.ops.boxes import extract_bboxes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("lisc")
    return out, synth.write_lisc(out, per_class=3, mixt=2, seed=11)


@pytest.fixture
def small(tmp_path):
    """A small writable tree (2 per folder) in a path with a space and non-ASCII letters."""
    out = tmp_path / "my data ü"
    synth.write_lisc(out, per_class=2, mixt=0, seed=3)
    return out / "LISC Database"


def _load(path, subset="all", **kwargs):
    dataset = LiscDataset()
    dataset.load_lisc(path, subset, **kwargs)
    dataset.prepare()
    return dataset


def _truth(manifest, key):
    return {f"{e['folder']}/{e['number']}": sorted((i["class_id"], i[key]) for i in e["instances"])
            for e in manifest["images"]}


@pytest.mark.parametrize("instance, key", [("cell", "bbox"), ("nucleus", "nucleus_bbox")])
def test_instances_and_types_match_the_generator(tree, instance, key):
    out, manifest = tree
    dataset = _load(out, instance=instance)
    truth = _truth(manifest, key)
    assert sorted(info["id"] for info in dataset.image_info) == sorted(truth)
    assert dataset.class_names == ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        assert image.shape == (576, 720, 3) and image.dtype == np.uint8
        assert masks.shape == (576, 720, len(class_ids)) and masks.dtype == bool and class_ids.dtype == np.int32
        got = sorted(zip(class_ids.tolist(), extract_bboxes(masks).tolist()))
        info = dataset.image_info[image_id]
        assert got == truth[info["id"]], info["id"]
        assert sorted(info["class_ids"]) == sorted(c for c, _ in truth[info["id"]])
    mixt = [i for i in dataset.image_info if i["folder"] == "mixt"]
    assert len(mixt) == 2 and all(len(set(i["class_ids"])) >= 2 for i in mixt)


def test_dataset_dir_forms(tree):
    out, _ = tree
    for path in (out, out / "LISC Database", str(out / "LISC Database")):
        assert _load(path).num_images == 17


def test_split_is_stratified_deterministic_and_complete(tree):
    out, _ = tree
    train, val, whole = _load(out, "train"), _load(out, "val"), _load(out, "all")
    train_ids = {i["id"] for i in train.image_info}
    val_ids = {i["id"] for i in val.image_info}
    assert not train_ids & val_ids and train_ids | val_ids == {i["id"] for i in whole.image_info}
    # Every folder (3 images, or 2 for mixt) gives round(0.2 * n) -> at least one to val and keeps one.
    for folder in ("Baso", "eosi", "lymp", "mono", "neut", "mixt"):
        assert sum(i.startswith(folder + "/") for i in val_ids) == 1
    assert {i["id"] for i in _load(out, "val").image_info} == val_ids
    seeds = {frozenset(i["id"] for i in _load(out, "val", seed=s, verify=False).image_info) for s in range(6)}
    assert len(seeds) > 1


def test_split_reference_on_plain_entries():
    entries = [{"id": f"{f}/{n}", "folder": f, "digest": f"{f}{n}"} for f in "ab" for n in range(10)]
    val = split_subset(entries, "val", 0.3, seed=5)
    train = split_subset(entries, "train", 0.3, seed=5)
    assert sorted(val + train) == list(range(20))
    assert [entries[i]["folder"] for i in val].count("a") == 3 and len(val) == 6
    assert split_subset(entries, "val", 0.0, seed=5) == []
    # Folder 'a' splits the same whatever folder 'b' holds.
    fewer = entries[:10] + entries[10:12]
    assert [i for i in split_subset(fewer, "val", 0.3, seed=5) if i < 10] == [i for i in val if i < 10]


def test_byte_identical_images_share_a_split(small):
    main, truth = small / "Main Dataset", small / "Ground Truth Segmentation"
    for folder in ("Baso", "neut"):
        for n in (3, 4, 5):
            shutil.copy(main / folder / "1.bmp", main / folder / f"{n}.bmp")
            shutil.copy(truth / folder / "areaforexpert1" / "1_expert.bmp",
                        truth / folder / "areaforexpert1" / f"{n}_expert.bmp")
    for seed in range(8):
        val = {i["id"] for i in _load(small, "val", seed=seed, verify=False).image_info}
        for folder in ("Baso", "neut"):
            copies = {f"{folder}/{n}" in val for n in (1, 3, 4, 5)}
            assert len(copies) == 1


def test_non_image_files_are_ignored_silently(small):
    for folder in (small / "Main Dataset" / "Baso", small / "Ground Truth Segmentation" / "Baso" / "areaforexpert1"):
        (folder / "Thumbs.db").write_bytes(b"\x00junk")
        (folder / "desktop.ini").write_text("[x]")
        (folder / ".DS_Store").write_bytes(b"\x00")
        (folder / "notes.txt").write_text("hello")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(small).num_images == 10


def _mask_path(root, folder="Baso", n=1):
    return root / "Ground Truth Segmentation" / folder / "areaforexpert1" / f"{n}_expert.bmp"


def test_unknown_grey_level_names_file_and_value(small):
    path = _mask_path(small, "lymp", 2)
    grey = fmt.read_grey_mask(path)
    grey[10, 20] = 60
    fmt.write_bmp(path, grey)
    with pytest.raises(DatasetError, match=r"2_expert\.bmp: unknown grey level\(s\) 60 \(first at row 10, column 20\)"):
        _load(small)


def test_mask_of_wrong_size(small):
    path = _mask_path(small, "mono", 1)
    fmt.write_bmp(path, np.zeros((500, 700), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"1_expert\.bmp: mask is 700x500 .* must be 712x568"):
        _load(small)


def test_missing_folders(tmp_path, small):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        _load(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no LISC data found"):
        _load(tmp_path)
    shutil.rmtree(small / "Ground Truth Segmentation")
    with pytest.raises(DatasetError, match="no 'Ground Truth Segmentation'"):
        _load(small)
    shutil.rmtree(small / "Main Dataset")
    (small / "Ground Truth Segmentation").mkdir()
    with pytest.raises(DatasetError, match="no 'Main Dataset'"):
        _load(small)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty"])
def test_unreadable_image_names_the_file(small, damage):
    path = small / "Main Dataset" / "eosi" / "2.bmp"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 3], "text": b"not an image\n", "empty": b""}[damage])
    with pytest.raises(DatasetError, match=r"eosi/2\.bmp: cannot read image"):
        _load(small)


def test_unreadable_mask_names_the_file(small):
    path = _mask_path(small, "neut", 2)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"2_expert\.bmp: cannot read mask"):
        _load(small)


def test_image_without_mask(small):
    _mask_path(small, "Baso", 2).unlink()
    with pytest.warns(UserWarning, match=r"Baso/2\.bmp: no mask at"):
        dataset = _load(small)
    assert dataset.num_images == 9
    with pytest.raises(DatasetError, match=r"Baso/2\.bmp: no mask at .*2_expert\.bmp"):
        _load(small, on_missing_mask="error")


def test_empty_mask_gives_no_instance(small):
    fmt.write_bmp(_mask_path(small, "eosi", 1), np.zeros((568, 712), dtype=np.uint8))
    dataset = _load(small)
    index = [i["id"] for i in dataset.image_info].index("eosi/1")
    masks, class_ids = dataset.load_mask(index)
    assert masks.shape == (576, 720, 0) and class_ids.shape == (0,)
    assert dataset.image_info[index]["class_ids"] == []


def test_grey_rgba_and_16bit_images_are_converted(small, tmp_path):
    rgb = fmt.read_image(small / "Main Dataset" / "lymp" / "1.bmp")
    grey = rgb.mean(axis=2).astype(np.uint8)
    Image.fromarray(grey, "L").save(small / "Main Dataset" / "lymp" / "1.bmp")
    (small / "Main Dataset" / "lymp" / "2.bmp").unlink()
    Image.fromarray(np.dstack([rgb, np.full(grey.shape, 7, np.uint8)]), "RGBA").save(
        small / "Main Dataset" / "lymp" / "2.png")
    dataset = _load(small)
    ids = [i["id"] for i in dataset.image_info]
    assert np.array_equal(dataset.load_image(ids.index("lymp/1")), np.dstack([grey] * 3))
    assert np.array_equal(dataset.load_image(ids.index("lymp/2")), rgb)
    wide = (grey.astype(np.uint16) * 257)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert np.array_equal(fmt.read_image(tmp_path / "wide.png"), np.dstack([grey] * 3))


def _write_wbc(root, parts=("train", "val")):
    """A WBC-layout tree: <part>/{image,mask}/<Class>/<Class>_NN.png with binary masks."""
    expected = {}
    for p, part in enumerate(parts):
        for class_id, name in enumerate(fmt.CLASS_NAMES, start=1):
            for n in range(2 if part == "train" else 1):
                image, grey, instances = synth.render_smear(np.random.default_rng([p, class_id, n]), [class_id])
                stem = f"{name}_{n + 1:02d}"
                for kind, array in (("image", image), ("mask", ((grey > 0) * 255).astype(np.uint8))):
                    folder = root / part / kind / name
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(folder / f"{stem}.png", compress_level=1)
                expected[f"{part}/{name}/{stem}"] = sorted((i["class_id"], i["bbox"]) for i in instances)
    return expected


def test_wbc_layout(tmp_path):
    expected = _write_wbc(tmp_path / "WBC")
    for subset in ("train", "val", "all"):
        dataset = _load(tmp_path, subset)
        ids = [i["id"] for i in dataset.image_info]
        assert sorted(ids) == sorted(k for k in expected if subset == "all" or k.startswith(subset))
        for image_id in dataset.image_ids:
            masks, class_ids = dataset.load_mask(image_id)
            assert sorted(zip(class_ids.tolist(), extract_bboxes(masks).tolist())) == expected[ids[image_id]]
    with pytest.raises(DatasetError, match="needs LISC's grey-coded masks"):
        _load(tmp_path, instance="nucleus")
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(tmp_path / "WBC/train/mask/Monocyte/Monocyte_01.png")
    with pytest.raises(DatasetError, match=r"Monocyte_01\.png: mask is 60x50 but its image is 720x576"):
        _load(tmp_path, "train")


def test_bad_arguments(tree):
    out, _ = tree
    for kwargs, message in (({"subset": "test"}, "subset 'test'"), ({"instance": "blob"}, "instance 'blob'"),
                            ({"val_fraction": 1.5}, "val_fraction"), ({"on_missing_mask": "x"}, "on_missing_mask")):
        with pytest.raises(DatasetError, match=message):
            LiscDataset().load_lisc(out, **{"subset": "all", **kwargs})


def test_lisc_config():
    config = LiscConfig()
    assert config.NUM_CLASSES == 6 and list(config.IMAGE_SHAPE) == [512, 512, 3]
    # Cells of 60-135 px, scaled 512/720, all have an anchor size giving a square IoU >= ~0.5.
    for diameter in np.linspace(60, 135, 40) * 512 / 720:
        best = max(min(diameter, s) ** 2 / max(diameter, s) ** 2 for s in config.RPN_ANCHOR_SCALES)
        assert best >= 0.49
    assert config.MAX_GT_INSTANCES >= 6 and config.DETECTION_MAX_INSTANCES >= config.MAX_GT_INSTANCES


# ---------------------------------------------------------------------------------------- fuzzing
LEVELS = st.sampled_from([0, 0, 0, *fmt.GREY_LEVELS])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grey=arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)),
                   elements=st.one_of(LEVELS, st.integers(0, 255))),
       nucleus=st.booleans(), min_area=st.integers(0, 5))
def test_fuzz_mask_decoder(grey, nucleus, min_area):
    try:
        masks, class_ids = fmt.decode_lisc_mask(grey, "fuzz.bmp", nucleus=nucleus, min_area=min_area)
    except DatasetError as exc:
        assert "fuzz.bmp" in str(exc) and not np.isin(grey, [0, *fmt.GREY_LEVELS]).all()
        return
    assert masks.shape == grey.shape + (class_ids.size,) and masks.dtype == bool
    # Instances never overlap, lie on labelled pixels, and each holds one type's levels only.
    assert masks.sum(axis=2).max(initial=0) <= 1
    for i, class_id in enumerate(class_ids):
        levels = set(np.unique(grey[masks[:, :, i]]))
        assert levels and levels <= {fmt.CYTOPLASM_LEVEL[class_id], fmt.NUCLEUS_LEVEL[class_id]}
    if not nucleus and min_area <= 1:
        assert np.array_equal(masks.any(axis=2), grey > 0)


@pytest.fixture(scope="module")
def valid_bmp(tmp_path_factory):
    path = tmp_path_factory.mktemp("bmp") / "v.bmp"
    fmt.write_bmp(path, np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8))
    return path.read_bytes()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_image_reader(tmp_path, valid_bmp, data):
    blob = data.draw(st.one_of(
        st.binary(max_size=200),
        # A valid BMP with a few bytes changed or cut short: reaches the decoder, not only the sniffing.
        st.lists(st.tuples(st.integers(0, len(valid_bmp) - 1), st.integers(0, 255)), max_size=6).map(
            lambda edits: bytes(_edit(valid_bmp, edits))),
        st.integers(0, len(valid_bmp)).map(lambda n: valid_bmp[:n])))
    path = tmp_path / "fuzz image.bmp"
    path.write_bytes(blob)
    for reader in (fmt.read_image, fmt.read_grey_mask):
        try:
            array = reader(path)
        except DatasetError as exc:
            assert "fuzz image.bmp" in str(exc)
            continue
        assert array.dtype == np.uint8 and array.ndim == (3 if reader is fmt.read_image else 2)


def _edit(data, edits):
    data = bytearray(data)
    for offset, value in edits:
        data[offset] = value
    return data


def test_paths_are_pathlib_friendly(small):
    dataset = _load(pathlib.Path(small))
    assert all(" " in str(i["path"]) and "ü" in str(i["path"]) for i in dataset.image_info)
    assert dataset.image_reference(0).endswith(".bmp")


# ---------------------------------------------------------------------------------------- nucleus masks
def _draw_cells():
    """A hand-drawn LISC mask (568x712, LISC's grey codes) and, per cell, (class id, cell, nucleus) in mask pixels."""
    grey = np.zeros((568, 712), np.uint8)
    cells = []

    def cell(class_id, box, nucleus_boxes):
        y1, x1, y2, x2 = box
        grey[y1:y2, x1:x2] = fmt.CYTOPLASM_LEVEL[class_id]
        whole, nucleus = np.zeros(grey.shape, bool), np.zeros(grey.shape, bool)
        whole[y1:y2, x1:x2] = True
        for ny1, nx1, ny2, nx2 in nucleus_boxes:
            grey[ny1:ny2, nx1:nx2] = fmt.NUCLEUS_LEVEL[class_id]
            nucleus[ny1:ny2, nx1:nx2] = True
        cells.append((class_id, whole, nucleus))

    cell(1, (20, 20, 60, 60), [])  # Basophil: one level (50); its nucleus is the whole cell
    cells[-1] = (1, cells[-1][1], cells[-1][1].copy())
    cell(2, (100, 20, 160, 80), [(110, 30, 130, 50), (140, 60, 155, 78)])  # Eosinophil 75/100, two lobes
    cell(3, (200, 20, 240, 60), [(200, 20, 240, 45)])  # Lymphocyte 125/150, nucleus on the cell's border
    cell(4, (300, 300, 360, 380), [(310, 320, 350, 360)])  # Monocyte 175/200
    cell(5, (400, 500, 460, 560), [(410, 510, 450, 550)])  # Neutrophil 225/255
    cell(2, (20, 600, 60, 650), [])  # an Eosinophil drawn without nucleus pixels: an empty nucleus
    return grey, cells


def test_nucleus_masks_from_grey_codes_exactly(small):
    grey, cells = _draw_cells()
    fmt.write_bmp(_mask_path(small, "eosi", 1), grey)
    dataset = _load(small)
    assert dataset.has_nucleus
    index = [i["id"] for i in dataset.image_info].index("eosi/1")
    masks, class_ids = dataset.load_mask(index)
    nuclei, nucleus_ids = dataset.load_nucleus_mask(index)
    assert nuclei.shape == masks.shape == (576, 720, len(cells)) and nuclei.dtype == bool
    np.testing.assert_array_equal(nucleus_ids, class_ids)
    assert nucleus_ids.dtype == np.int32
    pad = [(fmt.MASK_PAD, fmt.MASK_PAD)] * 2
    want = {(c, np.pad(whole, pad).tobytes()): np.pad(nucleus, pad) for c, whole, nucleus in cells}
    for i in range(len(class_ids)):
        key = (int(class_ids[i]), masks[:, :, i].tobytes())
        assert key in want, f"instance {i} is not a drawn cell"
        np.testing.assert_array_equal(nuclei[:, :, i], want[key])
    assert np.all(nuclei <= masks)
    basophil = list(class_ids).index(1)
    np.testing.assert_array_equal(nuclei[:, :, basophil], masks[:, :, basophil])  # the whole cell
    # instance="nucleus": the instances are the nuclei (no empty one), and each is its own nucleus.
    by_nucleus = _load(small, instance="nucleus")
    masks, class_ids = by_nucleus.load_mask(index)
    nuclei, nucleus_ids = by_nucleus.load_nucleus_mask(index)
    np.testing.assert_array_equal(nuclei, masks)
    np.testing.assert_array_equal(nucleus_ids, class_ids)
    assert len(class_ids) == len(cells) - 1


def test_nucleus_masks_match_the_generator(tree):
    out, manifest = tree
    dataset = _load(out)
    truth = {f"{e['folder']}/{e['number']}": sorted((i["class_id"], i["bbox"], i["nucleus_bbox"])
                                                    for i in e["instances"]) for e in manifest["images"]}
    for image_id in dataset.image_ids:
        masks, class_ids = dataset.load_mask(image_id)
        nuclei, _ = dataset.load_nucleus_mask(image_id)
        got = sorted(zip(class_ids.tolist(), extract_bboxes(masks).tolist(), extract_bboxes(nuclei).tolist()))
        assert got == truth[dataset.image_info[image_id]["id"]]


def test_wbc_layout_has_no_nucleus(tmp_path):
    _write_wbc(tmp_path / "WBC", parts=("train",))
    dataset = _load(tmp_path, "train")
    assert not dataset.has_nucleus and not LiscDataset().has_nucleus
    with pytest.raises(DatasetError, match="WBC layout's masks have no nucleus level"):
        dataset.load_nucleus_mask(0)

"""Dataset: Matterport's registration/prepare API, image loading and the default load_mask."""
import numpy as np
import pytest
import skimage.io

from mrcnn_tf import utils
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.errors import DatasetError, MrcnnError


def cells_dataset():
    ds = Dataset()
    ds.add_class("lisc", 1, "Basophil")
    ds.add_class("lisc", 2, "Eosinophil, eos")
    ds.add_class("lisc", 1, "duplicate ignored")
    ds.add_class("coco", 12, "stop sign,sign")
    ds.add_image("lisc", "Baso/1", "/data/Baso/1.bmp", width=720, height=576)
    ds.add_image("coco", 42, "/coco/42.jpg")
    ds.prepare()
    return ds


def test_class_info_starts_with_bg_and_ignores_duplicates():
    ds = Dataset()
    assert ds.class_info == [{"source": "", "id": 0, "name": "BG"}]
    ds = cells_dataset()
    assert [c["name"] for c in ds.class_info] == ["BG", "Basophil", "Eosinophil, eos", "stop sign,sign"]


def test_source_with_dot_is_rejected():
    with pytest.raises(DatasetError, match="a.b"):
        Dataset().add_class("a.b", 1, "x")


def test_add_image_keeps_kwargs():
    ds = cells_dataset()
    assert ds.image_info[0] == {"id": "Baso/1", "source": "lisc", "path": "/data/Baso/1.bmp",
                                "width": 720, "height": 576}


def test_prepare_builds_matterport_tables():
    ds = cells_dataset()
    assert ds.num_classes == 4 and ds.class_ids.tolist() == [0, 1, 2, 3]
    assert ds.class_names == ["BG", "Basophil", "Eosinophil", "stop sign"]
    assert ds.num_images == 2 and ds.image_ids.tolist() == [0, 1]
    assert ds.class_from_source_map == {".0": 0, "lisc.1": 1, "lisc.2": 2, "coco.12": 3}
    assert ds.image_from_source_map == {"lisc.Baso/1": 0, "coco.42": 1}
    assert ds.sources == ["", "coco", "lisc"]
    assert ds.source_class_ids == {"": [0], "coco": [0, 3], "lisc": [0, 1, 2]}


def test_id_mapping():
    ds = cells_dataset()
    assert ds.map_source_class_id("coco.12") == 3
    assert ds.get_source_class_id(2, "lisc") == 2
    assert ds.get_source_class_id(3, "coco") == 12
    with pytest.raises(DatasetError, match="coco"):
        ds.get_source_class_id(3, "lisc")
    with pytest.raises(DatasetError, match="lisc.9"):
        ds.map_source_class_id("lisc.9")
    assert ds.source_image_link(1) == "/coco/42.jpg"
    assert ds.image_reference(0) == ""


def test_map_before_prepare_is_a_clear_error():
    with pytest.raises(DatasetError, match="prepare"):
        Dataset().map_source_class_id("lisc.1")


def test_default_load_mask_warns_and_returns_empty():
    ds = cells_dataset()
    with pytest.warns(UserWarning, match="load_mask"):
        mask, class_ids = ds.load_mask(0)
    assert mask.shape == (0, 0, 0) and mask.dtype == bool
    assert class_ids.shape == (0,) and class_ids.dtype == np.int32


def test_utils_reexports_dataset_and_design_names():
    assert utils.Dataset is Dataset
    # DESIGN §2: names a Matterport notebook reaches through `utils`.
    for name in ("compute_ap", "compute_ap_range", "compute_overlaps_masks", "extract_bboxes", "resize_image",
                 "generate_pyramid_anchors", "non_max_suppression", "compute_matches", "compute_recall",
                 "minimize_mask", "expand_mask", "resize_mask", "norm_boxes", "denorm_boxes", "box_refinement",
                 "apply_box_deltas", "trim_zeros", "compute_overlaps", "compute_iou", "resize", "unmold_mask",
                 "generate_anchors"):
        assert callable(getattr(utils, name)), name
    assert callable(utils.download_trained_weights)
    assert utils.COCO_MODEL_URL.endswith("/v2.0/mask_rcnn_coco.h5")


# ---------------------------------------------------------------- load_image
def dataset_with(path):
    ds = Dataset()
    ds.add_image("test", 0, str(path))
    ds.prepare()
    return ds


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_load_rgb(tmp_path, rgb, ext):
    path = tmp_path / f"image.{ext}"
    skimage.io.imsave(path, rgb, check_contrast=False)
    image = dataset_with(path).load_image(0)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, rgb)


def test_load_grey_becomes_rgb(tmp_path, rgb):
    path = tmp_path / "grey.png"
    skimage.io.imsave(path, rgb[:, :, 0], check_contrast=False)
    image = dataset_with(path).load_image(0)
    assert image.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], rgb[:, :, 0])


def test_load_rgba_drops_alpha(tmp_path, rgb):
    path = tmp_path / "rgba.png"
    skimage.io.imsave(path, np.dstack([rgb, np.full((12, 10), 7, np.uint8)]), check_contrast=False)
    np.testing.assert_array_equal(dataset_with(path).load_image(0), rgb)


def test_load_16_bit_scales_to_uint8(tmp_path):
    grey = np.array([[0, 257, 65535], [32896, 1000, 128]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    skimage.io.imsave(path, grey, check_contrast=False)
    image = dataset_with(path).load_image(0)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[:, :, 0], np.round(grey / 257.0).astype(np.uint8))


def test_corrupt_or_missing_file_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DatasetError, match="corrupt.png") as info:
        dataset_with(bad).load_image(0)
    assert isinstance(info.value, MrcnnError) and "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="nowhere.bmp"):
        dataset_with(tmp_path / "nowhere.bmp").load_image(0)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="notes.jpg"):
        dataset_with(text).load_image(0)

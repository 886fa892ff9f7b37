"""Bad input through the Python API: image conversion, Config overrides, weight files, `detect` arrays,
log folders, and hypothesis fuzzing of the image loader and of the config (the CLI side is in
test_reliability.py).

Everything ends in a result or in the project's own one-line error (`MrcnnError` subclasses).
"""
import datetime
import io
import json
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest
from helpers_model import tiny_config
from helpers_weights import write_keras2_h5
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mrcnn_tf.engine import checkpoints
from mrcnn_tf.config import DERIVED, Config
from mrcnn_tf.data import lisc_format as fmt
from mrcnn_tf.data.dataset import Dataset
from mrcnn_tf.errors import ConfigError, DatasetError, MrcnnError, WeightsError
from mrcnn_tf.model import MaskRCNN


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny 6-class inference model (random weights)."""
    return MaskRCNN("inference", tiny_config(NUM_CLASSES=6, DETECTION_MIN_CONFIDENCE=0.0),
                    str(tmp_path_factory.mktemp("logs")))


def _exploit(marker):
    """Pickled bytes that create `marker` when unpickled."""
    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Exploit())


def test_converted_images_match_a_numpy_reference(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
    dark = rng.integers(0, 200, (9, 7), dtype=np.uint16)  # a 16-bit file whose values all stay <= 255
    files = {"grey.png": (Image.fromarray(rgb[:, :, 0], "L"), np.repeat(rgb[:, :, :1], 3, axis=2)),
             "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[:, :, 0]]), "RGBA"), rgb),
             "la.png": (Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), "LA"),
                        np.repeat(rgb[:, :, :1], 3, axis=2)),
             "deep.png": (Image.fromarray(deep), np.repeat((deep / 257.0).round().astype(np.uint8)[:, :, None], 3, 2)),
             "dark.png": (Image.fromarray(dark), np.repeat((dark / 257.0).round().astype(np.uint8)[:, :, None], 3, 2)),
             # Pillow's RGB -> CMYK is c = 255 - r, ..., k = 0; a reader that kept the raw CMYK bytes
             # (skimage does) would give 255 - rgb here.
             "cmyk.tif": (Image.fromarray(rgb).convert("CMYK"), rgb)}
    dataset = Dataset()
    for i, (name, (image, _)) in enumerate(files.items()):
        image.save(tmp_path / name)
        dataset.add_image("t", i, str(tmp_path / name))
    for i, (name, (_, expected)) in enumerate(files.items()):
        for got in (dataset.load_image(i), fmt.read_image(tmp_path / name)):
            assert got.dtype == np.uint8 and got.shape == (9, 7, 3), name
            np.testing.assert_array_equal(got, expected, err_msg=name)



def test_failed_override_leaves_the_config_unchanged():
    config = tiny_config()
    before = config.to_dict()
    with pytest.raises(ConfigError, match="DETECTION_MIN_CONFIDENCE"):
        config.apply_overrides(["LEARNING_RATE=0.5", "NUM_CLASSES=9", "DETECTION_MIN_CONFIDENCE=2"])
    assert config.to_dict() == before and config.LEARNING_RATE == 0.001 and config.IMAGE_META_SIZE == 12 + 3
    config.apply_overrides(["LEARNING_RATE=0.5", "NUM_CLASSES=9"])  # the valid part alone applies
    assert config.LEARNING_RATE == 0.5 and config.IMAGE_META_SIZE == 12 + 9


CONFIG_KEYS = sorted(k for k in Config().to_dict() if k not in DERIVED)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(CONFIG_KEYS), value=JSON_VALUES)
def test_fuzz_overrides_and_config_json(key, value):
    """Any KEY=VALUE either applies or raises ConfigError with the config untouched; same for from_dict."""
    config = Config()
    before = config.to_dict()
    try:
        config.apply_overrides([f"{key}={json.dumps(value)}"])
    except ConfigError as exc:
        assert "\n" not in str(exc) and key in str(exc)
        assert config.to_dict() == before
    else:
        config.refresh()
    try:
        Config.from_dict({key: value})
    except ConfigError as exc:
        assert "\n" not in str(exc) and "Config" in str(exc)


def _values(model):
    return [v.numpy().copy() for v in model.keras_model.weights]


def test_api_weight_errors_leave_the_model_untouched(model, tmp_path):
    before = _values(model)
    other = write_keras2_h5(tmp_path / "three classes.h5", [("mrcnn_class_logits", [
        ("mrcnn_class_logits/kernel:0", (64, 3)), ("mrcnn_class_logits/bias:0", (3,))])],
        {"mrcnn_class_logits": [np.ones((64, 3), np.float32), np.ones(3, np.float32)]})
    with pytest.raises(WeightsError, match="made for another class count") as info:
        model.load_weights(other, by_name=True, verbose=0)
    assert info.value.report.file_num_classes == 3 and "\n" not in str(info.value)
    model.keras_model.save_weights(str(tmp_path / "good.weights.h5"))
    damaged = {"notes.h5": (b"not weights", "is not an HDF5 weight file"),
               "model.pkl": (_exploit(tmp_path / "unpickled"), "is not an HDF5 weight file"),
               "cut.weights.h5": ((tmp_path / "good.weights.h5").read_bytes()[:30000], "is truncated or damaged")}
    for name, (data, message) in damaged.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=message) as info:
            model.load_weights(tmp_path / name, by_name=True, verbose=0)
        assert name in str(info.value) and "\n" not in str(info.value)
    for a, b in zip(before, _values(model)):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "unpickled").exists()


def test_keras_archive_weights_load_without_reading_its_config(model, tmp_path):
    """A `.keras` file is a zip; only model.weights.h5 is read: a hostile config.json is never parsed."""
    saved = _values(model)
    model.keras_model.save_weights(str(tmp_path / "w.weights.h5"))
    archive = tmp_path / "hostile.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", _exploit(tmp_path / "unpickled"))
        z.writestr("metadata.json", "{}")
        z.write(tmp_path / "w.weights.h5", "model.weights.h5")
    for variable in model.keras_model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    model.load_weights(archive, verbose=0)
    for a, b in zip(saved, _values(model)):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "unpickled").exists()


@pytest.mark.parametrize("image, message", [
    (np.full((40, 50, 3), 60000, np.uint16), "image values span 60000..60000, outside 0..255"),
    (np.full((40, 50, 3), np.nan), "image holds NaN or infinite values"),
    (np.zeros((0, 0, 3), np.uint8), "image of shape (0, 0, 3) is empty"),
    (np.zeros((8, 8, 5), np.uint8), "image of shape (8, 8, 5): expected [H, W, 3]"),
    (None, "image of shape (): expected [H, W, 3]"),
])
def test_detect_rejects_arrays_it_cannot_read(model, image, message):
    with pytest.raises(MrcnnError) as info:
        model.detect([image])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_detect_converts_grey_and_rgba_and_warns_on_unit_floats(model):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    grey = model.detect([rgb[:, :, 0]])[0]
    same = model.detect([np.repeat(rgb[:, :, :1], 3, axis=2)])[0]
    np.testing.assert_array_equal(grey["rois"], same["rois"])
    rgba = model.detect([np.dstack([rgb, rgb[:, :, 0]])])[0]
    np.testing.assert_array_equal(rgba["rois"], model.detect([rgb])[0]["rois"])
    with pytest.warns(UserWarning, match="detect expects 0..255; multiply it by 255"):
        model.detect([rgb / 255.0])


def test_new_runs_never_reuse_a_log_folder(model, tmp_path):
    now = datetime.datetime.now()
    taken = [tmp_path / f"tiny{t:%Y%m%dT%H%M}" for t in (now, now + datetime.timedelta(minutes=1))]
    for folder in taken:
        folder.mkdir()
        (folder / "events.out").write_text("an earlier run")
    saved = model.model_dir
    model.model_dir = str(tmp_path)
    try:
        model.set_log_dir()
    finally:
        model.model_dir = saved
    assert pathlib.Path(model.log_dir).parent == tmp_path and pathlib.Path(model.log_dir) not in taken
    assert not os.path.exists(model.log_dir)
    first = checkpoints.new_run_dir(tmp_path, "tiny", now=now)
    second = checkpoints.new_run_dir(tmp_path, "tiny", now=now)
    assert (first.name, second.name) == (taken[0].name + "_2", taken[0].name + "_3")
    assert [p.name for p in taken[0].iterdir()] == ["events.out"]


# ------------------------------------------------------------------------------------- fuzzing
def _seed_files():
    """A small valid file of each format, to damage."""
    rng = np.random.default_rng(1)
    blobs = {}
    for suffix, image in ((".png", rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)),
                          (".tif", rng.integers(0, 65536, (4, 3), dtype=np.uint16)),
                          (".bmp", rng.integers(0, 256, (4, 6), dtype=np.uint8))):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format={".png": "PNG", ".tif": "TIFF", ".bmp": "BMP"}[suffix])
        blobs[suffix] = buffer.getvalue()
    return blobs


SEEDS = _seed_files()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_dataset_image_loader(tmp_path, data):
    """Dataset.load_image (Pillow first, skimage for the rest) on damaged PNG/TIFF/BMP bytes and noise."""
    suffix = data.draw(st.sampled_from([".png", ".tif", ".bmp", ".jpg"]))
    seed = SEEDS.get(suffix, SEEDS[".png"])
    blob = data.draw(st.one_of(
        st.binary(max_size=120),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), min_size=1, max_size=5).map(
            lambda edits: bytes(_edit(seed, edits)))))
    path = tmp_path / f"fuzz ü{suffix}"
    path.write_bytes(blob)
    dataset = Dataset()
    dataset.add_image("fuzz", 0, str(path))
    try:
        image = dataset.load_image(0)
    except DatasetError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


def _edit(data, edits):
    data = bytearray(data)
    for offset, value in edits:
        data[offset] = value
    return data

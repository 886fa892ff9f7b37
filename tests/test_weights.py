"""mrcnn_tf.weights.matterport_h5: Keras-2 h5 by name / by order, own checkpoints, errors, COCO file handling."""
import io
import pickle
import urllib.error
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from helpers_weights import coco_layout, seeded_values, write_coco_h5, write_keras2_h5
from mrcnn_tf.weights import matterport_h5 as W
from mrcnn_tf.config import Config
from mrcnn_tf.errors import WeightsError


# ----------------------------------------------------------------------------- a small Matterport-like model
def small_model(num_classes=4, extra=False):
    """conv1/bn_conv1, nested rpn_model, TimeDistributed heads: the structures of the real model."""
    image = KL.Input((16, 16, 3), name="input_image")
    x = KL.ZeroPadding2D(1)(image)
    x = KL.Conv2D(8, 3, name="conv1")(x)
    x = KL.BatchNormalization(name="bn_conv1")(x)
    x = KL.Activation("relu")(x)
    if extra:
        x = KL.Conv2D(8, 1, name="res2a_branch2a")(x)
    feature = KL.Input((None, None, 8), name="input_rpn_feature_map")
    shared = KL.Conv2D(12, 3, padding="same", name="rpn_conv_shared")(feature)
    rpn_class = KL.Conv2D(6, 1, name="rpn_class_raw")(shared)
    rpn_bbox = KL.Conv2D(12, 1, name="rpn_bbox_pred")(shared)
    rpn = keras.Model(feature, [rpn_class, rpn_bbox], name="rpn_model")
    outputs = rpn(x)
    rois = KL.Input((3, 4, 4, 8), name="rois")
    y = KL.TimeDistributed(KL.Conv2D(10, 4), name="mrcnn_class_conv1")(rois)
    y = KL.TimeDistributed(KL.BatchNormalization(), name="mrcnn_class_bn1")(y)
    y = KL.Reshape((3, 10))(y)
    logits = KL.TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")(y)
    bbox = KL.TimeDistributed(KL.Dense(num_classes * 4), name="mrcnn_bbox_fc")(y)
    bbox = KL.Reshape((3, num_classes, 4), name="mrcnn_bbox")(bbox)
    return keras.Model([image, rois], [*outputs, logits, bbox], name="mask_rcnn")


def small_layout(num_classes=4):
    """The Keras-2 file layout `small_model` would have been saved with (weightless names included)."""
    def conv(name, shape):
        return (name, [(f"{name}/kernel:0", shape), (f"{name}/bias:0", (shape[-1],))])

    def bn(name, c):
        return (name, [(f"{name}/{w}:0", (c,)) for w in ("gamma", "beta", "moving_mean", "moving_variance")])

    rpn = conv("rpn_conv_shared", (3, 3, 8, 12))[1] + conv("rpn_class_raw", (1, 1, 12, 6))[1] + \
        conv("rpn_bbox_pred", (1, 1, 12, 12))[1]
    return [("input_image", []), ("zero_padding2d_1", []), conv("conv1", (3, 3, 3, 8)), bn("bn_conv1", 8),
            ("activation_1", []), ("rpn_model", rpn), ("rois", []), conv("mrcnn_class_conv1", (4, 4, 8, 10)),
            bn("mrcnn_class_bn1", 10), ("reshape_1", []), conv("mrcnn_class_logits", (10, num_classes)),
            conv("mrcnn_bbox_fc", (10, num_classes * 4)), ("mrcnn_bbox", [])]


def model_values(model):
    return {layer.name: [np.array(v) for v in W.legacy_weights(layer)] for layer in model.layers if layer.weights}


def assert_values(model, expected, names=None):
    actual = model_values(model)
    for name in names if names is not None else expected:
        assert len(actual[name]) == len(expected[name]), name
        for a, e in zip(actual[name], expected[name]):
            np.testing.assert_array_equal(a, e, err_msg=name)


@pytest.fixture
def small_h5(tmp_path):
    layout = small_layout()
    values = seeded_values(layout, seed=3)
    return write_keras2_h5(tmp_path / "small.h5", layout, values), values


# ----------------------------------------------------------------------------- the COCO layout helper
def test_coco_layout_has_matterport_counts():
    layout = coco_layout()
    weighted = [(n, w) for n, w in layout if w]
    assert len(weighted) == 233 and sum(len(w) for _, w in weighted) == 690
    assert len(layout) > len(weighted)  # weightless names interleaved
    groups = dict(weighted)
    assert [w for w, _ in groups["rpn_model"]] == [f"{n}/{k}:0" for n in ("rpn_conv_shared", "rpn_class_raw",
                                                                          "rpn_bbox_pred") for k in ("kernel", "bias")]
    assert groups["mrcnn_bbox_fc"][0][1] == (1024, 324) and groups["mrcnn_mask"][0][1] == (1, 1, 256, 81)
    assert [w for w, _ in groups["bn2a_branch1"]][-1] == "bn2a_branch1/moving_variance:0"
    six = dict(coco_layout(num_classes=6))
    changed = sorted(n for n, w in weighted if six[n] != w)
    assert changed == ["mrcnn_bbox_fc", "mrcnn_class_logits", "mrcnn_mask"]


# ----------------------------------------------------------------------------- Keras-2 h5, by name
def test_by_name_loads_nested_and_time_distributed_value_exact(small_h5):
    path, values = small_h5
    model = small_model()
    report = W.load_weights(model, path, by_name=True, verbose=0)
    assert_values(model, values)
    assert sorted(report.loaded) == sorted(values) and not report.absent_in_file and not report.absent_in_model
    # Independent reference: Keras 3's own legacy by-name loader gives the same values.
    from keras.src.legacy.saving.legacy_h5_format import load_weights_from_hdf5_group_by_name
    reference = small_model()
    with h5py.File(path, "r") as f:
        load_weights_from_hdf5_group_by_name(f, reference)
    assert_values(model, model_values(reference))
    # BN order in the file is gamma, beta, moving_mean, moving_variance.
    bn = model.get_layer("bn_conv1")
    np.testing.assert_array_equal(np.array(bn.moving_variance), values["bn_conv1"][3])


def test_chunked_layer_names_and_full_model_save(tmp_path):
    layout, values = small_layout(), seeded_values(small_layout(), seed=4)
    chunked = write_keras2_h5(tmp_path / "chunked.h5", layout, values, chunk_layer_names=True)
    model = small_model()
    W.load_weights(model, chunked, by_name=True, verbose=0)
    assert_values(model, values)
    full = tmp_path / "full.h5"
    with h5py.File(write_keras2_h5(tmp_path / "inner.h5", layout, values), "r") as src, h5py.File(full, "w") as dst:
        src.copy(src["/"], dst, "model_weights")
        for key, value in src.attrs.items():
            dst["model_weights"].attrs[key] = value
    other = small_model()
    W.load_weights(other, full, by_name=True, verbose=0)
    assert_values(other, values)


def test_report_lists_absent_layers_both_ways(tmp_path):
    layout = small_layout() + [("fpn_c5p5", [("fpn_c5p5/kernel:0", (1, 1, 8, 8)), ("fpn_c5p5/bias:0", (8,))])]
    layout = [g for g in layout if g[0] != "mrcnn_class_bn1"]
    path = write_keras2_h5(tmp_path / "f.h5", layout, seeded_values(layout))
    model = small_model(extra=True)
    before = model_values(model)
    report = W.load_weights(model, path, by_name=True, verbose=0)
    assert sorted(report.absent_in_file) == ["mrcnn_class_bn1", "res2a_branch2a"]
    assert report.absent_in_model == ["fpn_c5p5"]
    assert_values(model, before, ["mrcnn_class_bn1", "res2a_branch2a"])
    text = str(report)
    assert "absent from the file 2" in text and "fpn_c5p5" in text and "res2a_branch2a" in text


def test_exclude_keeps_class_heads(small_h5):
    path, values = small_h5
    model = small_model(num_classes=6)
    before = model_values(model)
    report = W.load_weights(model, path, exclude=list(W.COCO_CLASS_SPECIFIC), verbose=0)
    assert sorted(report.excluded) == ["mrcnn_bbox_fc", "mrcnn_class_logits"]
    assert_values(model, before, ["mrcnn_bbox_fc", "mrcnn_class_logits"])
    assert_values(model, values, [n for n in values if n not in report.excluded])
    assert "exclude names matching no layer: mrcnn_mask" in str(report)


def test_class_count_mismatch_is_one_clear_error_and_loads_nothing(small_h5):
    path, _ = small_h5
    model = small_model(num_classes=6)
    before = model_values(model)
    with pytest.raises(WeightsError) as err:
        W.load_weights(model, path, by_name=True, verbose=0)
    message = str(err.value)
    assert "\n" not in message and "small.h5" in message and "exclude=" in message
    assert "mrcnn_class_logits" in message and "mrcnn_bbox_fc" in message and "10x4 4" in message
    assert_values(model, before)  # nothing half-loaded


def test_by_order_on_keras2_file(tmp_path, small_h5):
    path, values = small_h5
    model = small_model()
    W.load_weights(model, path, by_name=False, verbose=0)
    assert_values(model, values)
    # Keras orders a functional model's layers its own way: a by-order file follows the model's order.
    order = [layer.name for layer in model.layers if layer.weights]
    layout = sorted([g for g in small_layout() if g[1]], key=lambda g: order.index(g[0]))
    renamed = [(("renamed_conv" if n == "conv1" else n), [(w.replace("conv1/", "renamed_conv/"), s) for w, s in ws])
               for n, ws in layout]
    values2 = seeded_values(renamed, seed=9)
    path2 = write_keras2_h5(tmp_path / "renamed.h5", renamed, values2)
    report = W.load_weights(model, path2, by_name=False, verbose=0)
    np.testing.assert_array_equal(np.array(model.get_layer("conv1").kernel), values2["renamed_conv"][0])
    assert any("renamed_conv" in note for note in report.notes)
    with pytest.raises(WeightsError, match="paired by order"):  # file order != model order
        W.load_weights(model, write_keras2_h5(tmp_path / "o.h5", renamed[::-1], values2), verbose=0)
    # Same names in another order: matched by name, which is what the by-order load means.
    W.load_weights(model, write_keras2_h5(tmp_path / "r.h5", small_layout()[::-1], values), verbose=0)
    assert_values(model, values)
    shorter = [g for g in small_layout() if g[0] != "mrcnn_bbox_fc"]
    path3 = write_keras2_h5(tmp_path / "short.h5", shorter, seeded_values(shorter))
    with pytest.raises(WeightsError, match="by_name=True"):
        W.load_weights(model, path3, by_name=False, verbose=0)


# ----------------------------------------------------------------------------- our own checkpoints
def test_own_weights_h5_and_keras_round_trip(tmp_path, rng):
    source = small_model()
    for v in source.weights:
        v.assign(rng.standard_normal(v.shape).astype("float32"))
    source.save_weights(tmp_path / "ckpt.weights.h5")
    source.save(tmp_path / "model.keras")
    expected = model_values(source)
    for path, by_name in ((tmp_path / "ckpt.weights.h5", False), (tmp_path / "model.keras", True)):
        target = small_model()
        report = W.load_weights(target, path, by_name=by_name, verbose=0)
        assert report.source_format == "keras3" and len(report.loaded) == len(expected)
        assert_values(target, expected)
    # Another class count: a clear error, nothing loaded; with exclude the rest loads.
    six = small_model(num_classes=6)
    before = model_values(six)
    with pytest.raises(WeightsError, match="mrcnn_class_logits"):
        W.load_weights(six, tmp_path / "ckpt.weights.h5", verbose=0)
    assert_values(six, before)
    report = W.load_weights(six, tmp_path / "ckpt.weights.h5", exclude=["mrcnn_class_logits", "mrcnn_bbox_fc"],
                            verbose=0)
    assert_values(six, before, ["mrcnn_class_logits", "mrcnn_bbox_fc"])
    assert_values(six, expected, ["conv1", "rpn_model", "mrcnn_class_bn1"])
    # A model with one more layer: by name still finds every layer (Keras' class-based keys shift).
    bigger = small_model(extra=True)
    report = W.load_weights(bigger, tmp_path / "ckpt.weights.h5", by_name=True, verbose=0)
    assert report.absent_in_file == ["res2a_branch2a"]
    assert_values(bigger, expected)


# ----------------------------------------------------------------------------- bad files
def test_bad_files_give_one_line_errors_and_never_unpickle(tmp_path, small_h5):
    model = small_model()
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pickled = tmp_path / "weights.h5"
    pickled.write_bytes(pickle.dumps(Exploit()))
    path, _ = small_h5
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    zipped = tmp_path / "other.keras"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("config.json", "{}")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    foreign = write_keras2_h5(tmp_path / "foreign.h5", [("dense_7", [("dense_7/kernel:0", (2, 2))])],
                              {"dense_7": [np.zeros((2, 2), np.float32)]})
    cases = {pickled: "not an HDF5", truncated: "truncated or damaged", zipped: "without model.weights.h5",
             empty: "no Keras weights", foreign: "no layer of the file matches", tmp_path / "nope.h5": "not found"}
    for bad, expected in cases.items():
        with pytest.raises(WeightsError) as err:
            W.load_weights(model, bad, by_name=True, verbose=0)
        assert expected in str(err.value) and bad.name in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------- COCO file: find, check, download
def test_coco_exclude_for_config():
    class Six(Config):
        NUM_CLASSES = 6

    class Coco(Config):
        NUM_CLASSES = 81

    class Grey(Config):
        NUM_CLASSES = 81
        IMAGE_CHANNEL_COUNT = 1
        MEAN_PIXEL = np.array([120.0])

    assert W.coco_exclude_for(Coco()) == []
    assert W.coco_exclude_for(Six()) == ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
    assert W.coco_exclude_for(Grey()) == ["conv1"]


def test_download_atomic_and_offline(tmp_path, monkeypatch):
    source = tmp_path / "src.bin"
    payload = np.arange(5000, dtype=np.int64).tobytes()
    source.write_bytes(payload)
    dest_dir = tmp_path / "dest"
    dest = W.download_file(source.as_uri(), dest_dir / "a.bin", size=len(payload), verbose=0)
    assert dest.read_bytes() == payload and sorted(p.name for p in dest_dir.iterdir()) == ["a.bin"]
    with pytest.raises(WeightsError, match="md5"):
        W.download_file(source.as_uri(), dest_dir / "b.bin", md5="0" * 32, verbose=0)
    assert sorted(p.name for p in dest_dir.iterdir()) == ["a.bin"]

    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 100:
                raise ConnectionResetError("connection reset")
            return super().read(min(n, 64) if n and n > 0 else 64)

    monkeypatch.setattr(W.urllib.request, "urlopen", lambda url, timeout: Broken(payload))
    with pytest.raises(WeightsError, match="connection reset"):
        W.download_file("https://example.invalid/c.bin", dest_dir / "c.bin", verbose=0)
    assert sorted(p.name for p in dest_dir.iterdir()) == ["a.bin"]

    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(W.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as err:
        W.download_trained_weights(dest_dir / "mask_rcnn_coco.h5", verbose=0)
    message = str(err.value)
    assert W.COCO_MODEL_URL in message and str(dest_dir / "mask_rcnn_coco.h5") in message and "\n" not in message
    assert sorted(p.name for p in dest_dir.iterdir()) == ["a.bin"]


def test_find_and_check_coco_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env_dir = tmp_path / "my_weights"
    env_dir.mkdir()
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(env_dir))
    monkeypatch.setattr(W.urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(
        urllib.error.URLError("offline")))
    if W.find_coco_weights() is None:  # a real file in the repository's weights/ would be found first
        with pytest.raises(WeightsError) as err:
            W.get_coco_weights(verbose=0)
        assert W.COCO_MODEL_URL in str(err.value) and str(env_dir / W.COCO_WEIGHTS_NAME) in str(err.value)
        assert list(env_dir.iterdir()) == []
    (env_dir / W.COCO_WEIGHTS_NAME).write_bytes(b"x" * 1000)
    assert W.find_coco_weights() == env_dir / W.COCO_WEIGHTS_NAME
    with pytest.raises(WeightsError, match="1,000 bytes, expected 257,557,808"):
        W.get_coco_weights(verbose=0)
    assert W.check_file(env_dir / W.COCO_WEIGHTS_NAME, size=1000, md5=W._md5(env_dir / W.COCO_WEIGHTS_NAME))


# ----------------------------------------------------------------------------- the full ResNet-101 model
@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco") / "mask_rcnn_coco.h5"
    return path, write_coco_h5(path, num_classes=81, seed=7)


def build_mrcnn(num_classes):
    from mrcnn_tf import model as modellib

    class Tiny(Config):
        NAME = "tiny"
        IMAGES_PER_GPU = 1
        NUM_CLASSES = num_classes
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128

    config = Tiny()
    return modellib.MaskRCNN("inference", config, "/tmp/mrcnn_tf_test_logs"), config


@pytest.mark.slow
def test_coco_layout_loads_value_exact_into_resnet101(coco_file):
    path, values = coco_file
    mrcnn, _ = build_mrcnn(81)
    report = mrcnn.load_weights(path, by_name=True)
    assert len(report.loaded) == 233 and not (report.absent_in_file or report.absent_in_model or report.excluded)
    actual = model_values(mrcnn.keras_model)
    assert sum(len(a) for a in actual.values()) == 690
    assert_values(mrcnn.keras_model, values)


@pytest.mark.slow
def test_coco_into_six_classes_error_exclude_and_own_checkpoint(coco_file, tmp_path):
    path, values = coco_file
    mrcnn, config = build_mrcnn(6)
    model = mrcnn.keras_model
    heads = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]
    before = model_values(model)
    with pytest.raises(WeightsError) as err:
        W.load_weights(model, path, by_name=True, verbose=0)
    assert all(h in str(err.value) for h in heads) and "exclude" in str(err.value)
    assert_values(model, before)
    report = W.load_coco_weights(model, config, filepath=path, verbose=0)
    assert sorted(report.excluded) == sorted(heads) and len(report.loaded) == 230
    assert any("NUM_CLASSES is 6" in note for note in report.notes)
    assert_values(model, before, heads)
    assert_values(model, values, [n for n in values if n not in heads])
    # Own checkpoint round trip on the full model.
    ckpt = tmp_path / "mask_rcnn_tiny_0001.weights.h5"
    model.save_weights(ckpt)
    saved = model_values(model)
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    report = W.load_weights(model, ckpt, verbose=0)
    assert len(report.loaded) == 233
    assert_values(model, saved)

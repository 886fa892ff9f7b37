"""ImageNet start: keras.applications ResNet weights mapped onto Matterport's backbone names.

The seeded source weights are kept in a stable range (gamma ~ sqrt(moving variance)) and a fifth
of the BatchNorm channels get a tiny moving variance (1e-4..1e-3), where the epsilon difference
(1.001e-5 vs 1e-3) matters: without epsilon folding those features are off by tens of percent.
Odd-sized inputs make conv1's output odd, where Matterport's "same" max-pool and keras.applications'
pad-1 max-pool use the same windows; even sizes shift the windows by one pixel (documented in
mrcnn_tf/weights/imagenet.py and checked below).
"""
import urllib.error

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from helpers_weights import backbone_layout, seeded_values, write_keras2_h5
from mrcnn_tf.weights import matterport_h5 as W
from mrcnn_tf.weights import imagenet as WI
from mrcnn_tf.errors import WeightsError
from mrcnn_tf.nets.resnet import resnet_graph

STAGE_OUTPUTS = {"resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
                 "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out")}
TOLERANCE = 1e-5  # max |ours - reference| / max |reference|, per feature map


def seed_resnet(model, rng):
    """He-scaled kernels; BN with gamma ~ sqrt(var) so activations stay O(10) through 100 layers."""
    for layer in model.layers:
        if isinstance(layer, KL.Conv2D):
            fan_in = np.prod(layer.kernel.shape[:3])
            layer.kernel.assign((rng.standard_normal(layer.kernel.shape) * np.sqrt(2.0 / fan_in)).astype("float32"))
            layer.bias.assign(rng.uniform(-0.05, 0.05, layer.bias.shape).astype("float32"))
        elif isinstance(layer, KL.BatchNormalization):
            c = layer.gamma.shape[0]
            var = rng.uniform(0.5, 1.5, c)
            small = rng.random(c) < 0.2
            var[small] = rng.uniform(1e-4, 1e-3, small.sum())
            layer.gamma.assign((np.sqrt(var) * rng.uniform(0.5, 1.0, c)).astype("float32"))
            layer.beta.assign(rng.uniform(-0.1, 0.1, c).astype("float32"))
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, c).astype("float32"))
            layer.moving_variance.assign(var.astype("float32"))


def pair(architecture):
    """(keras.applications model -> C2..C5, our Matterport-named backbone -> C2..C5, source model)."""
    app = getattr(keras.applications, {"resnet50": "ResNet50", "resnet101": "ResNet101"}[architecture])(
        weights=None, include_top=False, input_shape=(None, None, 3))
    seed_resnet(app, np.random.default_rng(0))
    reference = keras.Model(app.input, [app.get_layer(n).output for n in STAGE_OUTPUTS[architecture]])
    image = KL.Input((None, None, 3))
    ours = keras.Model(image, resnet_graph(image, architecture, train_bn=False)[1:])
    return reference, ours, app


def relative_errors(ours, reference, size):
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype("float32")
    got, want = ours(x, training=False), reference(x, training=False)
    return [float(np.abs(np.array(g) - np.array(w)).max() / np.abs(np.array(w)).max()) for g, w in zip(got, want)]


@pytest.fixture(scope="module")
def resnet50_pair():
    return pair("resnet50")


def test_name_map_matches_matterport_backbone_names():
    for architecture in ("resnet50", "resnet101"):
        name_map = WI.keras_applications_name_map(architecture)
        matterport = [name for name, weights in backbone_layout(architecture) if weights]
        assert sorted(name_map.values()) == sorted(matterport)
        assert len(set(name_map.values())) == len(name_map)
    name_map = WI.keras_applications_name_map("resnet101")
    assert name_map["conv2_block1_0_conv"] == "res2a_branch1" and name_map["conv2_block1_0_bn"] == "bn2a_branch1"
    assert name_map["conv4_block23_3_conv"] == "res4w_branch2c" and name_map["conv1_bn"] == "bn_conv1"
    with pytest.raises(WeightsError, match="resnet50 or resnet101"):
        WI.keras_applications_name_map("resnet152")


def test_mapped_resnet50_gives_the_same_stage_features(resnet50_pair):
    reference, ours, app = resnet50_pair
    assert all(name in WI.keras_applications_name_map("resnet50") for name in
               (layer.name for layer in app.layers if layer.weights))
    # keras.applications puts each stage's stride on the first 1x1 conv, as Matterport does.
    assert app.get_layer("conv3_block1_1_conv").strides == (2, 2) == ours.get_layer("res3a_branch2a").strides
    report = WI.imagenet_weights_to_backbone(ours, app, "resnet50", verbose=0)
    assert len(report.loaded) == 106 and not report.absent_in_file and not report.absent_in_model
    assert any("rescaled" in note for note in report.notes)
    assert max(relative_errors(ours, reference, 66)) < TOLERANCE
    # Even conv1 output (every multiple-of-64 image): the max-pool windows differ by one pixel.
    assert min(relative_errors(ours, reference, 64)) > 1e-2
    # Without epsilon folding the small-variance channels are off.
    WI.imagenet_weights_to_backbone(ours, app, "resnet50", fold_bn_epsilon=False, verbose=0)
    assert min(relative_errors(ours, reference, 66)) > 1e-2
    np.testing.assert_array_equal(np.array(ours.get_layer("bn2a_branch1").gamma),
                                  np.array(app.get_layer("conv2_block1_0_bn").gamma))


def test_keras_applications_h5_file_maps_like_the_model(resnet50_pair, tmp_path):
    reference, ours, app = resnet50_pair
    path = tmp_path / WI.IMAGENET_FILES["resnet50"][0]
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group
    with h5py.File(path, "w") as f:  # the Keras-2 layout of keras.applications' notop files
        save_weights_to_hdf5_group(f, app)
    report = WI.imagenet_weights_to_backbone(ours, str(path), "resnet50", verbose=0)
    assert report.source_format == "keras.applications ResNet" and len(report.loaded) == 106
    assert max(relative_errors(ours, reference, 66)) < TOLERANCE


def test_old_matterport_resnet50_h5_loads_by_name(resnet50_pair, tmp_path):
    _, ours, _ = resnet50_pair
    layout = backbone_layout("resnet50")
    values = seeded_values(layout, seed=5)
    path = write_keras2_h5(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", layout, values)
    report = WI.imagenet_weights_to_backbone(ours, path, "resnet50", verbose=0)
    assert report.source_format == "keras2-h5" and len(report.loaded) == 106
    for name in ("conv1", "bn2a_branch1", "res5c_branch2c"):
        for variable, array in zip(W.legacy_weights(ours.get_layer(name)), values[name]):
            np.testing.assert_array_equal(np.array(variable), array)  # same epsilon: nothing folded


@pytest.mark.slow
def test_resnet101_imagenet_start_and_resnet50_file_on_resnet101(tmp_path):
    reference, ours, _ = pair("resnet101")
    report = WI.imagenet_weights_to_backbone(ours, reference, "resnet101", verbose=0)
    assert len(report.loaded) == 208 and not report.absent_in_file
    assert max(relative_errors(ours, reference, 66)) < TOLERANCE
    before = np.array(ours.get_layer("res4g_branch2a").kernel)
    layout = backbone_layout("resnet50")
    path = write_keras2_h5(tmp_path / "old.h5", layout, seeded_values(layout, seed=6))
    report = WI.imagenet_weights_to_backbone(ours, path, "resnet101", verbose=0)
    assert len(report.loaded) == 106 and len(report.absent_in_file) == 102
    assert any("res4g..res4w keep" in note for note in report.notes)
    np.testing.assert_array_equal(np.array(ours.get_layer("res4g_branch2a").kernel), before)


def test_get_imagenet_weights_offline_and_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(tmp_path / "weights_env"))

    def offline(url, timeout):
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(W.urllib.request, "urlopen", offline)
    name, _ = WI.IMAGENET_FILES["resnet101"]
    if not any((d / name).is_file() for d in W.weights_dirs()):
        with pytest.raises(WeightsError) as err:
            WI.get_imagenet_weights("resnet101", verbose=0)
        message = str(err.value)
        assert WI.KERAS_APPLICATIONS_URL + name in message and str(tmp_path / "keras_home" / "models" / name) in message
        assert not (tmp_path / "keras_home" / "models" / name).exists()
        assert list((tmp_path / "keras_home" / "models").iterdir()) == []
    cached = tmp_path / "keras_home" / "models" / WI.IMAGENET_FILES["resnet50"][0]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"not the real file")
    with pytest.raises(WeightsError, match="md5"):
        WI.get_imagenet_weights("resnet50", verbose=0)
    digest = W._md5(cached)
    monkeypatch.setitem(WI.IMAGENET_FILES, "resnet50", (cached.name, digest))
    assert WI.get_imagenet_weights("resnet50", verbose=0) == cached
    with pytest.raises(WeightsError, match="resnet50 or resnet101"):
        WI.get_imagenet_weights("vgg16")


def test_wrong_source_and_custom_backbone(resnet50_pair, tmp_path):
    _, ours, _ = resnet50_pair
    layout = [("dense_1", [("dense_1/kernel:0", (2, 2))])]
    path = write_keras2_h5(tmp_path / "dense.h5", layout, seeded_values(layout))
    with pytest.raises(WeightsError, match="not a ResNet ImageNet weight file"):
        WI.imagenet_weights_to_backbone(ours, path, "resnet50", verbose=0)

    class Custom:
        BACKBONE = staticmethod(lambda image, stage5, train_bn: None)

    with pytest.raises(WeightsError, match="custom callable"):
        WI.load_imagenet_weights(ours, Custom())

"""ResNet-18/34 basic-block backbone: strides, channels, Matterport-style names, BatchNorm mode."""
import keras
import numpy as np
import pytest

from mrcnn_tf.errors import ConfigError
from mrcnn_tf.nets.resnet_basic import BLOCKS, resnet_basic_graph


@pytest.mark.parametrize("architecture", ["resnet18", "resnet34"])
def test_strides_channels_and_block_names(architecture):
    image = keras.Input((128, 192, 3))
    c1, c2, c3, c4, c5 = resnet_basic_graph(image, architecture)
    assert [tuple(c.shape[1:]) for c in (c2, c3, c4, c5)] == [
        (32, 48, 64), (16, 24, 128), (8, 12, 256), (4, 6, 512)]
    model = keras.Model(image, [c2, c3, c4, c5])
    names = {layer.name for layer in model.layers}
    for stage, count in zip((2, 3, 4, 5), BLOCKS[architecture]):
        for i in range(count):
            assert f"res{stage}{chr(ord('a') + i)}_branch2a" in names
            assert f"res{stage}{chr(ord('a') + i)}_out" in names
    # Projection shortcuts exactly where the shape changes: first block of stages 3-5.
    assert {n for n in names if n.endswith("_branch1") and n.startswith("res")} == {
        "res3a_branch1", "res4a_branch1", "res5a_branch1"}


def test_without_stage5_and_unknown_architecture():
    image = keras.Input((64, 64, 3))
    assert resnet_basic_graph(image, "resnet18", stage5=False)[4] is None
    with pytest.raises(ConfigError, match="resnet50"):
        resnet_basic_graph(image, "resnet50")


def test_frozen_batchnorm_ignores_training_flag():
    image = keras.Input((64, 64, 3))
    model = keras.Model(image, resnet_basic_graph(image, "resnet18", train_bn=False)[2])
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-5)

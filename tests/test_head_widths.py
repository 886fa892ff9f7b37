"""RPN_CONV_CHANNELS and MASK_HEAD_CHANNELS: Matterport's widths by default, narrower heads on request."""
import pytest

from helpers_model import tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf.errors import ConfigError


def _kernels(keras_model):
    rpn = keras_model.get_layer("rpn_model")
    return {"rpn_conv_shared": tuple(rpn.get_layer("rpn_conv_shared").kernel.shape),
            **{name: tuple(keras_model.get_layer(name).get_weights()[0].shape)
               for name in ("mrcnn_mask_conv1", "mrcnn_mask_conv4", "mrcnn_mask_deconv", "mrcnn_mask")}}


def test_default_widths_are_matterports(tmp_path):
    kernels = _kernels(modellib.MaskRCNN("inference", tiny_config(), str(tmp_path)).keras_model)
    assert kernels["rpn_conv_shared"] == (3, 3, 64, 512)  # 64: the tiny config's pyramid depth
    assert kernels["mrcnn_mask_conv1"] == (3, 3, 64, 256) and kernels["mrcnn_mask_conv4"] == (3, 3, 256, 256)
    assert kernels["mrcnn_mask_deconv"] == (2, 2, 256, 256) and kernels["mrcnn_mask"] == (1, 1, 256, 3)


@pytest.mark.parametrize("mode", ["training", "inference"])
def test_narrow_heads_shape_every_kernel(tmp_path, mode):
    config = tiny_config(RPN_CONV_CHANNELS=96, MASK_HEAD_CHANNELS=32)
    kernels = _kernels(modellib.MaskRCNN(mode, config, str(tmp_path)).keras_model)
    assert kernels == {"rpn_conv_shared": (3, 3, 64, 96), "mrcnn_mask_conv1": (3, 3, 64, 32),
                       "mrcnn_mask_conv4": (3, 3, 32, 32), "mrcnn_mask_deconv": (2, 2, 32, 32),
                       "mrcnn_mask": (1, 1, 32, 3)}


@pytest.mark.parametrize("name", ["RPN_CONV_CHANNELS", "MASK_HEAD_CHANNELS"])
def test_widths_must_be_positive_whole_numbers(name):
    with pytest.raises(ConfigError, match=f"Config.{name} = 0 is invalid"):
        tiny_config(**{name: 0})

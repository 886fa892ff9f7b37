"""`mrcnn_tf.wbc.presets`: named configs for `mrcnn-tf train --config NAME`."""
import pytest
from click.testing import CliRunner

from mrcnn_tf.wbc import presets
from mrcnn_tf.wbc.demo import DemoConfig
from mrcnn_tf.errors import ConfigError
from mrcnn_tf.lisc import LiscConfig


def test_registered_presets_and_default():
    assert presets.preset_names()[:2] == ("lisc", "demo") and presets.DEFAULT_PRESET == "lisc"
    assert presets.config_class("lisc") is LiscConfig and presets.config_class(" DEMO ") is DemoConfig
    config = presets.make_config("demo")
    assert isinstance(config, DemoConfig) and config.BACKBONE == "resnet18"
    assert type(presets.make_config()) is LiscConfig


def test_unknown_preset_is_a_one_line_error_listing_the_names():
    with pytest.raises(ConfigError) as info:
        presets.config_class("bcdd")
    assert str(info.value) == ("--config bcdd: unknown preset; use one of lisc, demo, bccd "
                               "(change single settings with --set KEY=VALUE)")


def test_a_new_preset_is_one_registry_line(monkeypatch):
    class SmallConfig(LiscConfig):
        NAME = "small"
        IMAGE_MIN_DIM = 256
        IMAGE_MAX_DIM = 256

    monkeypatch.setitem(presets.PRESETS, "small", SmallConfig)  # a class works as well as "module:Class"
    monkeypatch.setitem(presets.PRESETS, "lisc_again", "mrcnn_tf.lisc:LiscConfig")
    assert presets.make_config("small").IMAGE_MAX_DIM == 256
    assert presets.config_class("lisc_again") is LiscConfig


def test_train_config_applies_the_preset_then_set():
    from types import SimpleNamespace

    from mrcnn_tf.cli.train import _prepare_config, train

    config = _prepare_config(SimpleNamespace(kind="coco", path=None), ["IMAGE_MAX_DIM=128", "IMAGE_MIN_DIM=128"], "demo")
    assert config.NAME == "demo" and config.BACKBONE == "resnet18" and config.IMAGE_MAX_DIM == 128
    help_text = CliRunner().invoke(train, ["--help"]).output
    words = " ".join(help_text.split())
    assert "--config NAME" in help_text and "Named config preset: lisc, demo, bccd." in words
    assert "measured from the training data" in words and "a resumed or file start lisc" in words

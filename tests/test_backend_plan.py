"""The CPU backend's choices are decided in one place and recorded in the run's config (Config.CPU_KERNELS)."""
import json

import pytest
import tensorflow as tf

from helpers_model import tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf.backend import runtime
from mrcnn_tf.backend.plan import kernel_plan
from mrcnn_tf.config import Config
from mrcnn_tf.errors import ConfigError


@pytest.fixture
def cpu(monkeypatch):
    """A machine without a GPU whose AVX-512 the test chooses; the user's own switches cleared."""
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: [])
    monkeypatch.delenv("MRCNN_TF_CONV_FILTER_GRAD", raising=False)
    monkeypatch.delenv("MRCNN_TF_CONV_BANDS", raising=False)
    return lambda avx512: monkeypatch.setattr(runtime, "cpu_runs_avx512", lambda: avx512)


def test_avx512_runs_onednns_own_kernels(cpu):
    cpu(True)
    plan = kernel_plan()
    assert (plan["device"], plan["isa"], plan["conv_filter_grad"], plan["conv_bands"]) == (
        "cpu", "avx512", "native", "off")


def test_below_avx512_takes_the_products_and_bands_where_they_pay(cpu):
    cpu(False)
    plan = kernel_plan()
    assert (plan["isa"], plan["conv_filter_grad"], plan["conv_bands"]) == (
        "below-avx512", "matmul-where-faster", "where-faster")


def test_the_users_switches_are_what_the_plan_records(cpu, monkeypatch):
    cpu(False)
    monkeypatch.setenv("MRCNN_TF_CONV_FILTER_GRAD", "native")
    monkeypatch.setenv("MRCNN_TF_CONV_BANDS", "off")
    assert (kernel_plan()["conv_filter_grad"], kernel_plan()["conv_bands"]) == ("native", "off")
    monkeypatch.setenv("MRCNN_TF_CONV_FILTER_GRAD", "matmul")
    cpu(True)
    assert kernel_plan()["conv_filter_grad"] == "matmul"


def test_the_plan_records_whether_bf16_runs_on_the_cpus_own_units_and_faster(cpu, monkeypatch):
    cpu(True)
    for units, faster in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(runtime, "cpu_runs_bf16", lambda: units)
        monkeypatch.setattr(runtime, "cpu_bf16_faster", lambda: faster)
        assert (kernel_plan()["bf16_units"], kernel_plan()["bf16_faster"]) == (units, faster)


def test_a_gpu_needs_neither(cpu, monkeypatch):
    cpu(False)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: ["/GPU:0"])
    plan = kernel_plan()
    assert (plan["device"], plan["conv_filter_grad"], plan["conv_bands"]) == ("gpu", "native", "off")


def test_a_built_model_records_the_plan_in_its_config_json(tmp_path, cpu):
    cpu(True)
    config = tiny_config()
    assert config.CPU_KERNELS is None
    modellib.MaskRCNN("inference", config, str(tmp_path))
    assert config.CPU_KERNELS == dict(kernel_plan(), precision="float32") and config.CPU_KERNELS["isa"] == "avx512"
    saved = json.loads(config.save_json(tmp_path / "run.config.json").read_text())
    assert saved["CPU_KERNELS"]["conv_filter_grad"] == "native"
    # A record, never read back: the next machine decides for itself.
    assert type(config).load_json(tmp_path / "run.config.json").CPU_KERNELS is None
    with pytest.raises(ConfigError, match="CPU_KERNELS: a record of the backend's choices; choose them with "
                                          "MRCNN_TF_CONV_FILTER_GRAD"):
        Config().apply_overrides(['CPU_KERNELS={"isa": "avx2"}'])

"""Process-level TensorFlow settings (mrcnn_tf/backend/runtime.py): oneDNN on, quiet C++ logs, user settings kept.

These run in fresh subprocesses: the variables only matter before TensorFlow is imported.
"""
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from mrcnn_tf.backend import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


CHECK = ("import os, mrcnn_tf, tensorflow as tf\n"
         "from tensorflow.python.util import _pywrap_util_port as p\n"
         "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), p.IsMklEnabled())\n")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="TensorFlow's oneDNN kernels are x86 only")
def test_importing_mrcnn_tf_first_turns_onednn_on():
    assert _run(CHECK).stdout.split() == ["1", "True"]


def test_a_users_choice_to_turn_onednn_off_is_kept():
    assert _run(CHECK, TF_ENABLE_ONEDNN_OPTS="0").stdout.split() == ["0", "False"]


def test_tensorflow_imported_first_with_onednn_off_gets_a_warning():
    # The user's explicit 0 is a choice (no warning); the advice for a default-off CPU is unit-tested below.
    code = ("import warnings, tensorflow\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n    import mrcnn_tf\nprint(len(w))\n")
    assert _run(code, TF_ENABLE_ONEDNN_OPTS="0").stdout.split() == ["0"]


def test_onednn_advice_names_the_cause_and_the_fix():
    assert runtime.onednn_advice(True, None, tensorflow_first=True) is None
    assert runtime.onednn_advice(False, "0", tensorflow_first=True) is None
    assert runtime.onednn_advice(False, "false", tensorflow_first=False) is None
    first = runtime.onednn_advice(False, None, tensorflow_first=True)
    assert "Import mrcnn_tf before tensorflow" in first and "TF_ENABLE_ONEDNN_OPTS=1" in first
    assert "check the variable" in runtime.onednn_advice(False, "yes", tensorflow_first=False)


def test_configure_environment_keeps_user_values():
    assert runtime.configure_environment({}) == {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    mine = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "0"}
    assert runtime.configure_environment(dict(mine)) == mine


QUIET = ("import os\nfrom mrcnn_tf.cli import quiet_tensorflow_logs\nquiet_tensorflow_logs()\n"
         "import tensorflow as tf\ntf.config.list_physical_devices('GPU')\n(tf.constant(1.0) + 1).numpy()\n"
         "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n")


@pytest.mark.parametrize("user_level, expected", [(None, "3"), ("2", "2")])
def test_cli_mutes_the_cuda_probe_unless_the_user_set_a_level(user_level, expected):
    result = _run(QUIET, TF_CPP_MIN_LOG_LEVEL=user_level)
    assert result.stdout.split()[-1] == expected
    if user_level is None:
        assert "cuInit" not in result.stderr and "E0000" not in result.stderr


def test_cpu_runs_avx512_reads_the_flags_and_onednns_cap(tmp_path):
    from mrcnn_tf.backend import runtime

    zen5 = {"fpu", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16"}
    assert runtime.cpu_runs_avx512(zen5, environ={}) is True
    assert runtime.cpu_runs_avx512({"fpu", "avx2", "fma"}, environ={}) is False  # Zen 1-3
    assert runtime.cpu_runs_avx512({"avx2", "avx512f"}, environ={}) is False  # Knights Landing: no BW/VL/DQ
    for cap in ("AVX2", "avx2_vnni", "AVX", "SSE41"):  # oneDNN told to stay below AVX-512
        assert runtime.cpu_runs_avx512(zen5, environ={runtime.ISA_VARIABLE: cap}) is False
    for cap in ("AVX512_CORE", "AVX512_CORE_AMX", "ALL", ""):
        assert runtime.cpu_runs_avx512(zen5, environ={runtime.ISA_VARIABLE: cap}) is True
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512dq avx512bw avx512vl\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu\n")
    assert runtime.cpu_flags(str(cpuinfo)) >= runtime.AVX512_CORE_FLAGS  # the first CPU's line
    assert runtime.cpu_flags(str(tmp_path / "missing")) == frozenset()  # no /proc/cpuinfo (macOS...): no flags
    assert runtime.cpu_runs_avx512(frozenset(), environ={}) is False


def test_cpu_runs_bf16_needs_the_units_and_no_cap_below_them():
    from mrcnn_tf.backend import runtime

    avx512 = {"fpu", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"}
    zen4 = avx512 | {"avx512_bf16"}
    sapphire_rapids = avx512 | {"amx_tile", "amx_bf16", "amx_int8"}
    assert runtime.cpu_runs_bf16(zen4, environ={}) is True
    assert runtime.cpu_runs_bf16(sapphire_rapids, environ={}) is True
    assert runtime.cpu_runs_bf16(avx512, environ={}) is False  # Skylake, Ice Lake: bf16 would be emulated
    assert runtime.cpu_runs_bf16({"avx2", "fma"}, environ={}) is False
    assert runtime.cpu_runs_bf16(frozenset(), environ={}) is False
    for cap in ("AVX2", "AVX512_CORE", "avx512_core_vnni", "AVX", "SSE41"):  # oneDNN kept below its bf16 kernels
        assert runtime.cpu_runs_bf16(zen4, environ={runtime.ISA_VARIABLE: cap}) is False
    for cap in ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10_1_512", "ALL", ""):
        assert runtime.cpu_runs_bf16(sapphire_rapids, environ={runtime.ISA_VARIABLE: cap}) is True


def test_cpu_bf16_faster_on_amx_and_amd_only():
    from mrcnn_tf.backend import runtime

    avx512 = {"fpu", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"}
    avx512_bf16 = avx512 | {"avx512_bf16"}
    amx = avx512_bf16 | {"amx_tile", "amx_bf16", "amx_int8"}
    assert runtime.cpu_bf16_faster(avx512_bf16, environ={}, vendor="AuthenticAMD") is True  # Zen 4, Zen 5
    assert runtime.cpu_bf16_faster(amx, environ={}, vendor="GenuineIntel") is True  # Sapphire Rapids and later
    # Intel AVX512-BF16 without AMX (Cooper Lake; a VM hiding AMX): bfloat16 measured slower than float32.
    assert runtime.cpu_bf16_faster(avx512_bf16, environ={}, vendor="GenuineIntel") is False
    assert runtime.cpu_bf16_faster(avx512, environ={}, vendor="AuthenticAMD") is False  # no bf16 units: emulated
    assert runtime.cpu_bf16_faster(frozenset(), environ={}, vendor="") is False
    for cap in ("AVX512_CORE_BF16", "avx512_core_fp16", "AVX10_1_512"):  # oneDNN kept off AMX: its AVX512-BF16 alone
        assert runtime.cpu_bf16_faster(amx, environ={runtime.ISA_VARIABLE: cap}, vendor="GenuineIntel") is False
    for cap in ("AVX512_CORE_AMX", "AVX10_1_512_AMX", "ALL", ""):
        assert runtime.cpu_bf16_faster(amx, environ={runtime.ISA_VARIABLE: cap}, vendor="GenuineIntel") is True
    assert runtime.cpu_bf16_faster(avx512_bf16, environ={runtime.ISA_VARIABLE: "AVX2"}, vendor="AuthenticAMD") is False


def test_cpu_vendor_reads_the_first_cpu(tmp_path):
    from mrcnn_tf.backend import runtime

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n\n"
                       "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    assert runtime.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    assert runtime.cpu_vendor(str(tmp_path / "missing")) == ""

"""Process-level TensorFlow settings that must be in place before TensorFlow is imported.

Two facts drive this module:

- TensorFlow's Linux wheels turn their oneDNN kernels on by default only for CPUs with AVX512-VNNI,
  AVX512-BF16, AVX-VNNI or AMX (`DefaultOneDnnPolicy` in tensorflow/core/util/port.cc). On an AVX2-only
  CPU (many AMD EPYC and older Intel parts) convolutions and their gradients then run on Eigen kernels
  built for plain AVX, which allocate and fault in large scratch buffers on every call: a Mask R-CNN
  training step runs several times slower. oneDNN runs fine on AVX2, so mrcnn_tf asks for it unless the user
  chose otherwise.
- The variable is read once, while TensorFlow is imported: setting it later has no effect. Importing
  `mrcnn_tf` first is enough; when TensorFlow came first with oneDNN off, `check_onednn` says how to fix it.

`cpu_runs_avx512` tells the convolution layer which CPU tricks pay: the kernel gradient as matrix products
and the row bands (backend/conv_filter_grad.py, backend/band_conv.py) make up for oneDNN's slow AVX2 kernels,
and on an AVX-512 CPU they cost time instead (measured: bench/RESULTS.md).
"""
import functools
import os
import sys
import warnings

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"  # oneDNN's own cap on the instruction set its kernels use
# oneDNN's avx512_core: the AVX-512 subsets its AVX-512 kernels need.
AVX512_CORE_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
# bfloat16 dot-product units oneDNN runs bf16 convolutions and matmuls on: AVX512-BF16 (Zen 4, Cooper Lake) or AMX.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# ONEDNN_MAX_CPU_ISA values that stop oneDNN below its bf16 kernels (avx512_core_bf16 and up).
BELOW_BF16_CAPS = ("SSE", "AVX2", "AVX512_CORE_VNNI")
# ... and the bf16 levels below AMX (avx512_core_amx, avx10_1_512_amx): bf16 then runs on the AVX512-BF16 units alone.
BELOW_AMX_CAPS = frozenset({"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"})
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

# What the user had set before mrcnn_tf touched the environment (None: not set).
USER_ONEDNN = os.environ.get(ONEDNN_VARIABLE)
USER_LOG_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)


def configure_environment(environ=None):
    """Ask for oneDNN kernels and quiet C++ logs, keeping whatever the user set explicitly.

    Args:
        environ: the mapping to change (default `os.environ`).

    Returns:
        the mapping.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(ONEDNN_VARIABLE, "1")
    # Errors only from TensorFlow's C++ side unless the user asked for more; the CLI goes further (level 3).
    environ.setdefault(LOG_LEVEL_VARIABLE, "2")
    return environ


def _first_cpu_field(name, cpuinfo):
    """The value of the first `name` line in `cpuinfo` (Linux: the first CPU's), or "" where there is none."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The instruction-set flags of the first CPU in `cpuinfo` (Linux), or an empty set where there is none."""
    return frozenset(_first_cpu_field("flags", cpuinfo).split())


def cpu_runs_avx512(flags=None, environ=None):
    """Whether oneDNN's kernels run AVX-512 here: the CPU has avx512_core's flags and ONEDNN_MAX_CPU_ISA does not
    cap oneDNN below it (SSE41, AVX, AVX2, AVX2_VNNI...). False where the flags cannot be read.

    Args:
        flags: the CPU's flags (default: `cpu_flags()`); environ: the environment (default `os.environ`).
    """
    environ = os.environ if environ is None else environ
    cap = environ.get(ISA_VARIABLE, "").strip().upper()
    if cap.startswith(("SSE", "AVX2")) or cap == "AVX":
        return False
    return AVX512_CORE_FLAGS <= (cpu_flags() if flags is None else frozenset(flags))


def cpu_runs_bf16(flags=None, environ=None):
    """Whether oneDNN runs bfloat16 convolutions and matmuls on this CPU's own units (AVX512-BF16 or AMX) rather than
    emulating them: the flags are there and ONEDNN_MAX_CPU_ISA does not cap oneDNN below them. False where the flags
    cannot be read.

    Args:
        flags: the CPU's flags (default: `cpu_flags()`); environ: the environment (default `os.environ`).
    """
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else frozenset(flags)
    cap = environ.get(ISA_VARIABLE, "").strip().upper()
    if cap in ("AVX", "AVX512_CORE") or cap.startswith(BELOW_BF16_CAPS):
        return False
    return AVX512_CORE_FLAGS <= flags and bool(BF16_FLAGS & flags)


@functools.lru_cache(maxsize=None)
def cpu_vendor(cpuinfo="/proc/cpuinfo"):
    """The first CPU's vendor_id in `cpuinfo` (Linux: "GenuineIntel", "AuthenticAMD"), or "" where there is none."""
    return _first_cpu_field("vendor_id", cpuinfo)


def cpu_bf16_faster(flags=None, environ=None, vendor=None):
    """Whether bfloat16 trains and infers faster than float32 here: on AMX (Intel Sapphire Rapids and later) and on
    AMD's AVX512-BF16 (Zen 4 and later). Intel's AVX512-BF16 without AMX (Cooper Lake, or a Sapphire or Emerald
    Rapids whose VM hides AMX) ran the same Mask R-CNN slower in bfloat16 than in float32, TensorFlow and PyTorch
    alike (bench/RESULTS.md): False there.

    Args:
        flags: the CPU's flags (default `cpu_flags()`); environ: the environment (default `os.environ`);
        vendor: the CPU's vendor_id (default `cpu_vendor()`).
    """
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else frozenset(flags)
    if not cpu_runs_bf16(flags, environ):
        return False
    cap = environ.get(ISA_VARIABLE, "").strip().upper()
    if "amx_bf16" in flags and cap not in BELOW_AMX_CAPS:
        return True
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD" and "avx512_bf16" in flags


def onednn_enabled():
    """Whether this process's TensorFlow runs its oneDNN kernels (imports TensorFlow)."""
    from mrcnn_tf.backend.compat import private

    return bool(private("is_onednn_enabled")())


def onednn_advice(enabled, user_value, tensorflow_first):
    """The warning for a process whose TensorFlow runs without oneDNN, or None when there is nothing to say.

    Args:
        enabled: whether oneDNN is on in this process.
        user_value: the user's own TF_ENABLE_ONEDNN_OPTS (None if unset).
        tensorflow_first: whether TensorFlow was imported before mrcnn_tf.
    """
    if enabled or (user_value is not None and user_value.strip().lower() in ("0", "false")):
        return None  # on, or off on purpose
    if tensorflow_first:
        return ("TensorFlow was imported before mrcnn_tf with its oneDNN kernels off (the default on CPUs without "
                "AVX512-VNNI/BF16): convolutions then run several times slower on this CPU. Import mrcnn_tf before "
                f"tensorflow, or set {ONEDNN_VARIABLE}=1 before starting Python")
    return (f"TensorFlow's oneDNN kernels are off although {ONEDNN_VARIABLE}={os.environ.get(ONEDNN_VARIABLE)!r}: "
            "convolutions run several times slower on this CPU; check the variable's value (0/1)")


def check_onednn():
    """Warn once when TensorFlow is already imported and runs without oneDNN; returns the advice or None."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        enabled = onednn_enabled()
    except (ImportError, AttributeError):  # a TensorFlow build without the util port: nothing to check
        return None
    advice = onednn_advice(enabled, USER_ONEDNN, tensorflow_first=_TENSORFLOW_FIRST)
    if advice:
        warnings.warn(advice, RuntimeWarning, stacklevel=2)
    return advice


_TENSORFLOW_FIRST = "tensorflow" in sys.modules

"""Every private TensorFlow and Keras API mrcnn_tf uses, in one place.

The table gives the name `private(...)` takes, the private module, and what mrcnn_tf does where it is gone
(no public API offers any of them in Keras 3.15 / TensorFlow 2.21). `tests/test_compat.py` imports every one of them, so an upgrade that moves a name fails
there, loudly, instead of silently taking a slower or larger path at run time.

    in_symbolic_scope       keras.src.backend.common.symbolic_scope      BatchNorm then sees only KerasTensors
    saving_lib              keras.src.saving.saving_lib                   checkpoints keep the optimizer's slots
    could_possibly_record   tensorflow.python.eager.record                the matmul kernel gradient is assumed
    is_onednn_enabled       tensorflow.python.util._pywrap_util_port      the oneDNN check says nothing
    PyDatasetAdapter        keras.src.trainers.data_adapters              (bench/data_pipeline.py only)
"""
import importlib
import warnings

# name -> (module, attribute or None for the module itself)
PRIVATE_APIS = {
    "in_symbolic_scope": ("keras.src.backend.common.symbolic_scope", "in_symbolic_scope"),
    "saving_lib": ("keras.src.saving.saving_lib", None),
    "could_possibly_record": ("tensorflow.python.eager.record", "could_possibly_record"),
    "is_onednn_enabled": ("tensorflow.python.util._pywrap_util_port", "IsMklEnabled"),
    "PyDatasetAdapter": ("keras.src.trainers.data_adapters.py_dataset_adapter", "PyDatasetAdapter"),
}
_warned = set()


class PrivateApiMissing(ImportError):
    """A private TensorFlow/Keras name mrcnn_tf relies on is not where it was (an upgrade moved it)."""


def private(name):
    """The private object `name` of `PRIVATE_APIS`.

    Raises:
        PrivateApiMissing: one line naming the module, the attribute and the installed versions.
    """
    module_name, attribute = PRIVATE_APIS[name]
    try:
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise PrivateApiMissing(f"{module_name}{'.' + attribute if attribute else ''} is gone in this "
                                f"{_versions()} ({exc}); mrcnn_tf is tested on TensorFlow 2.21 with "
                                "Keras 3.15: install those, or report the new location") from None


def private_or_none(name, consequence):
    """`private(name)`, or None with a warning (once per name) saying what mrcnn_tf does without it."""
    try:
        return private(name)
    except PrivateApiMissing as exc:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"{exc}; {consequence}", RuntimeWarning, stacklevel=3)
        return None


def _versions():
    found = []
    for package in ("tensorflow", "keras"):
        try:
            found.append(f"{package} {importlib.import_module(package).__version__}")
        except (ImportError, AttributeError):
            found.append(f"{package} (not importable)")
    return ", ".join(found)

"""Every private TensorFlow/Keras name in mrcnn_tf.backend.compat is still where it was.

An upgrade that moves one fails here, by name, instead of sending mrcnn_tf down a slower path at run time.
"""
import pathlib
import re

import pytest

import mrcnn_tf
from mrcnn_tf.backend import compat

PACKAGE = pathlib.Path(mrcnn_tf.__file__).parent


@pytest.mark.parametrize("name", sorted(compat.PRIVATE_APIS))
def test_each_private_api_is_where_compat_says(name):
    found = compat.private(name)
    assert found is not None and (callable(found) or hasattr(found, "__name__")), name


def test_the_private_apis_behave_as_mrcnn_tf_uses_them():
    import keras
    import tensorflow as tf

    assert compat.private("in_symbolic_scope")() is False
    assert hasattr(compat.private("saving_lib"), "save_weights_only")
    assert hasattr(compat.private("saving_lib"), "H5IOStore")
    assert compat.private("could_possibly_record")() is False
    with tf.GradientTape():
        assert compat.private("could_possibly_record")() is True
    assert isinstance(compat.private("is_onednn_enabled")(), bool)
    assert issubclass(compat.private("PyDatasetAdapter"), object) and keras.utils.PyDataset


def test_a_moved_name_is_one_loud_line(monkeypatch):
    monkeypatch.setitem(compat.PRIVATE_APIS, "gone", ("keras.src.no_such_module", "thing"))
    with pytest.raises(compat.PrivateApiMissing, match=r"^keras\.src\.no_such_module\.thing is gone in this "
                                                       r"tensorflow 2\.\d+.*keras 3\.\d+"):
        compat.private("gone")
    compat._warned.discard("gone")
    with pytest.warns(RuntimeWarning, match="no_such_module.*; checkpoints grow"):
        assert compat.private_or_none("gone", "checkpoints grow") is None


def test_no_private_api_outside_compat():
    """The package and the benchmarks reach private TensorFlow/Keras names only through compat."""
    private = re.compile(r"^\s*(from|import)\s+(keras\.src|tensorflow\.python)\b", re.M)
    sources = list(PACKAGE.rglob("*.py")) + list((PACKAGE.parent / "bench").glob("*.py"))
    offenders = [str(p) for p in sources if p.name != "compat.py" and private.search(p.read_text(encoding="utf-8"))]
    assert offenders == []

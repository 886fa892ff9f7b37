"""Shared test set-up: quiet, deterministic TensorFlow on a small CPU budget."""
import os
import sys

# Test helpers (helpers_model.py, ...) are imported by name; importlib import mode does not put
# this folder on sys.path by itself.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A seeded numpy Generator, fresh for each test."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Same random weights and samples in every run: tests on random-weight models stay repeatable."""
    import keras

    keras.utils.set_random_seed(1234)


def pytest_collection_modifyitems(config, items):
    """Slow tests and the sample notebooks first: started early they overlap the rest on the other worker
    (`-n 2`); collected last (tests/test_multi_worker.py sorts late, samples/ after tests/) they ran alone
    for minutes at the end."""
    def heavy(item):
        return item.get_closest_marker("slow") is not None or item.nodeid.endswith(".ipynb")

    items.sort(key=lambda item: not heavy(item))

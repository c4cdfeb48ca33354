import os
import sys

import numpy as np
import pytest

import keras

sys.path.insert(0, os.path.dirname(__file__))
# The papers' published figures live with the benchmarks that print them (benchmarks/papers.py).
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

BACKEND = keras.backend.backend()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randomize(layer, rng, scale=1.0):
    """Gives every variable of a built layer independent random values."""
    for variable in layer.weights:
        variable.assign(
            (scale * rng.standard_normal(variable.shape)).astype(variable.dtype)
        )


def assert_close(actual, expected, rtol=1e-5, atol=None):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-12)
    err = np.abs(actual - expected).max()
    bound = atol if atol is not None else rtol * scale
    assert err <= bound, f"max abs error {err:.3g} > {bound:.3g} (scale {scale:.3g})"

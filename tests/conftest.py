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


def weight_gradients(layer, x, cotangent, training=True):
    """NumPy gradients of `sum(layer(x) * cotangent)` w.r.t. `layer.trainable_variables`, on the current backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=training) * cotangent)
        grads = tape.gradient(loss, layer.trainable_variables)
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        fixed = [v.value for v in layer.non_trainable_variables]

        def loss(trainable):
            y, _ = layer.stateless_call(trainable, fixed, x, training=training)
            return jnp.sum(y * cotangent)

        grads = jax.grad(loss)([v.value for v in layer.trainable_variables])
    else:
        import torch

        y = layer(x, training=training)
        loss = (y * torch.as_tensor(cotangent, device=y.device)).sum()
        grads = torch.autograd.grad(loss, [v.value for v in layer.trainable_variables])
    return [np.asarray(keras.ops.convert_to_numpy(g), dtype=np.float64) for g in grads]

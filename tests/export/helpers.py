"""Shared helpers of the export tests."""

import functools
import os

import numpy as np

import keras

# CI installs Mesa (scripts/install_mesa.sh) and sets this, so that a GPU
# check that could not start fails there instead of being skipped.
REQUIRE_GPU_RUN = os.environ.get("KERAS_EFFCONV_REQUIRE_GPU_CHECK") == "1"


def randomize_statistics(model, seed=0):
    """Non-trivial BN statistics and biases, so folding mistakes show up."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        path = v.path
        if "moving_variance" in path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif "moving_mean" in path or "beta" in path or path.endswith("bias"):
            v.assign((0.1 * rng.standard_normal(v.shape)).astype("float32"))
        elif "gamma" in path or "upsample" in path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def max_rel_diff(a, b):
    a = np.asarray(keras.ops.convert_to_numpy(a), "float64")
    b = np.asarray(keras.ops.convert_to_numpy(b), "float64")
    return float(np.abs(a - b).max() / max(1.0, np.abs(a).max()))


def assert_gpu_check(check):
    """Static rules pass; the GPU run passed, or was skipped with a reason."""
    assert check.static_ok, check.violations
    if check.run_status == "skipped":
        assert check.run_reason, "a skipped GPU run must say why"
        assert not REQUIRE_GPU_RUN, f"GPU run skipped although required: {check.run_reason}"
    else:
        assert check.run_status == "passed", check.run_reason
        assert check.fully_accelerated is True
        assert check.max_abs_diff <= check.tolerance


@functools.lru_cache(maxsize=1)
def trained_fashion_mnist():
    """A small HetConv/IGC network trained for one epoch on 30k real Fashion-MNIST images (cached)."""
    from keras_effconv import layers as eff
    from keras_effconv.datasets import fashion_mnist

    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    x_train = x_train[..., None].astype("float32") / 255.0
    x_test = x_test[..., None].astype("float32") / 255.0
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = eff.HetConv2D(32, 3, strides=2, part=4, use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = eff.InterleavedGroupConv2D(64, 3, strides=2, primary_groups=4, use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train[:30000], y_train[:30000], batch_size=64, epochs=1, verbose=0)
    return model, x_train, y_train, x_test, y_test

"""Keras conventions that every layer must follow (DESIGN.md section 2)."""

import os

import numpy as np
import pytest

import keras

import reference
from cases import INPUT_CHANNELS, KERAS_SUBCLASS_CASES, LAYER_CASES
from conftest import BACKEND, assert_close, randomize

NAMES = sorted(LAYER_CASES)
LIBRARY_NAMES = sorted(set(LAYER_CASES) - KERAS_SUBCLASS_CASES)


def make(name, **kwargs):
    return LAYER_CASES[name](**kwargs)


def built(name, rng, shape=(2, 9, 10, INPUT_CHANNELS), **kwargs):
    layer = make(name, **kwargs)
    layer.build(shape)
    randomize(layer, rng, scale=0.3)
    return layer


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name, rng):
    layer = built(name, rng)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build((2, 9, 10, INPUT_CHANNELS))
    clone.set_weights(layer.get_weights())
    x = rng.standard_normal((2, 9, 10, INPUT_CHANNELS)).astype("float32")
    assert_close(reference.to_numpy(clone(x)), reference.to_numpy(layer(x)), atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_round_trip(name, rng, tmp_path):
    inputs = keras.Input((None, None, INPUT_CHANNELS))
    model = keras.Model(inputs, make(name)(inputs))
    for v in model.weights:
        v.assign((0.3 * rng.standard_normal(v.shape)).astype("float32"))
    x = rng.standard_normal((2, 9, 10, INPUT_CHANNELS)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_close(loaded.predict(x, verbose=0), expected, atol=0)
    weights_path = tmp_path / "m.weights.h5"
    model.save_weights(weights_path)
    fresh = keras.Model(inputs, make(name)(inputs))
    fresh.load_weights(weights_path)
    assert_close(fresh.predict(x, verbose=0), expected, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_batch_and_spatial_sizes(name, rng):
    layer = make(name)
    inputs = keras.Input((None, None, INPUT_CHANNELS))
    outputs = layer(inputs)
    assert outputs.shape[0] is None and outputs.shape[1] is None
    model = keras.Model(inputs, outputs)
    for size in [(7, 9), (12, 12)]:
        x = rng.standard_normal((3,) + size + (INPUT_CHANNELS,)).astype("float32")
        y = model.predict(x, verbose=0)
        assert y.shape == layer.compute_output_shape(x.shape)


# Widths 8, 16 and 24 make the output width equal `filters` for every case (stride 1 or 2,
# 8 or 12 filters): where Keras' TensorFlow `ops.add` used to put a channels_first bias on
# the width axis.
@pytest.mark.parametrize("width", [8, 16, 24])
@pytest.mark.parametrize("name", NAMES)
def test_channels_first_equals_channels_last(name, width, rng):
    last = built(name, rng, shape=(2, 9, width, INPUT_CHANNELS))
    first = make(name, data_format="channels_first")
    first.build((2, INPUT_CHANNELS, 9, width))
    first.set_weights(last.get_weights())
    x = rng.standard_normal((2, 9, width, INPUT_CHANNELS)).astype("float32")
    y_last = reference.to_numpy(last(x))
    y_first = reference.to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    assert_close(np.transpose(y_first, (0, 2, 3, 1)), y_last)
    assert first.compute_output_shape((None, INPUT_CHANNELS, 9, width))[1:] == (
        y_first.shape[1:]
    )


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision(name, policy, rng):
    if policy == "mixed_float16" and BACKEND == "torch":
        pytest.skip("torch CPU kernels lack float16 convolutions; bfloat16 is covered")
    layer = make(name, dtype=policy)
    x = rng.standard_normal((2, 9, 10, INPUT_CHANNELS)).astype("float32")
    y = layer(x)
    assert all(v.dtype == "float32" for v in layer.weights)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    reference_layer = make(name)
    reference_layer.build(x.shape)
    reference_layer.set_weights(layer.get_weights())
    expected = reference.to_numpy(reference_layer(x))
    assert_close(reference.to_numpy(y), expected, rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_trains_one_step_compiled(name, rng):
    # XLA on TensorFlow and JAX; torch trains eagerly.
    jit = BACKEND in ("tensorflow", "jax")
    inputs = keras.Input((8, 8, INPUT_CHANNELS))
    x = make(name)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
    data = rng.standard_normal((8, 8, 8, INPUT_CHANNELS)).astype("float32")
    target = rng.standard_normal((8, 3)).astype("float32")
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(data, target, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert all(changed), "every weight must receive a gradient"


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_rejects_wrong_rank_and_unknown_channels(name):
    with pytest.raises(ValueError, match=r"rank-4.*input_shape=\(2, 9, 8\)"):
        make(name).build((2, 9, 8))
    with pytest.raises(ValueError, match="known channel dimension"):
        make(name).build((2, 9, 9, None))


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_rejects_unknown_data_format(name):
    with pytest.raises(ValueError, match=r"data_format.*'channels_middle'"):
        make(name, data_format="channels_middle")


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_compute_macs_is_an_int(name):
    layer = make(name)
    macs = layer.compute_macs((9, 10, INPUT_CHANNELS))
    assert isinstance(macs, int) and macs >= 0
    assert layer.compute_macs((None, 9, 10, INPUT_CHANNELS)) == macs

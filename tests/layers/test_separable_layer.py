import os

import numpy as np
import pytest

import keras

import reference
from conftest import assert_close, randomize, weight_gradients
from keras_effconv.conv_methods import get_conv_method
from keras_effconv.layers import DepthwiseSeparableConv2D

GEOMETRIES = [
    dict(strides=1, padding="same", dilation_rate=1),
    dict(strides=2, padding="same", dilation_rate=1),
    dict(strides=2, padding="valid", dilation_rate=1),
    dict(strides=1, padding="same", dilation_rate=2),
]


def _separable_reference(x, depthwise, pointwise, bias, geometry):
    """NumPy: depthwise conv, then the 1x1 conv, then the bias."""
    g = geometry
    y = reference.depthwise2d(x, depthwise, (g["strides"],) * 2, g["padding"], (g["dilation_rate"],) * 2)
    return reference.conv2d(y, pointwise, padding="valid") + bias


def _random_layer(rng, filters, multiplier, geometry):
    """(input, built layer with random weights, its weights as NumPy) for a 9x8x3 input."""
    x = rng.standard_normal((2, 9, 8, 3)).astype("float32")
    layer = DepthwiseSeparableConv2D(filters, 3, depth_multiplier=multiplier, **geometry)
    layer.build(x.shape)
    randomize(layer, rng)
    return x, layer, [reference.to_numpy(w) for w in layer.weights]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_matches_numpy_and_keras_separable_conv(rng, geometry, multiplier):
    x, layer, (depthwise, pointwise, bias) = _random_layer(rng, 5, multiplier, geometry)
    y = reference.to_numpy(layer(x))
    assert_close(y, _separable_reference(x, depthwise, pointwise, bias, geometry))
    # keras' own layer with the same weights computes the same function.
    keras_layer = keras.layers.SeparableConv2D.from_config(layer.get_config())
    keras_layer.build(x.shape)
    keras_layer.set_weights(layer.get_weights())
    assert_close(y, reference.to_numpy(keras_layer(x)))


def test_channels_first_and_activation(rng):
    x = rng.standard_normal((2, 7, 7, 4)).astype("float32")
    layer = DepthwiseSeparableConv2D(6, 3, padding="same", activation="relu", data_format="channels_first")
    layer.build((2, 4, 7, 7))
    randomize(layer, rng)
    depthwise, pointwise, bias = (reference.to_numpy(w) for w in layer.weights)
    y = reference.to_numpy(layer(np.transpose(x, (0, 3, 1, 2))))
    expected = np.maximum(_separable_reference(x, depthwise, pointwise, bias, GEOMETRIES[0]), 0.0)
    assert_close(np.transpose(y, (0, 2, 3, 1)), expected)


# Every geometry of the shift form's own gradient is checked in test_core; here the two halves' composition.
@pytest.mark.parametrize("geometry", GEOMETRIES[1::2])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_gradients_match_the_chain_rule_through_the_dense_kernel(rng, geometry, multiplier):
    # The layer equals a dense conv with K[i, j, c, n] = sum_m D[i, j, c, m] P[c M + m, n], so its
    # weight gradients are the NumPy dense kernel gradient G pulled back through that product.
    x, layer, (depthwise, pointwise, _) = _random_layer(rng, 4, multiplier, geometry)
    depthwise, pointwise = depthwise.astype("float64"), pointwise.astype("float64")
    y = reference.to_numpy(layer(x))
    cotangent = rng.standard_normal(y.shape).astype("float32")
    g = geometry
    dense_grad = reference.conv2d_kernel_gradient(
        x, cotangent, (3, 3, 3, 4), (g["strides"],) * 2, g["padding"], (g["dilation_rate"],) * 2
    )
    p = pointwise[0, 0].reshape(3, multiplier, 4)  # (c, m, n)
    expected_depthwise = np.einsum("ijcn,cmn->ijcm", dense_grad, p)
    expected_pointwise = np.einsum("ijcn,ijcm->cmn", dense_grad, depthwise).reshape(1, 1, 3 * multiplier, 4)
    grad_depthwise, grad_pointwise, grad_bias = weight_gradients(layer, x, cotangent)
    assert_close(grad_depthwise, expected_depthwise)
    assert_close(grad_pointwise, expected_pointwise)
    assert_close(grad_bias, cotangent.sum(axis=(0, 1, 2)))


def test_is_the_depthwise_separable_method_and_round_trips(rng, tmp_path):
    method = get_conv_method("depthwise_separable")
    conv2d = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    layer = method.build_layer(conv2d.get_config(), method.default_config)
    assert type(layer) is DepthwiseSeparableConv2D and isinstance(layer, keras.layers.SeparableConv2D)
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layer(inputs))
    randomize(layer, rng)
    x = rng.standard_normal((2, 8, 8, 4)).astype("float32")
    path = os.path.join(tmp_path, "separable.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is DepthwiseSeparableConv2D
    assert_close(reference.to_numpy(loaded(x)), reference.to_numpy(model(x)))

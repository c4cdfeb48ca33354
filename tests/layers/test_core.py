import numpy as np
import pytest

import keras

import reference
from conftest import BACKEND, assert_close
from keras_effconv.layers import CompConv2D, HetConv2D
from keras_effconv.layers import _core


@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (2, "same", 1), (2, "valid", 1), (1, "same", 2), (1, "valid", 2)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_both_depthwise_forms_match_reference(rng, strides, padding, dilation, multiplier):
    x = rng.standard_normal((2, 9, 8, 6)).astype("float32")
    k = rng.standard_normal((3, 3, 6, multiplier)).astype("float32")
    ref = reference.depthwise2d(x, k, (strides,) * 2, padding, (dilation,) * 2)
    for form in ("native", "shift"):
        y = _core.depthwise_conv(x, k, strides, padding, dilation, "channels_last", form=form)
        assert_close(reference.to_numpy(y), ref)


@pytest.mark.parametrize("form", ["native", "split"])
def test_both_grouped_forms_match_reference(rng, form):
    x = rng.standard_normal((2, 7, 7, 8)).astype("float32")
    k = rng.standard_normal((3, 3, 2, 12)).astype("float32")
    dense = np.zeros((3, 3, 8, 12))
    for g in range(4):
        dense[:, :, 2 * g : 2 * g + 2, 3 * g : 3 * g + 3] = k[:, :, :, 3 * g : 3 * g + 3]
    y = _core.grouped_conv(x, k, 4, strides=2, padding="same", form=form)
    assert_close(reference.to_numpy(y), reference.conv2d(x, dense, (2, 2), "same"))


def test_fast_forms_cover_every_backend():
    for backend in ("tensorflow", "jax", "torch"):
        assert set(_core._FAST_FORMS[backend]) == {"grouped", "depthwise", "hetconv", "interleaved_pointwise"}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TF graphs have unknown spatial sizes inside call()")
@pytest.mark.parametrize("factory", [lambda: HetConv2D(8, 3, strides=2, part=2), lambda: CompConv2D(12, 3, strides=2, depth=2)])
def test_dynamic_spatial_shapes_in_tf_graph(rng, factory):
    import tensorflow as tf

    layer = factory()
    layer.build((None, None, None, 8))
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 8))])
    for size in [(7, 9), (8, 8)]:
        x = rng.standard_normal((2,) + size + (8,)).astype("float32")
        assert_close(traced(x).numpy(), reference.to_numpy(layer(x)))

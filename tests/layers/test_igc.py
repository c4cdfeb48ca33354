import numpy as np
import pytest

from keras import ops

import reference
from conftest import assert_close, randomize, weight_gradients
from keras_effconv.layers import InterleavedGroupConv2D


def paper_kernel(layer, c_in, primary_w=None, secondary_w=None):
    """Block-diagonal primary x interleave x block-diagonal secondary x inverse interleave.

    `primary_w` `(kh, kw, c_in/L, G)` and `secondary_w` `(L, n)` default to the layer's weights.
    """
    l, m, n = layer.primary_groups, layer.width // layer.primary_groups, layer.filters
    g_width, f = l * m, n // m
    kh, kw = layer.kernel_size
    if primary_w is None:
        primary_w = reference.to_numpy(layer.primary_kernel)
    if secondary_w is None:
        secondary_w = reference.to_numpy(layer.secondary_kernel)[0, 0]
    cg = c_in // l
    primary = np.zeros((kh, kw, c_in, g_width))
    for a in range(l):  # partition a: inputs [a*cg, (a+1)*cg) -> outputs [a*M, (a+1)*M)
        primary[:, :, a * cg : (a + 1) * cg, a * m : (a + 1) * m] = primary_w[:, :, :, a * m : (a + 1) * m]
    interleave = np.zeros((g_width, g_width))  # position j*L + a <- channel a*M + j
    for a in range(l):
        for j in range(m):
            interleave[a * m + j, j * l + a] = 1
    secondary = np.zeros((g_width, n))  # partition j: positions [j*L, (j+1)*L) -> [j*F, (j+1)*F)
    for j in range(m):
        secondary[j * l : (j + 1) * l, j * f : (j + 1) * f] = secondary_w[:, j * f : (j + 1) * f]
    inverse = np.zeros((n, n))  # channel f*M + j <- position j*F + f
    for j in range(m):
        for q in range(f):
            inverse[j * f + q, q * m + j] = 1
    return np.einsum("hwig,go->hwio", primary, interleave @ secondary @ inverse)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("groups", [(4, 4), (2, 8), (1, 16), (16, 1)])
def test_matches_dense_conv_and_paper_rule(rng, strides, padding, groups):
    l, m = groups
    layer = InterleavedGroupConv2D(
        16, 3, strides=strides, padding=padding, primary_groups=l, secondary_groups=m, use_bias=False
    )
    x = rng.standard_normal((2, 9, 10, 16)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    expected_kernel = paper_kernel(layer, 16)
    assert_close(reference.to_numpy(layer.dense_kernel()), expected_kernel)
    y = reference.to_numpy(layer(x))
    assert_close(y, reference.conv2d(x, expected_kernel, (strides,) * 2, padding))
    keras_ref = ops.conv(x, layer.dense_kernel(), strides=strides, padding=padding)
    assert_close(y, reference.to_numpy(keras_ref))


@pytest.mark.parametrize("form", InterleavedGroupConv2D.EXECUTION_FORMS)
@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "valid")])
def test_every_execution_form_matches_paper_kernel_and_its_gradient(rng, form, strides, padding):
    layer = InterleavedGroupConv2D(
        8, 3, strides=strides, padding=padding, primary_groups=2, secondary_groups=4, use_bias=False, execution=form
    )
    x = rng.standard_normal((2, 9, 10, 8)).astype("float32")
    layer.build(x.shape)
    assert layer.execution_form(x.shape, training=True) == form
    randomize(layer, rng)
    primary, secondary = (reference.to_numpy(layer.primary_kernel), reference.to_numpy(layer.secondary_kernel)[0, 0])
    expected_kernel = paper_kernel(layer, 8)
    y = reference.to_numpy(layer(x))
    assert_close(y, reference.conv2d(x, expected_kernel, (strides,) * 2, padding))
    cotangent = rng.standard_normal(y.shape).astype("float32")
    d_kernel = reference.conv2d_kernel_gradient(x, cotangent, expected_kernel.shape, (strides,) * 2, padding)

    # The dense kernel is linear in each weight tensor: a weight's gradient is the dense-kernel
    # gradient paired with the kernel that weight's unit vector makes (the other tensor fixed).
    def pulled_back(shape, kernel_of):
        grad = np.zeros(shape)
        for index in np.ndindex(*shape):
            unit = np.zeros(shape)
            unit[index] = 1.0
            grad[index] = np.sum(d_kernel * kernel_of(unit))
        return grad

    expected_primary = pulled_back(primary.shape, lambda unit: paper_kernel(layer, 8, unit, secondary))
    expected_secondary = pulled_back(secondary.shape, lambda unit: paper_kernel(layer, 8, primary, unit))
    got_primary, got_secondary = weight_gradients(layer, x, cotangent)
    assert_close(got_primary, expected_primary, rtol=1e-4)
    assert_close(got_secondary[0, 0], expected_secondary, rtol=1e-4)


def test_width_differs_from_channels(rng):
    # C_in = 12, G = L*M = 3*4 = 12 -> filters = 8 (M = 4 partitions of F = 2).
    layer = InterleavedGroupConv2D(8, 3, primary_groups=3, secondary_groups=4, use_bias=False)
    x = rng.standard_normal((1, 7, 7, 12)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    assert_close(reference.to_numpy(layer(x)), reference.conv2d(x, paper_kernel(layer, 12)))


@pytest.mark.parametrize("l, m", [(4, 16), (2, 32), (1, 64), (64, 1), (8, 8)])
def test_params_and_macs_formula(l, m):
    g, k = 64, 3
    layer = InterleavedGroupConv2D(g, k, primary_groups=l, secondary_groups=m)
    layer.build((None, 10, 10, g))
    expected = g * g * (k * k / l + 1 / m)
    assert layer.count_params() - g == pytest.approx(expected)
    assert layer.compute_macs((10, 10, g)) == pytest.approx(100 * expected)


def test_default_secondary_groups_keeps_width():
    layer = InterleavedGroupConv2D(64, 3, primary_groups=4)
    assert layer.width == 64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(filters=16, primary_groups=0), "primary_groups"),
        (dict(filters=16, primary_groups=3), "primary_groups=3.*filters=16"),
        (dict(filters=16, primary_groups=2, secondary_groups=3), "secondary_groups=3"),
        (dict(filters=16, secondary_groups=-1), "secondary_groups"),
        (dict(filters=16, padding="causal"), "padding"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InterleavedGroupConv2D(**kwargs)


def test_primary_groups_must_divide_input_channels():
    with pytest.raises(ValueError, match=r"primary_groups=4.*input channels=6"):
        InterleavedGroupConv2D(8, 3, primary_groups=4, secondary_groups=2).build((None, 8, 8, 6))


@pytest.mark.parametrize(
    "backend, channels, training, expected",
    [
        ("tensorflow", 16, False, "dense"),
        ("tensorflow", 64, True, "folded"),
        ("tensorflow", 512, False, "contraction"),
        ("jax", 32, True, "contraction"),
        ("jax", 16, False, "dense"),
        ("jax", 32, False, "dense"),
        ("jax", 64, False, "contraction"),
        ("torch", 32, False, "dense"),
        ("torch", 128, True, "folded"),
        ("torch", None, False, "folded"),
    ],
)
def test_auto_execution_rule(backend, channels, training, expected):
    from keras_effconv.layers.igc import choose_igc_execution

    assert choose_igc_execution(4, channels, training, backend, xla=False) == expected


@pytest.mark.parametrize("channels, training, expected", [(32, False, "dense"), (32, True, "dense"),
                                                           (64, True, "folded"), (512, False, "contraction")])
def test_auto_execution_rule_under_tensorflow_xla(channels, training, expected):
    from keras_effconv.layers.igc import choose_igc_execution

    assert choose_igc_execution(4, channels, training, "tensorflow", xla=True) == expected


def test_execution_is_validated_and_serialized():
    with pytest.raises(ValueError, match="execution.*'auto', 'folded', 'contraction', 'dense'"):
        InterleavedGroupConv2D(8, 3, primary_groups=2, execution="fast")
    config = InterleavedGroupConv2D(8, 3, primary_groups=2, execution="contraction").get_config()
    assert InterleavedGroupConv2D.from_config(config).execution == "contraction"

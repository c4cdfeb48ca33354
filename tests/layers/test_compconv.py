import numpy as np
import pytest

import reference
from conftest import assert_close, randomize
from keras_effconv.layers import CompConv2D
from keras_effconv.layers.compconv import auto_depth


def centre_samples(x, k, stride, padding):
    """Input at the centre tap of each window (TensorFlow padding convention)."""
    length = x.shape[1]
    if padding == "same":
        before, _ = reference.same_padding(length, k, stride, 1)
        start = (k - 1) // 2 - before
        out = -(-length // stride)
    else:
        start = (k - 1) // 2
        out = (length - k) // stride + 1
    rows = start + stride * np.arange(out)
    length_w = x.shape[2]
    if padding == "same":
        before_w, _ = reference.same_padding(length_w, k, stride, 1)
        start_w = (k - 1) // 2 - before_w
        out_w = -(-length_w // stride)
    else:
        start_w, out_w = (k - 1) // 2, (length_w - k) // stride + 1
    cols = start_w + stride * np.arange(out_w)
    return x[:, rows][:, :, cols]


def numpy_compconv(layer, x, stride, padding):
    """The documented recursion, written independently with NumPy."""
    d, cp, c_in, k = layer.resolved_depth, layer.c_prim, x.shape[-1], layer.kernel_size[0]
    weights = {w.path.split("/")[-1]: reference.to_numpy(w) for w in layer.weights}
    q = reference.conv2d(x, weights["primary_kernel"], (stride, stride), padding)
    parts, start = [], 0
    for i in range(1, d):
        width = 2 ** (i - 1) * cp
        channels = [(start + t) % c_in for t in range(width)]
        start += width
        identity = centre_samples(x[..., channels], k, stride, padding)
        x_i = np.concatenate([identity, q], axis=-1)
        parts.append(x_i)
        q = reference.conv2d(x_i, weights[f"recursive_kernel_{i + 1}"])
    parts.append(q)
    if "tailing_kernel" in weights:
        parts.append(reference.conv2d(q, weights["tailing_kernel"]))
    y = np.concatenate(parts, axis=-1)
    n = layer.filters
    assert y.shape[-1] == n
    half = -(-n // 2)
    order = [h * half + t for t in range(half) for h in range(2) if h * half + t < n]
    return y[..., order] + weights["bias"]


def paper_formula(h, w, k, c_in, c_prim, d):
    return h * w * k * k * (
        c_in * c_prim + sum((2**i * c_prim) ** 2 for i in range(1, d)) + (2 ** (d - 1) * c_prim) ** 2
    )


@pytest.mark.parametrize("filters", [16, 24, 64, 100, 256])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_exact_channels_and_macs(filters, depth):
    layer = CompConv2D(filters, 3, depth=depth)
    layer.build((None, 8, 8, 32))
    assert layer.compute_output_shape((None, 8, 8, 32)) == (None, 8, 8, filters)
    c_prim = -(-filters // (2 * (2**depth - 1)))
    assert layer.c_prim == c_prim
    paper = paper_formula(8, 8, 3, 32, c_prim, depth)
    assert layer.paper_macs((8, 8, 32)) == paper
    surplus = 2 * (2**depth - 1) * c_prim - filters
    if surplus == 0:
        assert layer.compute_macs((8, 8, 32)) == paper
    # Removed surplus channels are not computed: exactly their MACs are saved.
    tail = 2 ** (depth - 1) * c_prim
    dropped_tail = min(surplus, tail)
    dropped_q = surplus - dropped_tail
    saved = 9 * 64 * (dropped_tail * tail + dropped_q * (2 ** (depth - 1) * c_prim if depth > 1 else 32))
    assert layer.compute_macs((8, 8, 32)) == paper - saved


@pytest.mark.parametrize(
    "filters, depth, strides, padding",
    [(16, 1, 1, "same"), (24, 2, 1, "same"), (16, 3, 1, "same"), (100, 3, 2, "same"),
     (64, 2, 2, "valid"), (25, 2, 1, "valid"), (20, 3, 2, "same")],
)
def test_matches_numpy_recursion(rng, filters, depth, strides, padding):
    layer = CompConv2D(filters, 3, strides=strides, padding=padding, depth=depth)
    x = rng.standard_normal((2, 9, 10, 12)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng, scale=0.3)
    y = reference.to_numpy(layer(x))
    assert y.shape[-1] == filters
    assert_close(y, numpy_compconv(layer, x, strides, padding))


def test_identity_channels_are_copies(rng):
    # With all kernels zero, the output is the (shuffled) identity copies.
    layer = CompConv2D(12, 3, depth=2, use_bias=False, kernel_initializer="zeros")
    x = rng.standard_normal((1, 5, 5, 8)).astype("float32")
    y = reference.to_numpy(layer(x))
    # C_prim = 2; I_1 = input channels 0..1 at concat positions 0..1 -> outputs 0, 2.
    assert_close(y[..., 0], x[..., 0], atol=0)
    assert_close(y[..., 2], x[..., 1], atol=0)


@pytest.mark.parametrize("c_in, expected", [(16, 1), (128, 1), (255, 1), (256, 2), (512, 3), (4096, 3)])
def test_auto_depth_rule(c_in, expected):
    assert auto_depth(c_in, 128) == expected
    layer = CompConv2D(64, 3)
    layer.build((None, 4, 4, c_in))
    assert layer.resolved_depth == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(filters=16, depth=0), "depth"),
        (dict(filters=16, depth="deep"), "depth.*'deep'"),
        (dict(filters=16, c0=0), "c0"),
        (dict(filters=3, depth=3), "filters=3.*depth=3"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompConv2D(**kwargs)

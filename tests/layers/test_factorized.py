import numpy as np
import pytest

import keras

import reference
from conftest import assert_close, randomize
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import SpatialBottleneck
from keras_effconv.layers import TopologicalProjection


def expected_connectivity(c_in, filters, grid, window):
    """Output j (cell j // s_out) sees inputs whose cell is within the window, on a torus."""
    d1, d2 = grid
    s_in, s_out = c_in // (d1 * d2), filters // (d1 * d2)
    mask = np.zeros((c_in, filters), dtype=bool)
    for i in range(c_in):
        pi, qi = divmod(i // s_in, d2)
        for j in range(filters):
            pj, qj = divmod(j // s_out, d2)
            dr = (pi - pj) % d1
            dc = (qi - qj) % d2
            rows = {o % d1 for o in range(-((window[0] - 1) // 2), window[0] // 2 + 1)}
            cols = {o % d2 for o in range(-((window[1] - 1) // 2), window[1] // 2 + 1)}
            mask[i, j] = dr in rows and dc in cols
    return mask


@pytest.mark.parametrize(
    "c_in, filters, grid, window",
    [(16, 16, (4, 4), (3, 3)), (32, 16, (4, 4), (2, 3)), (16, 32, (2, 8), (1, 5)), (36, 36, (6, 6), (6, 6))],
)
def test_topological_projection_sparsity_and_output(rng, c_in, filters, grid, window):
    layer = TopologicalProjection(filters, grid, window)
    x = rng.standard_normal((2, 5, 6, c_in)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    dense = reference.to_numpy(layer.dense_kernel())[0, 0]
    mask = expected_connectivity(c_in, filters, grid, window)
    assert np.array_equal(dense != 0, mask)
    ratio = (grid[0] * grid[1]) / (window[0] * window[1])
    assert layer.count_params() - filters == c_in * filters / ratio
    assert layer.compute_macs((5, 6, c_in)) == 30 * c_in * filters / ratio
    bias = reference.to_numpy(layer.bias)
    assert_close(reference.to_numpy(layer(x)), x @ dense + bias)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("execution", ["rolled_groups", "masked_dense"])
@pytest.mark.parametrize(
    "c_in, filters, grid, window, strides",
    [
        (32, 16, (1, 8), (1, 2), 1),  # ring: one channel roll
        (16, 32, (4, 4), (2, 2), 2),  # 2-D torus: row and column rolls, strided
        (24, 12, (2, 3), (2, 3), (2, 1)),  # window == grid: every cell connected
        (12, 6, (3, 2), (1, 1), 1),  # 1x1 window: a plain grouped convolution
        (16, 16, (4, 4), (3, 3), 1),  # offsets -1..1 wrap both ways
    ],
)
@pytest.mark.parametrize("size", [(7, 5), (8, 6)])  # odd and even maps: two ways of subsampling
def test_topological_execution_forms_match_numpy(rng, execution, c_in, filters, grid, window, strides, data_format, size):
    # Both exact forms against the NumPy reference built from the independent connectivity mask.
    layer = TopologicalProjection(filters, grid, window, strides=strides, data_format=data_format, execution=execution)
    assert layer.execution_form((2,) + size + (c_in,)) == execution
    x = rng.standard_normal((2,) + size + (c_in,)).astype("float32")
    layer.build(x.shape if data_format == "channels_last" else (2, c_in) + size)
    randomize(layer, rng)
    dense = reference.to_numpy(layer.dense_kernel())[0, 0]
    assert np.array_equal(dense != 0, expected_connectivity(c_in, filters, grid, window))
    sh, sw = layer.strides
    expected = x[:, ::sh, ::sw] @ dense + reference.to_numpy(layer.bias)
    if data_format == "channels_first":
        actual = np.transpose(reference.to_numpy(layer(np.transpose(x, (0, 3, 1, 2)))), (0, 2, 3, 1))
    else:
        actual = reference.to_numpy(layer(x))
    assert_close(actual, expected)
    shape = size + (c_in,) if data_format == "channels_last" else (c_in,) + size
    assert layer.compute_macs(shape) == expected.shape[1] * expected.shape[2] * int((dense != 0).sum())


def test_topological_inference_form_sums_grouped_views(rng):
    # The exported form: per offset, grouped conv of a channel view; summed it is the dense kernel.
    layer = TopologicalProjection(16, grid=(2, 4), window=(2, 3), execution="rolled_groups")
    x = rng.standard_normal((1, 3, 3, 24)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    form = layer.inference_form()
    assert form.group_kernels.shape == (6, 1, 1, 3, 16)
    total = np.zeros((24, 16), "float32")
    for order, kernel in zip(form.input_orders, form.group_kernels):
        for j in range(16):
            group = j // 2
            total[order[group * 3 : group * 3 + 3], j] += kernel[0, 0, :, j]
    assert_close(total, form.dense_kernel[0, 0], atol=0)


@pytest.mark.parametrize(
    "grid, window, channels, size, expected",
    [
        ((1, 8), (1, 2), 256, 14, "rolled_groups"),
        ((1, 8), (1, 2), 256, 28, "masked_dense"),  # larger maps: the copies cost more than the MACs saved
        ((1, 8), (1, 2), 64, 7, "masked_dense"),  # 8x8 channel groups: too small a matmul
        ((1, 8), (1, 2), 256, None, "rolled_groups"),  # unknown size does not count against it
        ((4, 4), (2, 2), 512, 7, "masked_dense"),  # 4 offsets for a 4x cut: too many copies
        ((4, 4), (1, 1), 512, 7, "rolled_groups"),  # a plain grouped conv
        ((8, 8), (2, 2), 2048, 7, "rolled_groups"),
        ((2, 2), (2, 2), 256, 7, "masked_dense"),  # window == grid: dense
    ],
)
def test_auto_execution_follows_the_cost_rule(grid, window, channels, size, expected):
    layer = TopologicalProjection(channels, grid, window)
    layer.build((None, None, None, channels))
    assert layer.execution_form((1, size, size, channels)) == expected
    strided = TopologicalProjection(channels, grid, window, strides=2)
    strided.build((None, None, None, channels))
    if size is not None:
        assert strided.execution_form((1, 2 * size, 2 * size, channels)) == expected


def test_auto_trains_with_the_masked_form_and_infers_with_the_rolled_one(rng, monkeypatch):
    layer = TopologicalProjection(256, grid=(1, 8), window=(1, 2))
    x = rng.standard_normal((2, 3, 3, 256)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    inference = reference.to_numpy(layer(x))
    seen = []
    original = TopologicalProjection._convolve
    monkeypatch.setattr(TopologicalProjection, "_convolve", lambda self, x, form: seen.append(form) or original(self, x, form))
    assert_close(reference.to_numpy(layer(x, training=True)), inference)
    layer(x, training=False)
    assert seen == ["masked_dense", "rolled_groups"]


def test_topological_config_round_trips_strides_and_execution():
    layer = TopologicalProjection(16, grid=(1, 4), window=(1, 2), strides=2, execution="masked_dense")
    again = TopologicalProjection.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert (again.strides, again.execution_form()) == ((2, 2), "masked_dense")
    assert "kernel_size" not in layer.get_config()


def numpy_bottleneck(layer, x):
    w = {v.path.split("/")[-1]: reference.to_numpy(v) for v in layer.weights}
    h, wd = x.shape[1:3]
    low = reference.depthwise2d(x, w["depthwise_kernel"], (2, 2), "same")
    proj = w["kernel"]
    if layer.topology is not None:
        proj = reference.to_numpy(layer.projection.dense_kernel())
    low = low @ proj[0, 0]
    up = np.zeros((x.shape[0], 2 * low.shape[1], 2 * low.shape[2], low.shape[3]))
    for a in range(2):
        for b in range(2):
            up[:, a::2, b::2, :] = low * w["upsample_kernel"][a, b]
    return up[:, :h, :wd] + w["bias"]


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (1, 1)])
@pytest.mark.parametrize("topology", [None, {"grid": (2, 4), "window": (1, 3)}])
def test_spatial_bottleneck(rng, size, topology):
    layer = SpatialBottleneck(16, 3, topology=topology)
    x = rng.standard_normal((2,) + size + (8,)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    y = reference.to_numpy(layer(x))
    assert y.shape == (2,) + size + (16,)
    assert_close(y, numpy_bottleneck(layer, x))


def numpy_factorized(layer, x, activation):
    w = {v.path.split("/", 1)[-1]: reference.to_numpy(v) for v in layer.weights}
    for u, (c, first, bottleneck, residual) in enumerate(layer._plan):
        if bottleneck:
            y = numpy_bottleneck(layer.unit_blocks[u], x)
        else:
            strides = layer.strides if first else (1, 1)
            padding = layer.padding if first else "same"
            y = reference.depthwise2d(x, w[f"unit_{u}_depthwise_kernel"], strides, padding)
            y = y @ w[f"unit_{u}_projection/kernel"][0, 0] + w[f"unit_{u}_projection/bias"]
        if residual:
            y = y + x
        x = activation(y)
    return x


@pytest.mark.parametrize(
    "c_in, filters, strides, padding, num_units, bottleneck",
    [(8, 8, 1, "same", 2, False), (8, 16, 2, "same", 3, False), (8, 8, 1, "valid", 2, False),
     (8, 8, 1, "same", 1, False), (8, 8, 1, "same", 2, True), (4, 8, 2, "same", 2, True)],
)
def test_factorized_matches_numpy_units(rng, c_in, filters, strides, padding, num_units, bottleneck):
    layer = FactorizedConv2D(
        filters, 3, strides=strides, padding=padding, activation="relu",
        num_units=num_units, spatial_bottleneck=bottleneck,
    )
    x = rng.standard_normal((2, 9, 10, c_in)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng, scale=0.5)
    expected = numpy_factorized(layer, x, lambda v: np.maximum(v, 0))
    y = reference.to_numpy(layer(x))
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    assert_close(y, expected)


def test_factorized_macs_and_params():
    layer = FactorizedConv2D(64, 3, num_units=2)
    layer.build((None, 16, 16, 32))
    # unit 0: dw 3x3 on 32 + 32->64 projection; unit 1: dw 3x3 on 64 + 64->64.
    assert layer.compute_macs((16, 16, 32)) == 256 * (9 * 32 + 32 * 64 + 9 * 64 + 64 * 64)
    assert layer.count_params() == 9 * 32 + 32 * 64 + 64 + 9 * 64 + 64 * 64 + 64
    topo = FactorizedConv2D(64, 3, num_units=1, topology={"grid": (4, 4), "window": (2, 2)})
    assert topo.compute_macs((16, 16, 64)) == 256 * (9 * 64 + 64 * 64 // 4)


def test_topology_accepts_pair_and_round_trips():
    layer = FactorizedConv2D(16, topology=((4, 4), (3, 3)))
    assert layer.topology == {"grid": (4, 4), "window": (3, 3)}
    again = FactorizedConv2D.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: FactorizedConv2D(16, num_units=0), "num_units"),
        (lambda: FactorizedConv2D(16, topology={"grid": (4, 4)}), "topology"),
        (lambda: FactorizedConv2D(16, topology=5), "topology"),
        (lambda: TopologicalProjection(16, grid=(4, 4), window=(5, 3)), "window"),
        (lambda: TopologicalProjection(10, grid=(4, 4), window=(3, 3)), "filters=10"),
        (lambda: TopologicalProjection(16, grid=(0, 4)), "grid"),
        (lambda: TopologicalProjection(16, execution="sparse"), "execution"),
        (lambda: TopologicalProjection(16, strides=0), "strides"),
        (lambda: SpatialBottleneck(0), "filters"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_grid_must_divide_input_channels():
    with pytest.raises(ValueError, match=r"grid=\(4, 4\).*input channels=24"):
        TopologicalProjection(16, grid=(4, 4), window=(3, 3)).build((None, 4, 4, 24))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_one_by_one_unit_adds_its_input_with_either_padding(rng, padding):
    # Found by fuzzing (issue 17): with a 1x1 kernel "valid" keeps the shape too, so the
    # unit adds its input as documented; it used to do so only with "same".
    layer = FactorizedConv2D(8, 1, padding=padding, num_units=1, use_bias=False, kernel_initializer="zeros")
    x = rng.standard_normal((2, 5, 7, 8)).astype("float32")
    assert_close(reference.to_numpy(layer(x)), x, atol=0)
    assert layer.inference_form()[0].residual
    strided = FactorizedConv2D(8, 1, strides=2, padding=padding, num_units=1, kernel_initializer="zeros")
    strided.build(x.shape)
    assert not strided.inference_form()[0].residual


def test_spatial_bottleneck_refuses_dilation():
    # The bottleneck's stride-2 depthwise conv has no dilation; it used to be dropped silently.
    with pytest.raises(ValueError, match="`dilation_rate`.*spatial_bottleneck"):
        FactorizedConv2D(8, 3, dilation_rate=2, spatial_bottleneck=True)

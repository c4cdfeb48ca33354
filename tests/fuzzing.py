"""Seeded configurations and independent NumPy references for layer fuzzing.

Each public layer has a generator `case(rng) -> Case` that draws arguments and
a channels_last input shape, and says from the documented constraints (the
layer docstrings and DESIGN.md section 3) whether the layer must reject them
(`Case.problems`, empty for a valid configuration). Each layer also has a
reference `reference(layer, x) -> y` that computes the documented math in
NumPy (float64, channels_last) from the layer's weights; none of them calls
the layer's own helpers (`dense_kernel()`, `inference_form()`, `_core`).
"""

import dataclasses
import math

import numpy as np

import reference as ref
from keras_effconv import layers as effconv


@dataclasses.dataclass
class Case:
    kwargs: dict
    shape: tuple  # channels_last input shape, batch included
    problems: list  # why the layer must refuse the configuration; empty when valid


ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "linear": lambda v: v,
}


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def chance(rng, p):
    return bool(rng.random() < p)


def _pair(value):
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _output_length(length, k, s, padding, d):
    if padding == "same":
        return -(-length // s)
    return (length - ((k - 1) * d + 1)) // s + 1


def _geometry(rng, problems, kernels=(1, 2, 3, 5)):
    k = pick(rng, kernels)
    kernel = k if chance(rng, 0.8) else (k, pick(rng, kernels))
    strides = pick(rng, (1, 1, 2, 2, (1, 2), (2, 1)))
    dilation = 1
    if chance(rng, 0.3):  # dilated, usually without strides (both together must be refused)
        dilation = pick(rng, (2, 2, (2, 1)))
        strides = strides if chance(rng, 0.15) else 1
    padding = pick(rng, ("same", "same", "valid"))
    if max(_pair(strides)) > 1 and max(_pair(dilation)) > 1:
        problems.append("dilation_rate > 1 with strides > 1")
    return dict(kernel_size=kernel, strides=strides, padding=padding, dilation_rate=dilation)


def _input_shape(rng, channels, filters, problems, geometry=None, width_filters=True):
    """Batch 2, odd and even sizes from 1 to 11, width == filters a third of the time."""
    height = int(rng.integers(1, 12))
    width = int(filters) if width_filters and chance(rng, 1 / 3) else int(rng.integers(1, 12))
    if geometry is not None and geometry["padding"] == "valid" and chance(rng, 0.7):
        height, width = height + 4, width + 4 * (width != filters)  # mostly big enough for "valid"
    if geometry is not None:
        kernel, strides = _pair(geometry["kernel_size"]), _pair(geometry["strides"])
        dilation = _pair(geometry["dilation_rate"])
        for length, k, s, d in zip((height, width), kernel, strides, dilation):
            if _output_length(length, k, s, geometry["padding"], d) < 1:
                problems.append("empty output")
    return (2, height, width, int(channels))


def _common(rng):
    return dict(use_bias=chance(rng, 0.8), activation=pick(rng, (None, "relu", "tanh")))


def _inject(rng, kwargs, problems, bad, p=0.12):
    """Now and then replaces one argument by an invalid value."""
    if chance(rng, p):
        name, value = pick(rng, bad)
        kwargs[name] = value
        problems.append(f"{name}={value!r}")


_BAD_CONV = [
    ("filters", 0),
    ("filters", -3),
    ("filters", 2.5),
    ("kernel_size", 0),
    ("kernel_size", (3,)),
    ("strides", 0),
    ("strides", True),
    ("padding", "full"),
    ("dilation_rate", -1),
]


def _weights(layer):
    """`{path below the layer: float64 array}`."""
    return {v.path.split("/", 1)[1]: ref.to_numpy(v) for v in layer.weights}


def _finish(layer, y, w, kwargs):
    if "bias" in w:
        y = y + w["bias"]
    return ACTIVATIONS[kwargs.get("activation")](y)


def _conv(x, kernel, kwargs):
    return ref.conv2d(
        x, kernel, _pair(kwargs["strides"]), kwargs["padding"], _pair(kwargs["dilation_rate"])
    )


# -- HetConv2D ---------------------------------------------------------------


def hetconv_case(rng):
    problems = []
    part = pick(rng, (1, 2, 3, 4))
    c_in = part * int(rng.integers(1, 4)) if chance(rng, 0.9) else int(rng.integers(1, 9))
    filters = part * int(rng.integers(1, 5)) if chance(rng, 0.9) else int(rng.integers(1, 13))
    geometry = _geometry(rng, problems, kernels=(1, 3, 3, 5, 5, 1, 3, 2))
    if any(k % 2 == 0 for k in _pair(geometry["kernel_size"])):
        problems.append("even kernel")
    if c_in % part or filters % part:
        problems.append("part does not divide the channels")
    kwargs = dict(filters=filters, part=part, **geometry, **_common(rng))
    shape = _input_shape(rng, c_in, filters, problems, geometry)
    _inject(rng, kwargs, problems, _BAD_CONV + [("part", 0), ("part", True), ("part", 2.0)])
    return Case(kwargs, shape, problems)


def hetconv_kernel(layer, c_in):
    """Dense kernel from the paper's rule and the documented weight layout.

    Filter j = r + part * t (r = j mod part) has k x k kernels on the input
    channels i = r + part * u, stored in `kernel[:, :, u, r * (filters/part) + t]`
    (class order), and 1 x 1 kernels at the window centre on every other
    channel, stored in `pointwise_kernel[0, 0, row, j]` with rows in ascending
    input order.
    """
    p, n = layer.part, layer.filters
    kh, kw = layer.kernel_size
    kxk = ref.to_numpy(layer.kernel)
    pw = ref.to_numpy(layer.pointwise_kernel)[0, 0] if p > 1 else None
    dense = np.zeros((kh, kw, c_in, n))
    for j in range(n):
        r, t = j % p, j // p
        free = [i for i in range(c_in) if (i - j) % p]
        for i in range(c_in):
            if (i - j) % p == 0:
                dense[:, :, i, j] = kxk[:, :, (i - r) // p, r * (n // p) + t]
            else:
                dense[kh // 2, kw // 2, i, j] = pw[free.index(i), j]
    return dense


def hetconv_reference(layer, x, kwargs):
    y = _conv(x, hetconv_kernel(layer, x.shape[-1]), kwargs)
    return _finish(layer, y, _weights(layer), kwargs)


# -- InterleavedGroupConv2D --------------------------------------------------


def igc_case(rng):
    problems = []
    l = pick(rng, (1, 2, 3, 4))
    m = pick(rng, (None, 1, 2, 3, 4))
    c_in = l * int(rng.integers(1, 4)) if chance(rng, 0.9) else int(rng.integers(1, 9))
    if m is None:
        filters = l * int(rng.integers(1, 5)) if chance(rng, 0.9) else int(rng.integers(1, 13))
        if filters % l:
            problems.append("primary_groups does not divide filters")
    else:
        filters = m * int(rng.integers(1, 4)) if chance(rng, 0.9) else int(rng.integers(1, 13))
        if filters % m:
            problems.append("secondary_groups does not divide filters")
    if c_in % l:
        problems.append("primary_groups does not divide the input channels")
    geometry = _geometry(rng, problems)
    kwargs = dict(filters=filters, primary_groups=l, secondary_groups=m, **geometry, **_common(rng))
    shape = _input_shape(rng, c_in, filters, problems, geometry)
    _inject(rng, kwargs, problems, _BAD_CONV + [("primary_groups", 0), ("secondary_groups", -1)])
    return Case(kwargs, shape, problems)


def igc_reference(layer, x, kwargs):
    """Grouped primary -> interleave -> grouped 1x1 secondary -> inverse interleave (docstring)."""
    w = _weights(layer)
    l = layer.primary_groups
    m = layer.secondary_groups or layer.filters // l
    n, c_in = layer.filters, x.shape[-1]
    cg, f_per = c_in // l, n // m
    primary = np.concatenate(
        [
            _conv(x[..., a * cg : (a + 1) * cg], w["primary_kernel"][..., a * m : (a + 1) * m], kwargs)
            for a in range(l)
        ],
        axis=-1,
    )
    interleaved = primary[..., [a * m + j for j in range(m) for a in range(l)]]
    secondary = np.concatenate(
        [
            interleaved[..., j * l : (j + 1) * l] @ w["secondary_kernel"][0, 0][:, j * f_per : (j + 1) * f_per]
            for j in range(m)
        ],
        axis=-1,
    )
    y = np.empty_like(secondary)
    for j in range(m):
        for f in range(f_per):
            y[..., f * m + j] = secondary[..., j * f_per + f]
    return _finish(layer, y, w, kwargs)


# -- CompConv2D --------------------------------------------------------------


def compconv_case(rng):
    problems = []
    depth = pick(rng, ("auto", 1, 2, 3))
    c0 = pick(rng, (1, 2, 4, 128))
    c_in = int(rng.integers(1, 13))
    filters = int(rng.integers(1, 25))
    geometry = _geometry(rng, problems)
    d = depth if depth != "auto" else min(max(int(math.floor(math.log2(max(1.0, c_in / c0)))) + 1, 1), 3)
    c_prim = -(-filters // (2 * (2**d - 1)))
    if filters <= (2**d - 2) * c_prim:
        problems.append("filters too small for the depth")
    kwargs = dict(filters=filters, depth=depth, c0=c0, **geometry, **_common(rng))
    shape = _input_shape(rng, c_in, filters, problems, geometry)
    _inject(rng, kwargs, problems, _BAD_CONV + [("depth", 0), ("depth", "deep"), ("c0", 0)])
    return Case(kwargs, shape, problems)


def _centre_taps(x, kwargs):
    """`x` at the centre tap `floor((k - 1) d / 2)` of every window (TensorFlow's "same" padding)."""
    index = []
    for axis, k, s, d in zip(
        (1, 2), _pair(kwargs["kernel_size"]), _pair(kwargs["strides"]), _pair(kwargs["dilation_rate"])
    ):
        length = x.shape[axis]
        centre = (k - 1) * d // 2
        out = _output_length(length, k, s, kwargs["padding"], d)
        start = centre - ref.same_padding(length, k, s, d)[0] if kwargs["padding"] == "same" else centre
        index.append(start + s * np.arange(out))
    return x[:, index[0]][:, :, index[1]]


def compconv_reference(layer, x, kwargs):
    """The documented recursion: Q_1 = conv(x); X_i = I_i (+) Q_i; Q_(i+1) = conv(X_i); T = conv(Q_d)."""
    w = _weights(layer)
    c_in, n = x.shape[-1], layer.filters
    d = kwargs["depth"]
    if d == "auto":
        d = min(max(int(math.floor(math.log2(max(1.0, c_in / kwargs["c0"])))) + 1, 1), 3)
    c_prim = -(-n // (2 * (2**d - 1)))
    inner = dict(kwargs, strides=1, padding="same")
    q = _conv(x, w["primary_kernel"], kwargs)
    parts, start = [], 0
    for i in range(1, d):
        width = 2 ** (i - 1) * c_prim
        channels = [(start + t) % c_in for t in range(width)]
        start += width
        x_i = np.concatenate([_centre_taps(x[..., channels], kwargs), q], axis=-1)
        parts.append(x_i)
        q = _conv(x_i, w[f"recursive_kernel_{i + 1}"], inner)
    parts.append(q)
    if "tailing_kernel" in w:
        parts.append(_conv(q, w["tailing_kernel"], inner))
    y = np.concatenate(parts, axis=-1)
    assert y.shape[-1] == n, (y.shape, n)
    half = -(-n // 2)
    order = [h * half + t for t in range(half) for h in range(2) if h * half + t < n]
    return _finish(layer, y[..., order], w, kwargs)


# -- TopologicalProjection ---------------------------------------------------


def topology_connections(c_in, filters, grid, window):
    """Output j (cell j // s_out) sees inputs whose cell lies in the window around it, on a torus."""
    d1, d2 = grid
    s_in, s_out = c_in // (d1 * d2), filters // (d1 * d2)
    rows = {o % d1 for o in range(-((window[0] - 1) // 2), window[0] // 2 + 1)}
    cols = {o % d2 for o in range(-((window[1] - 1) // 2), window[1] // 2 + 1)}
    mask = np.zeros((c_in, filters), dtype=bool)
    for i in range(c_in):
        pi, qi = divmod(i // s_in, d2)
        for j in range(filters):
            pj, qj = divmod(j // s_out, d2)
            mask[i, j] = (pi - pj) % d1 in rows and (qi - qj) % d2 in cols
    return mask


def topology_dense(compact, c_in, filters, grid, window):
    """Dense (C_in, filters) from the compact kernel: connected rows in ascending input order."""
    mask = topology_connections(c_in, filters, grid, window)
    dense = np.zeros((c_in, filters))
    for j in range(filters):
        rows = np.nonzero(mask[:, j])[0]
        dense[rows, j] = compact[: len(rows), j]
        assert len(rows) == compact.shape[0]
    return dense


def _topology(rng, problems):
    """A grid/window pair (the window now and then larger than the grid)."""
    grid = (pick(rng, (1, 2, 3)), pick(rng, (1, 2, 4)))
    window = (int(rng.integers(1, grid[0] + 1)), int(rng.integers(1, grid[1] + 1)))
    if chance(rng, 0.1):
        window = (grid[0] + 1, window[1])
        problems.append("window larger than the grid")
    return {"grid": grid, "window": window}


def _cells_multiple(rng, cells, high):
    return cells * int(rng.integers(1, high)) if chance(rng, 0.9) else int(rng.integers(1, 13))


def topological_case(rng):
    problems = []
    topology = _topology(rng, problems)
    cells = topology["grid"][0] * topology["grid"][1]
    c_in, filters = _cells_multiple(rng, cells, 3), _cells_multiple(rng, cells, 3)
    if c_in % cells or filters % cells:
        problems.append("grid does not divide the channels")
    kwargs = dict(filters=filters, **topology, **_common(rng))
    shape = _input_shape(rng, c_in, filters, problems)
    _inject(rng, kwargs, problems, [("filters", 0), ("grid", (0, 2)), ("window", 2.0), ("grid", "4x4")])
    return Case(kwargs, shape, problems)


def topological_reference(layer, x, kwargs):
    w = _weights(layer)
    dense = topology_dense(w["kernel"][0, 0], x.shape[-1], layer.filters, kwargs["grid"], kwargs["window"])
    return _finish(layer, x @ dense, w, kwargs)


# -- SpatialBottleneck -------------------------------------------------------


def _sic_channels(rng, problems):
    """(topology or None, input channels, filters) for the SIC layers; a topology 40% of the time."""
    if not chance(rng, 0.4):
        return None, int(rng.integers(1, 13)), int(rng.integers(1, 17))
    topology = _topology(rng, problems)
    cells = topology["grid"][0] * topology["grid"][1]
    c_in, filters = _cells_multiple(rng, cells, 4), _cells_multiple(rng, cells, 4)
    if c_in % cells or filters % cells:
        problems.append("grid does not divide the channels")
    return topology, c_in, filters


def bottleneck_case(rng):
    problems = []
    topology, c_in, filters = _sic_channels(rng, problems)
    kernel = pick(rng, (1, 2, 3, 5))
    kwargs = dict(filters=filters, kernel_size=kernel, topology=topology, **_common(rng))
    shape = _input_shape(rng, c_in, filters, problems)
    _inject(rng, kwargs, problems, [("filters", 0), ("kernel_size", -1), ("topology", 5), ("topology", {"grid": (2, 2)})])
    return Case(kwargs, shape, problems)


def bottleneck_core(w, x, kernel_size, topology, filters):
    """Stride-2 depthwise -> projection at half resolution -> per-channel 2x2 stride-2 transposed conv, cropped."""
    h, wd = x.shape[1:3]
    low = ref.depthwise2d(x, w["depthwise_kernel"], (2, 2), "same")
    if topology is None:
        projection = w["projection/kernel"][0, 0]
    else:
        projection = topology_dense(
            w["projection/kernel"][0, 0], x.shape[-1], filters, topology["grid"], topology["window"]
        )
    low = low @ projection
    up = np.zeros((x.shape[0], 2 * low.shape[1], 2 * low.shape[2], low.shape[3]))
    for a in range(2):
        for b in range(2):
            up[:, a::2, b::2, :] = low * w["upsample_kernel"][a, b]
    y = up[:, :h, :wd]
    return y + w["bias"] if "bias" in w else y


def bottleneck_reference(layer, x, kwargs):
    w = _weights(layer)
    y = bottleneck_core(w, x, kwargs["kernel_size"], kwargs["topology"], layer.filters)
    return ACTIVATIONS[kwargs.get("activation")](y)


# -- FactorizedConv2D --------------------------------------------------------


def factorized_case(rng):
    problems = []
    topology, c_in, filters = _sic_channels(rng, problems)
    geometry = _geometry(rng, problems)
    kwargs = dict(
        filters=filters,
        num_units=pick(rng, (1, 2, 3)),
        topology=topology,
        spatial_bottleneck=chance(rng, 0.4),
        **geometry,
        **_common(rng),
    )
    if kwargs["spatial_bottleneck"] and max(_pair(geometry["dilation_rate"])) > 1:
        problems.append("dilation_rate > 1 with spatial_bottleneck")
    shape = _input_shape(rng, c_in, filters, problems, geometry)
    _inject(rng, kwargs, problems, _BAD_CONV + [("num_units", 0), ("topology", (1, 2, 3))])
    return Case(kwargs, shape, problems)


def factorized_reference(layer, x, kwargs):
    """SIC units (docstring): depthwise -> projection (+ bias) -> + input when the unit keeps the shape -> activation.

    The first unit has the layer's geometry and the channel change, the others
    stride 1, "same" and the layer's dilation. A unit keeps the shape when it
    maps `filters` to `filters` channels with stride 1 and either "same"
    padding or a 1 x 1 effective kernel. With `spatial_bottleneck`, units of
    stride 1 and "same" padding are `SpatialBottleneck`s.
    """
    w = _weights(layer)
    activation = ACTIVATIONS[kwargs.get("activation")]
    n = layer.filters
    for u in range(kwargs["num_units"]):
        geometry = kwargs if u == 0 else dict(kwargs, strides=1, padding="same")
        stride_one = _pair(geometry["strides"]) == (1, 1)
        keeps_size = stride_one and (
            geometry["padding"] == "same" or _pair(kwargs["kernel_size"]) == (1, 1)
        )
        if kwargs["spatial_bottleneck"] and stride_one and geometry["padding"] == "same":
            unit = {k.split("/", 1)[1]: v for k, v in w.items() if k.startswith(f"unit_{u}_bottleneck/")}
            y = bottleneck_core(unit, x, kwargs["kernel_size"], kwargs["topology"], n)
        else:
            y = ref.depthwise2d(
                x,
                w[f"unit_{u}_depthwise_kernel"],
                _pair(geometry["strides"]),
                geometry["padding"],
                _pair(geometry["dilation_rate"]),
            )
            projection = w[f"unit_{u}_projection/kernel"][0, 0]
            if kwargs["topology"] is not None:
                projection = topology_dense(
                    projection, x.shape[-1], n, kwargs["topology"]["grid"], kwargs["topology"]["window"]
                )
            y = y @ projection
            if f"unit_{u}_projection/bias" in w:
                y = y + w[f"unit_{u}_projection/bias"]
        if keeps_size and x.shape[-1] == n:
            y = y + x
        x = activation(y)
    return x


# -- ChannelShuffle, SqueezeExcite, EfficientChannelAttention ----------------


def shuffle_case(rng):
    problems = []
    groups = pick(rng, (1, 2, 3, 4))
    channels = groups * int(rng.integers(1, 5)) if chance(rng, 0.85) else int(rng.integers(1, 13))
    if channels % groups:
        problems.append("groups does not divide the channels")
    kwargs = dict(groups=groups)
    shape = _input_shape(rng, channels, channels, problems)
    _inject(rng, kwargs, problems, [("groups", 0), ("groups", 1.5), ("groups", None)])
    return Case(kwargs, shape, problems)


def shuffle_reference(layer, x, kwargs):
    g, c = kwargs["groups"], x.shape[-1]
    per = c // g
    y = np.empty_like(x)
    for j in range(per):
        for gi in range(g):
            y[..., j * g + gi] = x[..., gi * per + j]
    return y


def squeeze_excite_case(rng):
    problems = []
    kwargs = dict(
        reduction=pick(rng, (1, 2, 3, 4, 8, 16)),
        activation=pick(rng, ("relu", "tanh", "linear")),
        gate_activation=pick(rng, ("sigmoid", "tanh")),
    )
    channels = int(rng.integers(1, 17))
    shape = _input_shape(rng, channels, channels, problems)
    _inject(rng, kwargs, problems, [("reduction", 0), ("reduction", 2.0)])
    return Case(kwargs, shape, problems)


def squeeze_excite_reference(layer, x, kwargs):
    w = _weights(layer)
    s = x.mean(axis=(1, 2))
    s = ACTIVATIONS[kwargs["activation"]](s @ w["reduce_kernel"] + w["reduce_bias"])
    gate = ACTIVATIONS[kwargs["gate_activation"]](s @ w["expand_kernel"] + w["expand_bias"])
    return x * gate[:, None, None, :]


def eca_case(rng):
    problems = []
    kwargs = dict(
        kernel_size=pick(rng, (None, None, 1, 3, 5, 7)),
        gamma=pick(rng, (1, 2, 2.5, 3)),
        b=pick(rng, (1, 0, -3, 2.5)),
    )
    channels = int(rng.integers(1, 33))
    shape = _input_shape(rng, channels, channels, problems)
    _inject(rng, kwargs, problems, [("kernel_size", 2), ("kernel_size", 0), ("gamma", 0), ("gamma", -1.0)])
    return Case(kwargs, shape, problems)


def eca_reference(layer, x, kwargs):
    w = _weights(layer)
    c = x.shape[-1]
    k = kwargs["kernel_size"]
    if k is None:  # odd(|log2(C) / gamma + b / gamma|): truncate, then the next odd value
        t = int(abs(math.log2(c) / kwargs["gamma"] + kwargs["b"] / kwargs["gamma"]))
        k = t if t % 2 else t + 1
    s = x.mean(axis=(1, 2))
    before, after = ref.same_padding(c, k, 1, 1)
    padded = np.pad(s, [(0, 0), (before, after)])
    kernel = w["kernel"][:, 0, 0]
    assert kernel.shape == (k,)
    conv = sum(kernel[t] * padded[:, t : t + c] for t in range(k))
    return x * (1 / (1 + np.exp(-conv)))[:, None, None, :]


@dataclasses.dataclass(frozen=True)
class Spec:
    cls: type
    case: object
    reference: object
    linear: bool = False  # has dense_kernel(): also checked against keras.ops.conv


LAYERS = {
    "HetConv2D": Spec(effconv.HetConv2D, hetconv_case, hetconv_reference, linear=True),
    "InterleavedGroupConv2D": Spec(effconv.InterleavedGroupConv2D, igc_case, igc_reference, linear=True),
    "CompConv2D": Spec(effconv.CompConv2D, compconv_case, compconv_reference),
    "FactorizedConv2D": Spec(effconv.FactorizedConv2D, factorized_case, factorized_reference),
    "TopologicalProjection": Spec(
        effconv.TopologicalProjection, topological_case, topological_reference, linear=True
    ),
    "SpatialBottleneck": Spec(effconv.SpatialBottleneck, bottleneck_case, bottleneck_reference),
    "ChannelShuffle": Spec(effconv.ChannelShuffle, shuffle_case, shuffle_reference),
    "SqueezeExcite": Spec(effconv.SqueezeExcite, squeeze_excite_case, squeeze_excite_reference),
    "EfficientChannelAttention": Spec(effconv.EfficientChannelAttention, eca_case, eca_reference),
}

"""Factorized convolution with single intra-channel convolutions (SIC).

Wang, Liu & Foroosh, "Factorized Convolutional Neural Networks" (ICCVW 2017,
arXiv 1608.04337): depthwise ("intra-channel") convolutions followed by
linear channel projections, topological subdivisioning of the projection and
a spatial bottleneck.
"""

import dataclasses

import numpy as np

import keras
from keras import initializers
from keras import ops

from keras_effconv import _validation
from keras_effconv.layers import _core
from keras_effconv.layers.base import EfficientConv2D

_DROPPED_CONV_ARGS = ("kernel_size", "strides", "padding", "dilation_rate")


def normalize_topology(topology):
    """Validates `topology` and returns `{"grid": (d1, d2), "window": (c1, c2)}` or None."""
    if topology is None:
        return None
    pair = ()
    if isinstance(topology, dict):
        if set(topology) == {"grid", "window"}:
            pair = (topology["grid"], topology["window"])
    else:
        try:
            pair = tuple(topology)
        except TypeError:
            pass
    if len(pair) != 2:
        raise _validation.invalid_value(
            "topology",
            "expected None, a dict with keys 'grid' and 'window', or a pair (grid, window)",
            topology,
        )
    grid, window = pair
    grid = _validation.normalize_tuple(grid, 2, "grid")
    window = _validation.normalize_tuple(window, 2, "window")
    _check_window(grid, window)
    return {"grid": grid, "window": window}


def _check_window(grid, window):
    if window[0] > grid[0] or window[1] > grid[1]:
        raise _validation.invalid_value(
            "window",
            "each entry must be at most the grid size",
            received=f"window={window}, grid={grid}",
        )


def window_offsets(size):
    """Offsets of a window of `size` cells around its centre cell."""
    return range(-((size - 1) // 2), size // 2 + 1)


def topological_connections(input_channels, filters, grid, window):
    """Boolean `(input_channels, filters)` connectivity of a topological projection.

    Channels are laid out on the `d1 x d2` grid in row-major order, with
    `C_in / (d1 d2)` consecutive input channels (and `filters / (d1 d2)`
    output channels) per cell. Output `j` connects to every input channel whose
    cell lies in the `c1 x c2` window around `j`'s cell. The grid wraps around
    (torus boundary), so every output has exactly `c1 c2 C_in / (d1 d2)`
    inputs and the cost drops by exactly `(d1 d2) / (c1 c2)`.
    """
    d1, d2 = grid
    cells = d1 * d2
    s_in, s_out = input_channels // cells, filters // cells
    connected = np.zeros((input_channels, filters), dtype=bool)
    for j in range(filters):
        p, q = divmod(j // s_out, d2)
        for a in window_offsets(window[0]):
            for b in window_offsets(window[1]):
                cell = ((p + a) % d1) * d2 + (q + b) % d2
                connected[cell * s_in : (cell + 1) * s_in, j] = True
    return connected


@dataclasses.dataclass(frozen=True)
class SpatialBottleneckInferenceForm:
    """`SpatialBottleneck.inference_form()`: float32 NumPy arrays.

    Attributes:
        depthwise_kernel: `(kh, kw, C_in, 1)`, applied with stride 2, "same".
        projection_kernel: `(1, 1, C_in, filters)` dense (zeros where a
            topological projection is unconnected).
        upsample_scale: `(4 * filters,)`: copy `a * 2 + b`, channel `c` at
            `(a * 2 + b) * filters + c`.
        bias: `(filters,)` or None.
        projection_form: the `TopologicalProjectionInferenceForm` when the
            projection is topological (its fastest exact form), else None.
    """

    depthwise_kernel: np.ndarray
    projection_kernel: np.ndarray
    upsample_scale: np.ndarray
    bias: object
    projection_form: object = None


@dataclasses.dataclass(frozen=True)
class FactorizedUnitForm:
    """One SIC unit of `FactorizedConv2D.inference_form()`.

    Attributes:
        depthwise_kernel: `(kh, kw, C, 1)`, or None for a bottleneck unit.
        geometry: the depthwise conv's `strides`, `padding`, `dilation_rate`.
        projection_kernel: `(1, 1, C, filters)` dense kernel.
        projection_bias: `(filters,)` or None.
        bottleneck: a `SpatialBottleneckInferenceForm` instead of the above,
            or None.
        residual: whether the unit adds its input.
        projection_form: the `TopologicalProjectionInferenceForm` when the
            projection is topological (its fastest exact form), else None.
    """

    depthwise_kernel: object
    geometry: object
    projection_kernel: object
    projection_bias: object
    bottleneck: object
    residual: bool
    projection_form: object = None


def _project(projection, x):
    """Applies a projection sub-layer, adding a dense projection's bias with `_core.add_bias`.

    keras' Conv2D adds a channels_first bias with `ops.add`, which TensorFlow
    applies on the width axis whenever the width equals `filters`.
    """
    if isinstance(projection, TopologicalProjection):
        return projection(x)
    y = _core.conv(x, projection.kernel, padding="valid", data_format=projection.data_format)
    if projection.use_bias:
        y = _core.add_bias(y, projection.bias, projection.data_format)
    return y


def _projection_weights(projection, input_shape=None):
    """(dense `(1, 1, C_in, filters)` kernel, bias or None, topological form or None) of a projection.

    `input_shape` is the projection's input shape (its form can depend on it).
    """
    bias = EfficientConv2D._numpy(projection.bias if projection.use_bias else None)
    if isinstance(projection, TopologicalProjection):
        form = projection.inference_form(input_shape)
        return form.dense_kernel, bias, form
    return EfficientConv2D._numpy(projection.kernel), bias, None


PROJECTION_FORMS = ("masked_dense", "rolled_groups")
EXECUTION_FORMS = ("auto",) + PROJECTION_FORMS


def topological_offsets(window):
    """The window's cell offsets `(a, b)` in row-major order."""
    return [(a, b) for a in window_offsets(window[0]) for b in window_offsets(window[1])]


def cell_shift_order(channels, grid, shift):
    """Channel order of `roll_channel_grid(x, grid, shift)`: result channel `i` is `x[..., order[i]]`."""
    d1, d2 = grid
    cell = channels // (d1 * d2)
    order = np.empty(channels, dtype=np.int64)
    for p in range(d1):
        for q in range(d2):
            source = ((p + shift[0]) % d1) * d2 + (q + shift[1]) % d2
            target = p * d2 + q
            order[target * cell : (target + 1) * cell] = np.arange(source * cell, (source + 1) * cell)
    return order


def choose_execution(grid, window, input_channels=None, filters=None, spatial=None):
    """The form `execution="auto"` runs for one call: a cost rule calibrated on this project's CPUs.

    `rolled_groups` executes `1 / cut` of the dense MACs (`cut = d1 d2 / (c1 c2)`)
    but adds, per window offset besides the centre, one rolled copy of the
    input, and its grouped convolutions are small matrix products. Measured
    for the ring `grid=(1, 8), window=(1, 2)` (cut 4) at ResNet-50's
    projection shapes, rolled against masked dense (TensorFlow batch 8 /
    LiteRT XNNPACK batch 1, 2 threads): 7x7 maps 1.4-2.0x / 1.3-3.4x faster,
    14x14 1.0-1.2x / 0.8-1.5x, 28x28 0.45-0.65x / 0.3-0.9x, 56x56
    0.24-0.35x / 0.2-0.5x (slower: the copies cost more than the saved
    MACs); a 4x4 grid with a 2x2 window (cut 4, 4 offsets) 1.3x / 1.5x slower
    at 14x14x256. Rule: rolled groups when `cut >= 2 * c1 c2` (or a `1 x 1`
    window), at least `32 x 32` channels per group pair (`s_in * s_out >=
    1024`), and a feature map of at most `14 x 14`; a size not known (None)
    does not count against it.

    Args:
        grid, window: the projection's topology.
        input_channels, filters: channel counts, or None when unknown.
        spatial: `(H, W)` of the call's input (after striding), entries None
            when unknown.

    Returns:
        `"rolled_groups"` or `"masked_dense"`.
    """
    cells = grid[0] * grid[1]
    offsets = window[0] * window[1]
    if offsets == cells:
        return "masked_dense"
    if offsets > 1 and cells < 2 * offsets * offsets:
        return "masked_dense"
    if input_channels is not None and filters is not None:
        if (input_channels // cells) * (filters // cells) < 1024:
            return "masked_dense"
    if spatial is not None and None not in spatial and spatial[0] * spatial[1] > 14 * 14:
        return "masked_dense"
    return "rolled_groups"


@dataclasses.dataclass(frozen=True)
class TopologicalProjectionInferenceForm:
    """`TopologicalProjection.inference_form()`: float32 NumPy arrays.

    Attributes:
        execution: `"masked_dense"` or `"rolled_groups"`, the form the layer runs.
        strides: `(sh, sw)`: the input is subsampled `x[:, ::sh, ::sw]` first.
        dense_kernel: `(1, 1, C_in, filters)`, zeros where unconnected.
        input_orders: one channel order per window offset; the offset's view
            of the input is `x[..., order]` (a roll of the cell grid).
        group_kernels: `(offsets, 1, 1, C_in / (d1 d2), filters)`: offset `o`
            contributes `grouped_conv(x[..., input_orders[o]], group_kernels[o])`
            with `d1 d2` groups; the projection is their sum.
        bias: `(filters,)` or None.
    """

    execution: str
    strides: tuple
    dense_kernel: np.ndarray
    input_orders: list
    group_kernels: np.ndarray
    bias: object


@keras.saving.register_keras_serializable(package="keras_effconv")
class TopologicalProjection(EfficientConv2D):
    """Topologically subdivided 1x1 channel projection (SIC paper, Sec. 3.2).

    Channels sit on a `d1 x d2` grid (row-major, `C_in / (d1 d2)` consecutive
    channels per cell; likewise for the outputs). Output channel `j` is
    connected only to the input channels in the `c1 x c2` window of cells
    around its own cell; the grid wraps around at its borders (torus), so
    each output has exactly `c1 c2 C_in / (d1 d2)` inputs and params and MACs
    drop by `(d1 d2) / (c1 c2)` against a dense 1x1 projection. Window
    offsets run from `-floor((c-1)/2)` to `floor(c/2)`. A grid `(1, d)` is a
    ring of `d` cells.

    Only the connected weights exist (`kernel` has shape
    `(1, 1, c1 c2 C_in / (d1 d2), filters)`, rows in ascending input-channel
    order). Two exact execution forms:

    - `"rolled_groups"`: for every window offset, the input's cell grid
      rolled by that offset goes through a grouped `1 x 1` convolution with
      `d1 d2` groups; the projection is the sum. It executes exactly the
      counted multiply-accumulates.
    - `"masked_dense"`: one dense `1 x 1` matmul with the structural zeros
      filled in (`dense_kernel()`), which executes `(d1 d2) / (c1 c2)` times
      more but needs no rolled copies.

    `execution="auto"` picks per call, from the channel counts and the
    input's static spatial size, by the measured rule of `choose_execution`;
    `execution_form(input_shape)` says which form runs (and what export
    emits) for an input shape. A training call (`training=True`, as in
    `model.fit`) with `"auto"` runs the masked dense form: with XLA the
    rolled form's gradient measured 0.94x the masked one's on TensorFlow at
    14x14x256 (1.14x without XLA). `compute_macs` counts the connected
    multiply-accumulates only. With `strides > 1` the input is subsampled
    first (a `1 x 1` convolution with stride: `x[:, ::sh, ::sw]`).

    Args:
        filters: int, output channels; must be a multiple of `d1 * d2`.
        grid: tuple `(d1, d2)`; `d1 * d2` must divide the input channels.
        window: tuple `(c1, c2)` with `c1 <= d1` and `c2 <= d2`.
        strides: int or tuple of 2 ints, spatial subsampling.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        activation: activation applied to the output, or `None`.
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`.
        execution: `"auto"`, `"rolled_groups"` or `"masked_dense"`.

    Returns:
        A layer mapping `(batch, H, W, C_in)` to
        `(batch, ceil(H / sh), ceil(W / sw), filters)`.

    Raises:
        ValueError: if the grid does not divide the channel counts, the window
            is larger than the grid, a size is not positive, `execution` is
            unknown, or the input is not rank 4 with known channels.

    Example:

    >>> proj = TopologicalProjection(256, grid=(1, 8), window=(1, 2))
    >>> y = proj(keras.ops.ones((1, 7, 7, 256)))
    >>> proj.count_params() == 256 * 256 * 2 // 8 + 256
    True
    >>> proj.execution_form((1, 7, 7, 256)), proj.execution_form((1, 56, 56, 256))
    ('rolled_groups', 'masked_dense')
    """

    EXECUTION_FORMS = PROJECTION_FORMS

    def __init__(
        self,
        filters,
        grid=(4, 4),
        window=(3, 3),
        strides=1,
        data_format=None,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        execution="auto",
        **kwargs,
    ):
        super().__init__(
            filters,
            1,
            strides=strides,
            data_format=data_format,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.grid = _validation.normalize_tuple(grid, 2, "grid")
        self.window = _validation.normalize_tuple(window, 2, "window")
        _check_window(self.grid, self.window)
        cells = self.grid[0] * self.grid[1]
        if self.filters % cells:
            raise _validation.invalid_value(
                "filters",
                f"expected a multiple of d1 * d2 = {cells} for grid={self.grid}",
                self.filters,
            )
        self.execution = self._check_execution(execution)

    def _build_kernels(self, input_channels):
        cells = self.grid[0] * self.grid[1]
        if input_channels % cells:
            raise _validation.invalid_value(
                "grid",
                "d1 * d2 must divide the number of input channels",
                received=f"grid={self.grid} (d1 * d2 = {cells}), input channels={input_channels}",
            )
        connected = topological_connections(
            input_channels, self.filters, self.grid, self.window
        )
        rows = int(connected[:, 0].sum())
        # Output j's compact rows are its connected inputs in ascending order: the
        # window's cells, each a run of s_in channels, so row k * s_in + u is
        # channel u of the k-th lowest cell of j's window ("chunk" k).
        self.kernel = self._add_kernel("kernel", (1, 1, rows, self.filters))
        s_in = input_channels // cells
        chunks = rows // s_in
        window_cells = np.nonzero(connected[::s_in, :: self.filters // cells].T)[1].reshape(cells, chunks)
        # chunk_cell[k, i, q]: chunk k of output cell q is input cell i.
        chunk_cell = np.zeros((chunks, cells, cells), dtype=bool)
        for k in range(chunks):
            chunk_cell[k, window_cells[:, k], np.arange(cells)] = True
        self._dense_masks = chunk_cell.reshape(chunks, cells, 1, cells, 1)
        # Offset o's grouped conv reads input cell input_orders[o] at its group q:
        # _offset_masks[o, k, 0, q] says whether that cell is chunk k of output cell q.
        self._offsets = topological_offsets(self.window)
        self._input_orders = [cell_shift_order(input_channels, self.grid, o) for o in self._offsets]
        read_cells = np.stack([order[::s_in] // s_in for order in self._input_orders])  # (offsets, cells)
        self._offset_masks = chunk_cell[:, read_cells, np.arange(cells)].transpose(1, 0, 2).reshape(
            len(self._offsets), chunks, 1, cells, 1
        )
        self.connectivity = connected

    def _auto_execution(self, input_shape, training):
        # A training step with "auto" runs the masked dense form: with XLA the rolled
        # form's gradient (grouped-conv backprop) is slower, and masked is never far off.
        if training:
            return "masked_dense"
        spatial = None
        if input_shape is not None:
            spatial = _core.spatial_dims(self.compute_output_shape(input_shape), self.data_format)
        channels = getattr(self, "input_channels", None)
        return choose_execution(self.grid, self.window, channels, self.filters, spatial)

    def _convolve(self, inputs, form):
        x = inputs
        if form == "masked_dense":
            # A strided 1x1 convolution reads x[:, ::sh, ::sw] itself; slicing first
            # costs a copy (TF: 7.5 ms of FactorizedResNet50's 130 ms at batch 8).
            return _core.conv(x, self.dense_kernel(), strides=self.strides, padding="valid",
                              data_format=self.data_format)
        x = _core.subsample(x, self.strides, self.data_format)
        kernels = self._group_kernels()
        y = None
        for o, shift in enumerate(self._offsets):
            view = _core.roll_channel_grid(x, self.grid, shift, self.data_format)
            part = _core.grouped_conv(
                view, kernels[o], self.grid[0] * self.grid[1], data_format=self.data_format
            )
            y = part if y is None else y + part
        return y

    def dense_kernel(self):
        """The equivalent dense `(1, 1, C_in, filters)` kernel (zeros where unconnected).

        Returns:
            A tensor in the layer's compute dtype inside `call`, float32 outside.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        return _core.reuse_while_unchanged(self, [self.kernel], self._dense_from_compact, name="dense")

    def _chunks(self, kernel):
        """The compact kernel as `(chunks, s_in, cells, s_out)`: chunk k, channel u, output cell q, output t."""
        cells = self.grid[0] * self.grid[1]
        chunks = self._dense_masks.shape[0]
        return ops.reshape(kernel, (chunks, -1, cells, self.filters // cells))

    # Both kernels are sums of the compact chunks times 0/1 masks rather than gathers:
    # the gradient is then a multiply too (a gather's is a scatter, slow on torch), and
    # TensorFlow builds the kernel without copying the weights into a gather pool.

    def _dense_from_compact(self, parts):
        dense = _masked_chunk_sum(self._chunks(parts[0]), self._dense_masks)  # (cells, s_in, cells, s_out)
        return ops.reshape(dense, (1, 1, self.input_channels, self.filters))

    def _group_kernels(self):
        """Offset o's grouped `(1, 1, s_in, filters)` kernel, for every offset (the rolled form)."""

        def build(parts):
            w = self._chunks(parts[0])
            # Each offset's kernel is (s_in, cells, s_out): one chunk per output cell.
            return [ops.reshape(_masked_chunk_sum(w, masks), (1, 1, -1, self.filters)) for masks in self._offset_masks]

        return _core.reuse_while_unchanged(self, [self.kernel], build, name="groups")

    def inference_form(self, input_shape=None):
        """The projection in both exact forms, and which one the layer runs.

        Args:
            input_shape: the input shape the form is for (see
                `execution_form`), or None.

        Returns:
            A `TopologicalProjectionInferenceForm` of float32 NumPy arrays.

        Raises:
            ValueError: if the layer is not built.

        Example:

        >>> proj = TopologicalProjection(16, grid=(1, 8), window=(1, 2), execution="rolled_groups")
        >>> proj.build((None, 8, 8, 16))
        >>> form = proj.inference_form((1, 8, 8, 16))
        >>> form.execution, form.group_kernels.shape
        ('rolled_groups', (2, 1, 1, 2, 16))
        """
        self._require_built()
        return TopologicalProjectionInferenceForm(
            execution=self.execution_form(input_shape),
            strides=self.strides,
            dense_kernel=self._numpy(self.dense_kernel()),
            input_orders=[order.copy() for order in self._input_orders],
            group_kernels=np.stack([self._numpy(k) for k in self._group_kernels()]),
            bias=self._numpy(self.bias),
        )

    def _macs_for(self, input_channels, output_spatial, input_shape):
        cells = self.grid[0] * self.grid[1]
        per_pixel = self.window[0] * self.window[1] * (input_channels // cells) * self.filters
        return output_spatial[0] * output_spatial[1] * per_pixel

    def get_config(self):
        config = super().get_config()
        for name in ("kernel_size", "padding", "dilation_rate"):
            config.pop(name)
        config.update({"grid": self.grid, "window": self.window, "execution": self.execution})
        return config


def _masked_chunk_sum(chunks, masks):
    """`sum_k chunks[k] * masks[k]`, the 0/1 masks broadcast and cast to the chunks' dtype."""
    total = None
    for k in range(chunks.shape[0]):
        term = chunks[k] * ops.convert_to_tensor(masks[k], dtype=chunks.dtype)
        total = term if total is None else total + term
    return total


def _projection(filters, topology, layer, name, input_channels, use_bias):
    """A built 1x1 projection sub-layer: dense, or topological with `topology`."""
    common = dict(
        data_format=layer.data_format,
        use_bias=use_bias,
        kernel_initializer=layer.kernel_initializer,
        bias_initializer=layer.bias_initializer,
        kernel_regularizer=layer.kernel_regularizer,
        bias_regularizer=layer.bias_regularizer,
        kernel_constraint=layer.kernel_constraint,
        bias_constraint=layer.bias_constraint,
        dtype=layer.dtype_policy,
        name=name,
    )
    if topology is None:
        projection = keras.layers.Conv2D(filters, 1, **common)
    else:
        projection = TopologicalProjection(
            filters, topology["grid"], topology["window"], **common
        )
    if layer.data_format == "channels_last":
        projection.build((None, None, None, input_channels))
    else:
        projection.build((None, input_channels, None, None))
    return projection


@keras.saving.register_keras_serializable(package="keras_effconv")
class SpatialBottleneck(EfficientConv2D):
    """SIC spatial bottleneck: work at half resolution, return at full resolution.

    `depthwise k x k, stride 2 ("same")` -> `1x1 projection` (dense, or
    topological with `topology`) at half resolution -> per-channel stride-2
    transposed convolution with a `2 x 2` kernel back to full resolution,
    cropped to the input's height and width (so odd sizes are returned
    unchanged). The transposed convolution is written as a per-channel scale
    followed by `depth_to_space`, which exports to TFLite builtins (Keras'
    `Conv2DTranspose` has no groups).

    Args:
        filters: int, output channels.
        kernel_size: int or tuple of 2 ints, depthwise kernel size.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        activation: activation applied to the output, or `None`.
        use_bias: bool; adds one bias per output channel at the end.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`.
        topology: None or `{"grid": (d1, d2), "window": (c1, c2)}` for a
            `TopologicalProjection`.

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H, W, filters)`.

    Raises:
        ValueError: for non-positive sizes, a bad `topology`, unknown
            `data_format`, or a non rank-4 input.

    Example:

    >>> layer = SpatialBottleneck(32, 3)
    >>> tuple(layer(keras.ops.ones((1, 15, 16, 32))).shape)
    (1, 15, 16, 32)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        data_format=None,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        topology=None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            data_format=data_format,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.topology = normalize_topology(topology)

    def _build_kernels(self, input_channels):
        kh, kw = self.kernel_size
        self.depthwise_kernel = self._add_kernel("depthwise_kernel", (kh, kw, input_channels, 1))
        # The bias is added once, after upsampling, by the base class.
        self.projection = _projection(
            self.filters, self.topology, self, "projection", input_channels, use_bias=False
        )
        self.upsample_kernel = self._add_kernel(
            "upsample_kernel", (2, 2, self.filters), initializer=initializers.Ones()
        )

    def _half_shape(self, input_shape):
        spatial = _core.spatial_dims(input_shape, self.data_format)
        half = tuple(None if s is None else _core.ceil_div(s, 2) for s in spatial)
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        return _core.with_spatial_and_channels(input_shape, half, channels, self.data_format)

    def _convolve(self, inputs):
        df = self.data_format
        y = _core.depthwise_conv(inputs, self.depthwise_kernel, strides=2, padding="same", data_format=df)
        y = _project(self.projection, y)
        # Per-channel 2x2 stride-2 transposed conv == scale 4 copies + depth_to_space,
        # whose input channel (a*2 + b)*C + c lands at offset (a, b) in both formats.
        scale = ops.reshape(self.upsample_kernel, (4 * self.filters,))
        if df == "channels_first":
            y = ops.tile(y, (1, 4, 1, 1)) * ops.reshape(scale, (1, 4 * self.filters, 1, 1))
        else:
            y = ops.tile(y, (1, 1, 1, 4)) * scale
        y = _core.depth_to_space(y, 2, df)
        height, width = _core.spatial_dims(inputs.shape, df)
        if height is None or width is None:
            shape = ops.shape(inputs)
            height, width = _core.spatial_dims(shape, df)
        if df == "channels_last":
            return y[:, :height, :width, :]
        return y[:, :, :height, :width]

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            _validation.check_input_shape(self, input_shape)
        spatial = _core.spatial_dims(input_shape, self.data_format)
        return _core.with_spatial_and_channels(input_shape, spatial, self.filters, self.data_format)

    def _macs_for(self, input_channels, output_spatial, input_shape):
        kh, kw = self.kernel_size
        half = _core.spatial_dims(self._half_shape(input_shape), self.data_format)
        low = half[0] * half[1]
        projection = self.filters * input_channels
        if self.topology is not None:
            (d1, d2), (c1, c2) = self.topology["grid"], self.topology["window"]
            projection = projection * c1 * c2 // (d1 * d2)
        return low * (kh * kw * input_channels + projection) + output_spatial[0] * output_spatial[1] * self.filters

    def inference_form(self, input_shape=None):
        """The bottleneck's weights in the form its export lowering emits.

        `y = depthwise_conv(x, depthwise_kernel, strides=2, "same")`, then
        `y = conv1x1(y, projection_kernel)`, then four copies of `y`
        concatenated, scaled per channel by `upsample_scale` (+ `bias` tiled
        four times) and `depth_to_space(2)` (channels_last order: copy
        `a * 2 + b` lands at row offset `a`, column offset `b`), cropped to
        the input's height and width.

        Args:
            input_shape: the input shape (with batch dimension) the form is
                for, or None; a topological projection's form depends on it.

        Returns:
            A `SpatialBottleneckInferenceForm` of float32 NumPy arrays.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        half = None if input_shape is None else self._half_shape(tuple(input_shape))
        kernel, _, form = _projection_weights(self.projection, half)
        return SpatialBottleneckInferenceForm(
            depthwise_kernel=self._numpy(self.depthwise_kernel),
            projection_kernel=kernel,
            upsample_scale=self._numpy(self.upsample_kernel).reshape(4 * self.filters),
            bias=self._numpy(self.bias),
            projection_form=form,
        )

    def get_config(self):
        config = super().get_config()
        for name in _DROPPED_CONV_ARGS[1:]:
            config.pop(name)
        config["topology"] = self.topology
        return config


@keras.saving.register_keras_serializable(package="keras_effconv")
class FactorizedConv2D(EfficientConv2D):
    """Factorized convolution from single intra-channel (SIC) units.

    One SIC unit: depthwise `k x k` convolution (one kernel per channel) ->
    linear `1 x 1` channel projection (+ bias) -> `+ input` when the shapes
    match (`filters` channels in and out, stride 1, and "same" padding or a
    `1 x 1` kernel) -> `activation`. `num_units` units run one after
    another; the first carries the layer's strides, padding and dilation and
    the change from `C_in` to `filters` channels, the others use stride 1 and
    `"same"`.

    With `topology={"grid": (d1, d2), "window": (c1, c2)}` every projection is
    a `TopologicalProjection`. With `spatial_bottleneck=True` every unit of
    stride 1 and `"same"` padding replaces its depthwise conv + projection by a
    `SpatialBottleneck` (stride-2 depthwise, projection at half resolution,
    per-channel transposed conv back); a strided first unit stays regular.

    Note: `activation` (default `None`, as in `Conv2D`) ends every unit; pass
    `activation="relu"` for the paper's units.

    Args:
        filters: int, output channels.
        kernel_size, strides, padding, data_format, dilation_rate, use_bias,
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`.
        activation: activation at the end of every unit, or `None`.
        num_units: int >= 1, number of SIC units.
        topology: None, or `{"grid": (d1, d2), "window": (c1, c2)}` (or the
            pair `(grid, window)`) for topological subdivisioning.
        spatial_bottleneck: bool, use the spatial bottleneck structure
            (requires `dilation_rate=1`).

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H', W', filters)`.

    Raises:
        ValueError: for non-positive sizes, a bad `topology`, `num_units < 1`,
            unknown `padding`/`data_format`, or a non rank-4 input.

    Example:

    >>> layer = FactorizedConv2D(64, 3, num_units=2, activation="relu")
    >>> tuple(layer(keras.ops.ones((2, 16, 16, 32))).shape)
    (2, 16, 16, 64)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding="same",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        num_units=2,
        topology=None,
        spatial_bottleneck=False,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.num_units = _validation.check_positive_int(num_units, "num_units")
        self.topology = normalize_topology(topology)
        self.spatial_bottleneck = bool(spatial_bottleneck)
        if self.spatial_bottleneck and max(self.dilation_rate) > 1:
            # The bottleneck's stride-2 depthwise conv has no dilation: refuse rather than drop it.
            raise _validation.invalid_value(
                "dilation_rate", "1 when spatial_bottleneck=True", self.dilation_rate
            )

    def _unit_plan(self, input_channels):
        """Per unit: (input channels, first?, bottleneck?, residual?).

        A unit adds its input when it keeps the shape for every input size:
        `filters` channels in and out, stride 1, and "same" padding or a
        `1 x 1` kernel (with which "valid" changes nothing). Bottleneck units
        are those of stride 1 and "same" padding.
        """
        keeps_size = self.strides == (1, 1) and (self.padding == "same" or self.kernel_size == (1, 1))
        plan = []
        for u in range(self.num_units):
            c = input_channels if u == 0 else self.filters
            first = u == 0
            regular_geometry = not first or (self.strides == (1, 1) and self.padding == "same")
            bottleneck = self.spatial_bottleneck and regular_geometry
            residual = c == self.filters and (not first or keeps_size)
            plan.append((c, first, bottleneck, residual))
        return plan

    _owns_bias = False  # each unit's projection carries its bias

    def _build_kernels(self, input_channels):
        kh, kw = self.kernel_size
        self._plan = self._unit_plan(input_channels)
        # Per unit: a SpatialBottleneck, or a depthwise kernel + projection layer.
        self.unit_blocks = []
        self._unit_depthwise = []
        for u, (c, first, bottleneck, _) in enumerate(self._plan):
            if bottleneck:
                block = SpatialBottleneck(
                    self.filters,
                    self.kernel_size,
                    data_format=self.data_format,
                    use_bias=self.use_bias,
                    kernel_initializer=self.kernel_initializer,
                    bias_initializer=self.bias_initializer,
                    kernel_regularizer=self.kernel_regularizer,
                    bias_regularizer=self.bias_regularizer,
                    kernel_constraint=self.kernel_constraint,
                    bias_constraint=self.bias_constraint,
                    topology=self.topology,
                    dtype=self.dtype_policy,
                    name=f"unit_{u}_bottleneck",
                )
                shape = (None, None, None, c) if self.data_format == "channels_last" else (None, c, None, None)
                block.build(shape)
                self.unit_blocks.append(block)
                self._unit_depthwise.append(None)
            else:
                self._unit_depthwise.append(
                    self._add_kernel(f"unit_{u}_depthwise_kernel", (kh, kw, c, 1))
                )
                self.unit_blocks.append(
                    _projection(
                        self.filters, self.topology, self, f"unit_{u}_projection", c,
                        use_bias=self.use_bias,
                    )
                )

    def _convolve(self, inputs):
        # Every unit but the last ends with the activation; `call` applies the last one.
        x = inputs
        inner = dict(
            strides=1, padding="same", dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        for u, ((c, first, bottleneck, residual), block, depthwise) in enumerate(
            zip(self._plan, self.unit_blocks, self._unit_depthwise)
        ):
            if u > 0 and self.activation is not None:
                x = self.activation(x)
            if bottleneck:
                y = block(x)
            else:
                kwargs = self._conv_kwargs() if first else inner
                y = _project(block, _core.depthwise_conv(x, depthwise, **kwargs))
            if residual:
                y = y + x
            x = y
        return x

    def inference_form(self, input_shape=None):
        """The SIC units' weights in the form the export lowering emits.

        Unit by unit: `y = conv1x1(depthwise_conv(x, depthwise_kernel,
        **geometry), projection_kernel) + projection_bias` (or, for a
        bottleneck unit, the `SpatialBottleneck` form in `bottleneck`), then
        `y + x` when `residual`, then the layer's `activation`.

        Args:
            input_shape: the input shape (with batch dimension) the form is
                for, or None; a topological projection's form depends on it.

        Returns:
            A list of `FactorizedUnitForm`, one per unit.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        output_shape = None if input_shape is None else self.compute_output_shape(tuple(input_shape))
        units = []
        inner = dict(strides=(1, 1), padding="same", dilation_rate=self.dilation_rate)
        for (c, first, bottleneck, residual), block, depthwise in zip(
            self._plan, self.unit_blocks, self._unit_depthwise
        ):
            # Every unit's projection, and every unit but the first, works at the layer's output size.
            at_output = None if output_shape is None else _core.with_spatial_and_channels(
                output_shape, _core.spatial_dims(output_shape, self.data_format), c, self.data_format
            )
            unit_input = input_shape if first else at_output
            if bottleneck:
                units.append(
                    FactorizedUnitForm(None, None, None, None, block.inference_form(unit_input), residual)
                )
                continue
            kernel, bias, form = _projection_weights(block, at_output)
            geometry = dict(strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate)
            units.append(
                FactorizedUnitForm(
                    self._numpy(depthwise), geometry if first else inner, kernel, bias, None, residual, form
                )
            )
        return units

    def _macs_for(self, input_channels, output_spatial, input_shape):
        out_h, out_w = output_spatial
        kh, kw = self.kernel_size
        plan = self._plan if self.built else self._unit_plan(input_channels)
        total = 0
        for u, (c, first, bottleneck, _) in enumerate(plan):
            if bottleneck:
                shape = input_shape if first else _core.with_spatial_and_channels(
                    input_shape, (out_h, out_w), c, self.data_format
                )
                total += self._bottleneck_macs(c, shape)
                continue
            projection = c * self.filters
            if self.topology is not None:
                (d1, d2), (c1, c2) = self.topology["grid"], self.topology["window"]
                projection = projection * c1 * c2 // (d1 * d2)
            total += out_h * out_w * (kh * kw * c + projection)
        return total

    def _bottleneck_macs(self, channels, input_shape):
        probe = SpatialBottleneck(
            self.filters, self.kernel_size, data_format=self.data_format, topology=self.topology
        )
        return probe.compute_macs(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_units": self.num_units,
                "topology": self.topology,
                "spatial_bottleneck": self.spatial_bottleneck,
            }
        )
        return config

"""HetConv: heterogeneous kernel-based convolution (Singh et al., CVPR 2019)."""

import dataclasses
import functools

import numpy as np

import keras
from keras import ops

from keras_effconv import _validation
from keras_effconv.layers import _core
from keras_effconv.layers.base import EfficientConv2D


@dataclasses.dataclass(frozen=True)
class HetConvInferenceForm:
    """`HetConv2D.inference_form()`: float32 NumPy arrays.

    Attributes:
        groups: the grouped convolution's groups (`part`).
        input_order: `(C_in,)`, the input channels in the order the grouped
            and `1 x 1` kernels read them.
        output_order: `(filters,)`, column `t` of both kernels is output
            channel `output_order[t]`.
        kernel: `(kh, kw, C_in / part, filters)` grouped kernel.
        pointwise_kernel: `(1, 1, C_in, filters)` dense `1 x 1` kernel reading
            the centre taps, zero where the `k x k` kernels are; None when
            `part == 1`.
        bias: `(filters,)` in natural order, or None.
    """

    groups: int
    input_order: np.ndarray
    output_order: np.ndarray
    kernel: np.ndarray
    pointwise_kernel: object
    bias: object


HETCONV_FORMS = ("grouped_dense", "per_class", "dense")


# Fewest input channels per group (C_in / part) at which the exact forms beat the
# dense-equivalent kernel, per backend and number of channel shuffles the grouped form
# runs (2 in the paper's order, fewer with blocked sides): (inference, training step).
# Measured with part=4 over ResNet-20 (28x28x16, 14x14x32, 7x7x64 at batch 128) and
# ResNet-50 (56x56x64 ... 7x7x512 at batch 8) shapes, speed against Conv2D (fwd /
# fwd+bwd): with 4 channels per group the grouped form runs 0.30-0.49x on every
# backend with both shuffles (0.35-1.05x without) and the dense one 0.74-1.0x (up to
# 1.7x on torch); with 8, dense wins on TF and torch (0.78-0.93x against 0.54-0.86x)
# and the grouped form wins JAX training (1.24x); from 16 (TF training, JAX) or 32
# (torch; TF inference, 0.91x against 0.96x at 7x7x64) the grouped form wins
# (1.1-2.2x). Without both shuffles it wins earlier: TF 14x14x32 with none 1.06x /
# 1.07x against 1.04x / 0.97x dense, with one 0.86x / 0.96x against 1.08x / 0.99x;
# torch 7x7x64 with none 1.56x / 1.17x against 1.30x / 0.99x, with one 1.27x / 1.10x
# against 1.31x / 1.00x; JAX's thresholds hold for every count.
_HETCONV_MIN_GROUP_CHANNELS = {
    "tensorflow": {2: (32, 16), 1: (16, 16), 0: (8, 8)},
    "jax": {2: (16, 8), 1: (16, 8), 0: (16, 8)},
    "torch": {2: (32, 32), 1: (16, 16), 0: (16, 16)},
}
# TensorFlow under XLA (`jit_compile=True`) runs grouped convolutions per group
# (`_core.grouped_conv`), which measured 0.73x / 0.74x Conv2D at 7x7x64 (16
# channels per group) and 0.96x / 0.85x at 28x28x128 (32), against 1.43x / 1.27x
# at 14x14x256 (64); the dense kernel runs 1.06-1.11x at ResNet-20 sizes there.
_HETCONV_MIN_GROUP_CHANNELS_TF_XLA = (64, 64)


def choose_hetconv_execution(
    part, input_channels, input_shape, data_format, training, backend=None, xla=None, shuffles=2
):
    """The form `HetConv2D(execution="auto")` runs for one call: a measured rule.

    `"grouped_dense"` (grouped `k x k` conv + dense `1 x 1` on the centre
    taps) saves MACs but adds channel shuffles and a centre crop, memory
    passes that cost more than the saved MACs when a group has few channels;
    there the `"dense"` equivalent kernel (one convolution, the layer's
    function exactly, gradients still reaching only the free weights) runs
    faster. TensorFlow inference on maps of 56x56 or more also takes the
    dense form when both shuffles run (0.95x against 0.89x at 56x56x64;
    without them the grouped form runs 1.16-1.34x). `"per_class"` (MAC-exact)
    measured no faster than `"grouped_dense"` anywhere and is never chosen.

    Args:
        part: the layer's `part`.
        input_channels: input channels, or None when unknown.
        input_shape: the call's input shape with batch, or None.
        data_format: the layer's data format.
        training: whether the call is a training step.
        backend: the Keras backend, default the current one.
        xla: TensorFlow only: whether the call is traced under
            `jit_compile=True` (its own thresholds); default: detected.
        shuffles: how many channel shuffles the grouped form runs (2, or
            fewer with `blocked_inputs`/`blocked_outputs`).

    Returns:
        `"grouped_dense"` or `"dense"`.
    """
    backend = backend or keras.backend.backend()
    if part == 1 or input_channels is None:
        return "grouped_dense"
    if xla is None:
        xla = _core.in_tensorflow_xla()
    if backend == "tensorflow" and xla:
        inference_min, training_min = _HETCONV_MIN_GROUP_CHANNELS_TF_XLA
    else:
        inference_min, training_min = _HETCONV_MIN_GROUP_CHANNELS.get(backend, {}).get(shuffles, (16, 16))
    if input_channels // part < (training_min if training else inference_min):
        return "dense"
    if backend == "tensorflow" and not training and shuffles == 2 and input_shape is not None:
        h, w = _core.spatial_dims(input_shape, data_format)
        if h is not None and w is not None and h * w >= 56 * 56:
            return "dense"
    return "grouped_dense"


@keras.saving.register_keras_serializable(package="keras_effconv")
class HetConv2D(EfficientConv2D):
    """Heterogeneous-kernel 2D convolution (HetConv, Singh et al., CVPR 2019).

    Every filter has `C_in / part` kernels of size `k x k` and `1 x 1`
    kernels on the remaining input channels. Filter `j` has its `k x k`
    kernels on the input channels `i` with `(i - j) mod part == 0` (the
    paper's shifted pattern, so only `part` distinct patterns exist). The
    `1 x 1` kernels sit at the centre tap of the `k x k` window, so the layer
    equals a dense convolution with the kernel returned by `dense_kernel()`.
    `part=1` is a standard convolution.

    Exact and efficient form: a `k x k` grouped convolution with `part`
    groups over residue-class-ordered channels plus a `1 x 1` convolution.
    The `1 x 1` weights are stored compactly (`pointwise_kernel` has shape
    `(1, 1, C_in - C_in/part, filters)`): the positions covered by `k x k`
    kernels do not exist as weights at all, so they cannot receive gradients
    or weight decay and `count_params()` is the paper's parameter count.

    MACs per output pixel: `k^2 * C_in * filters / part +
    C_in * filters * (1 - 1/part)`, i.e. a ratio of
    `1/part + (1 - 1/part)/k^2` of a standard convolution; `compute_macs`
    counts these (the paper's), whichever form runs.

    Three exact forms of the same function (`execution`): `"grouped_dense"`
    (the grouped `k x k` conv plus one dense `1 x 1` matmul on the centre
    taps, whose `C_in * filters / part` structural zeros are multiplied too),
    `"per_class"` (per residue class, a `k x k` conv on its own channels and a
    `1 x 1` conv on the others: exactly the counted MACs) and `"dense"` (one
    convolution with `dense_kernel()`, gathered from the compact weights each
    call, so gradients still reach only them). `"auto"` picks per call by the
    measured rule `choose_hetconv_execution` (backend, channels per group,
    map size, training or not); `execution_form(input_shape, training)` says
    which one runs.

    Blocked channel order (`blocked_inputs`, `blocked_outputs`): the exact
    forms work on channels sorted by residue class (position `r * C_in/part
    + u` holds the paper's channel `r + part * u`) and shuffle into and out
    of that order, two memory passes over the maps that cost more than the
    `k x k` MACs saved at 56x56x64 (TensorFlow, batch 8: 0.84-0.91x a
    Conv2D with the shuffles, 1.16-1.34x without, two runs). With `blocked_inputs=True` the layer
    takes its input channels already in that order, and with
    `blocked_outputs=True` it returns its output channels in it (output
    position `r * filters/part + t` is the paper's channel `r + part * t`):
    the same layer with its channels relabelled, so each filter's `k x k`
    kernels cover one contiguous block of `C_in / part` channels. Inside a
    network this changes nothing but the labels when the neighbour on that
    side is a learned convolution reached through per-channel layers only
    (batch normalization, ReLU, pooling): its own weights absorb the
    relabelling, as in a ResNet bottleneck between its two `1 x 1`
    convolutions. The applications set both where that holds; a layer used
    on its own keeps the paper's order (the default).

    Args:
        filters: int, number of output channels; must be divisible by `part`.
        kernel_size: int or tuple of 2 odd ints, the heterogeneous kernel size.
        strides: int or tuple of 2 ints. Applies to both kernel sizes.
        padding: `"same"` or `"valid"` (as `keras.layers.Conv2D`).
        data_format: `"channels_last"`, `"channels_first"` or `None`
            (`keras.config.image_data_format()`).
        dilation_rate: int or tuple of 2 ints, dilation of the `k x k` kernels.
        activation: activation applied to the output, or `None`.
        use_bias: bool, whether to add a bias vector.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`; the kernel ones apply to
            both the `k x k` and the `1 x 1` weights.
        part: int, the paper's `P`. The input channel count and `filters`
            must be divisible by it.
        execution: `"auto"`, `"grouped_dense"`, `"per_class"` or `"dense"`.
        blocked_inputs: bool, whether the input channels come in blocked
            (residue-class) order (see above). Default False.
        blocked_outputs: bool, whether the output channels are returned in
            blocked order. Default False.

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H', W', filters)`
        (channels_last), like `keras.layers.Conv2D`.

    Raises:
        ValueError: for non-positive sizes, an even kernel size, a `part`
            that does not divide `filters` or the input channels, an unknown
            `padding`/`data_format`/`execution`, or a non rank-4 input.
        TypeError: if `blocked_inputs` or `blocked_outputs` is not a bool.

    Example:

    >>> layer = HetConv2D(64, 3, part=4)
    >>> y = layer(keras.ops.ones((2, 32, 32, 64)))
    >>> tuple(y.shape)
    (2, 32, 32, 64)
    >>> layer.compute_macs((32, 32, 64)) == 32 * 32 * (9 * 64 * 64 // 4 + 64 * 64 * 3 // 4)
    True
    >>> blocked = HetConv2D(64, 3, part=4, blocked_inputs=True, blocked_outputs=True)
    >>> tuple(blocked(keras.ops.ones((2, 32, 32, 64))).shape)
    (2, 32, 32, 64)
    """

    EXECUTION_FORMS = HETCONV_FORMS

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
        part=4,
        execution="auto",
        blocked_inputs=False,
        blocked_outputs=False,
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
        self.part = _validation.check_positive_int(part, "part")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise _validation.invalid_value(
                "kernel_size",
                "HetConv2D needs odd kernel sizes, because its 1x1 kernels sit at the window centre",
                self.kernel_size,
            )
        _validation.check_divides(self.part, "part", self.filters, "filters")
        self.execution = self._check_execution(execution)
        self.blocked_inputs = _validation.check_type(blocked_inputs, "blocked_inputs", bool, "a bool")
        self.blocked_outputs = _validation.check_type(blocked_outputs, "blocked_outputs", bool, "a bool")

    def _build_kernels(self, input_channels):
        part = self.part
        _validation.check_divides(part, "part", input_channels, "input channels")
        kh, kw = self.kernel_size
        c_group = input_channels // part
        # k x k weights: grouped kernel over residue-class-ordered channels.
        self.kernel = self._add_kernel("kernel", (kh, kw, c_group, self.filters))
        # 1 x 1 weights: only the free ones, ascending input index per filter.
        self.pointwise_kernel = None
        if part > 1:
            self.pointwise_kernel = self._add_kernel(
                "pointwise_kernel", (1, 1, input_channels - c_group, self.filters)
            )

    # Gather maps from the compact weights to dense kernels, made on first use
    # and stored as int32: a layer holds only the maps its execution form needs
    # (building keeps within about the memory of a Conv2D of the same size).

    def _compact_rows(self):
        """`(C_in, filters)`: row of input `i` in filter `j`'s compact 1x1 weights, -1 on k x k positions."""
        part, c_in, n = self.part, self.input_channels, self.filters
        i = np.arange(c_in, dtype=np.int32)[:, None]
        r = (np.arange(n, dtype=np.int32) % part)[None, :]
        # Filter j skips the channels i = r + part*u (its k x k ones): those before i are counted out.
        skipped_before = np.where(i >= r, (i - r) // part + 1, 0)
        rows = i - skipped_before
        return np.where((i - r) % part == 0, -1, rows).astype(np.int32)

    def _kernel_size(self):
        kh, kw = self.kernel_size
        return kh * kw * (self.input_channels // self.part) * self.filters

    def _pointwise_class_kernel(self):
        """The 1x1 kernel in class order (rows and columns), zeros on k x k positions."""
        part, cg, ng = self.part, self.input_channels // self.part, self.filters // self.part

        def build(weights):
            return ops.reshape(_pointwise_class_table(weights[0], part, cg, ng), (1, 1, part * cg, part * ng))

        return _core.reuse_while_unchanged(self, [self.pointwise_kernel], build, name="pointwise")

    @functools.cached_property
    def _pointwise_per_class_maps(self):
        """Per output class r: the 1x1 weights over the other classes' channels only."""
        part, n = self.part, self.filters
        cg, ng = self.input_channels // part, n // part
        in_order, out_order = self._class_orders(self.input_channels)
        compact = self._compact_rows()
        maps = []
        for r in range(part):
            cols = out_order[r * ng : (r + 1) * ng]
            other = np.concatenate([in_order[s * cg : (s + 1) * cg] for s in range(part) if s != r])
            index = self._kernel_size() + compact[other][:, cols] * n + cols[None, :]
            maps.append(_core.GatherIndex(index.reshape(1, 1, len(other), ng)))
        return maps

    @functools.cached_property
    def _dense_index(self):
        """Index map of the dense equivalent kernel (natural channel order), made once it is first needed."""
        part, n, c_in = self.part, self.filters, self.input_channels
        kh, kw = self.kernel_size
        cg, ng = c_in // part, n // part
        dense = np.full((kh, kw, c_in, n), -1, dtype=np.int32)
        a, b, u, col = np.meshgrid(
            np.arange(kh), np.arange(kw), np.arange(cg), np.arange(n), indexing="ij", sparse=True
        )
        r, t = col // ng, col % ng
        dense[a, b, r + part * u, r + part * t] = ((a * kw + b) * cg + u) * n + col
        compact = self._compact_rows()
        ii, jj = np.nonzero(compact >= 0)
        dense[kh // 2, kw // 2, ii, jj] = self._kernel_size() + compact[ii, jj] * n + jj
        # Blocked sides: row (column) p is the paper's channel class_order[p].
        in_order, out_order = self._class_orders(c_in)
        if self.blocked_inputs:
            dense = dense[:, :, in_order, :]
        if self.blocked_outputs:
            dense = dense[:, :, :, out_order]
        return _core.GatherIndex(dense)

    def _auto_execution(self, input_shape, training):
        shuffles = 2 - int(self.blocked_inputs) - int(self.blocked_outputs)
        return choose_hetconv_execution(
            self.part, getattr(self, "input_channels", None), input_shape, self.data_format, training,
            shuffles=shuffles,
        )

    def _convolve(self, inputs, form):
        if self.part == 1 or form == "dense":
            kernel = self.kernel
            if self.part > 1:
                kernel = _core.gather_from_parts(self._weights(), self._dense_index)
            return _core.conv(inputs, kernel, **self._conv_kwargs())
        part, df = self.part, self.data_format
        c_in = self.input_channels
        cg = c_in // part
        # Residue-class order: position r*cg + u holds channel r + part*u.
        x = inputs if self.blocked_inputs else _core.shuffle_channels(inputs, cg, df)
        centres = _core.sample_window_centres(
            x, self.kernel_size, self.strides, self.padding, self.dilation_rate, df
        )
        if form == "per_class":
            y = self._per_class(x, centres)
        else:
            y = _core.grouped_conv(x, self.kernel, part, **self._conv_kwargs())
            pointwise = self._pointwise_class_kernel()
            y = y + _core.conv(centres, pointwise, data_format=df)
        if self.blocked_outputs:
            return y
        # Back to natural order: channel t*part + r <- class position r*ng + t.
        return _core.shuffle_channels(y, part, df)

    def _per_class(self, x, centres):
        # MAC-exact form: each output class gets a k x k conv on its own input
        # class and a 1x1 conv on the other classes only (no structural zeros).
        part, df = self.part, self.data_format
        cg, ng = self.input_channels // part, self.filters // part
        outputs = []
        for r in range(part):
            xr = _core.slice_channels(x, r * cg, (r + 1) * cg, df)
            kr = self.kernel[:, :, :, r * ng : (r + 1) * ng]
            other = _core.concat_channels(
                [
                    _core.slice_channels(centres, s * cg, (s + 1) * cg, df)
                    for s in range(part)
                    if s != r
                ],
                df,
            )
            pointwise = _core.gather_from_parts(
                self._weights(), self._pointwise_per_class_maps[r]
            )
            outputs.append(
                _core.conv(xr, kr, **self._conv_kwargs())
                + _core.conv(other, pointwise, data_format=df)
            )
        return _core.concat_channels(outputs, df)

    def dense_kernel(self):
        """The equivalent dense kernel `(kh, kw, C_in, filters)`.

        Returns:
            A float32 tensor `K` such that the layer (without bias and
            activation) equals `keras.ops.conv(x, K, strides, padding,
            dilation_rate)`.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        return self._to_float32(_core.gather_from_parts(self._weights(), self._dense_index))

    def _weights(self):
        if self.pointwise_kernel is None:
            return [self.kernel]
        return [self.kernel, self.pointwise_kernel]

    def inference_form(self):
        """The layer as one grouped `k x k` conv plus one `1 x 1` conv, for export.

        With `part > 1`, over input channels taken in `input_order`:
        `y = grouped_conv(x, kernel, groups=part) + conv1x1(centres(x),
        pointwise_kernel)`, whose output column `t` is the layer's channel
        `output_order[t]` (bias and activation excluded). `centres(x)` is `x`
        at the windows' centre taps (`centre_tap_crop`). With `part == 1` the
        layer is the dense convolution `kernel` and both orders are identity.

        Returns:
            A `HetConvInferenceForm` of float32 NumPy arrays.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        in_order, out_order = self._class_orders(self.input_channels)
        # A blocked side is in class order already.
        if self.blocked_inputs:
            in_order = np.arange(self.input_channels)
        if self.blocked_outputs:
            out_order = np.arange(self.filters)
        pointwise = None
        if self.part > 1:
            pointwise = self._numpy(self._pointwise_class_kernel())
        return HetConvInferenceForm(
            groups=self.part,
            input_order=in_order,
            output_order=out_order,
            kernel=self._numpy(self.kernel),
            pointwise_kernel=pointwise,
            bias=self._numpy(self.bias),
        )

    def _class_orders(self, c_in):
        # Residue-class order: position r*cg + u holds channel r + part*u (likewise outputs).
        part, cg, ng = self.part, c_in // self.part, self.filters // self.part
        in_order = np.array([r + part * u for r in range(part) for u in range(cg)])
        out_order = np.array([r + part * t for r in range(part) for t in range(ng)])
        return in_order, out_order

    def _macs_for(self, input_channels, output_spatial, input_shape):
        kh, kw = self.kernel_size
        n, p = self.filters, self.part
        per_pixel = kh * kw * input_channels * n // p + input_channels * n * (p - 1) // p
        return output_spatial[0] * output_spatial[1] * per_pixel

    def get_config(self):
        config = super().get_config()
        config["part"] = self.part
        config["execution"] = self.execution
        config["blocked_inputs"] = self.blocked_inputs
        config["blocked_outputs"] = self.blocked_outputs
        return config


def _pointwise_class_table(compact, part, cg, ng):
    """HetConv's compact 1x1 weights as a `(part, cg, part, ng)` table in class order, zeros on k x k positions.

    Entry `(s, u, r, t)` is the weight of input channel `part * u + s` in
    filter `part * t + r`. Compact row `u * (part - 1) + s'` of that filter
    is input `part * u + s` with `s = s' + (s' >= r)` (class `r` skipped), so
    the table is the compact one (transposed to class order) padded by a
    zero row of `s` at the end (for `s < r`) or at the front (for `s > r`),
    each masked to its `(s, r)` and added.
    Built with pads and broadcast 0/1 masks rather than a gather: torch's
    index gather and its scatter gradient cost several times these
    element-wise passes (a training step of a 7x7x512 layer at batch 8:
    21.5 -> 16.7 ms); and rather than selects: TensorFlow's broadcasting
    SelectV2 took 1.3 ms of op time for the 512x512 kernel, and the layer's
    forward at batch 8 went 6.6 -> 5.7 ms (7x7x512), 5.9 -> 5.4 ms
    (14x14x256) and 7.6 -> 6.3 ms (28x28x128) with the masks.
    """
    w = ops.transpose(ops.reshape(compact, (cg, part - 1, ng, part)), (1, 0, 3, 2))  # (s', u, r, t)
    below = ops.pad(w, ((0, 1), (0, 0), (0, 0), (0, 0)))
    above = ops.pad(w, ((1, 0), (0, 0), (0, 0), (0, 0)))
    s = np.arange(part).reshape(part, 1, 1, 1)
    r = np.arange(part).reshape(1, 1, part, 1)
    below_mask = ops.convert_to_tensor(s < r, dtype=w.dtype)
    above_mask = ops.convert_to_tensor(s > r, dtype=w.dtype)
    return below * below_mask + above * above_mask

"""CompConv: compact convolution by divide and conquer (Zhang, Xu & Shen, CVPRW 2021)."""

import dataclasses

import numpy as np

import keras

from keras_effconv import _validation
from keras_effconv.layers import _core
from keras_effconv.layers.base import EfficientConv2D

MAX_AUTO_DEPTH = 3


def auto_depth(input_channels, c0):
    """The paper's adaptive recursion depth, capped at 3 as in the paper.

    `d = clip(floor(log2(max(1, C_in / c0))) + 1, 1, 3)`.
    """
    ratio = max(1.0, input_channels / c0)
    return int(min(max(_core.log2_floor(ratio) + 1, 1), MAX_AUTO_DEPTH))


def primary_channels(filters, depth):
    """`C_prim = ceil(C_out / (2 (2^d - 1)))` (paper, Eq. for C_prim)."""
    return _core.ceil_div(filters, 2 * (2**depth - 1))


def _last_part_widths(filters, depth):
    """Kept widths of `Q_d` and of the tailing part after surplus removal."""
    c_prim = primary_channels(filters, depth)
    half = 2 ** (depth - 1) * c_prim
    surplus = 2 * (2**depth - 1) * c_prim - filters
    return half - max(surplus - half, 0), max(half - surplus, 0)


def riffle_order(channels):
    """Output position `2t + h` takes concatenation channel `h * ceil(C/2) + t`."""
    half = _core.ceil_div(channels, 2)
    return [h * half + t for t in range(half) for h in range(2) if h * half + t < channels]


@dataclasses.dataclass(frozen=True)
class CompConvInferenceForm:
    """`CompConv2D.inference_form()`: float32 NumPy arrays.

    Attributes:
        kernels: `[Q_1 kernel, Q_2 kernel, ...]`, each `(kh, kw, in, out)`.
        identity_channels: per `X_i`, the input channels copied into it.
        tailing_kernel: `(kh, kw, in, out)` or None.
        output_order: `(filters,)`: output channel `j` is concatenation
            channel `output_order[j]`.
        bias: `(filters,)` or None.
    """

    kernels: list
    identity_channels: list
    tailing_kernel: object
    output_order: np.ndarray
    bias: object


@keras.saving.register_keras_serializable(package="keras_effconv")
class CompConv2D(EfficientConv2D):
    """Compact convolution (CompConv, Zhang, Xu & Shen, CVPRW 2021).

    Divide and conquer, `X = X_A (+) W X_B` (`(+)` = channel concatenation),
    unrolled to depth `d` with `C_prim = ceil(filters / (2 (2^d - 1)))`:

    - `Q_1 = conv(x)`: `C_in -> C_prim` channels, with the layer's strides,
      padding and dilation (the only convolution that sees the input).
    - for `i = 1 .. d-1`: `X_i = I_i (+) Q_i` and `Q_{i+1} = conv(X_i)`
      (`2^i C_prim -> 2^i C_prim`), where the identity part `I_i`
      (`2^(i-1) C_prim` channels) is a copy of input channels.
    - the tailing channels `T = conv(Q_d)` (`2^(d-1) C_prim` channels), the
      largest `X_A` part, are computed from `Q_d` rather than copied.
    - output `= shuffle(X_1 (+) ... (+) X_(d-1) (+) Q_d (+) T)`, i.e.
      `sum_{i=1..d} 2^i C_prim` channels; the surplus over `filters` is
      removed from the end (the tailing part) and never computed.

    Identity rule (the paper leaves it open): `I_1, I_2, ...` copy
    consecutive input channels starting at channel 0 (`I_i` starts at
    `(2^(i-1) - 1) C_prim`), wrapping around modulo `C_in`; with strides or
    `"valid"` padding they are sampled at the centre tap of each window of the
    first convolution. Inner convolutions use stride 1 and `"same"` padding.
    The shuffle interleaves the two halves of the concatenation (ShuffleNet
    shuffle with 2 groups; see `riffle_order`).

    MACs (paper): `H W k^2 (C_in C_prim + sum_{i=1..d-1} (2^i C_prim)^2 +
    (2^(d-1) C_prim)^2)`, available as `paper_macs()`. `compute_macs` returns
    what the layer executes, which equals the paper's count when
    `2 (2^d - 1)` divides `filters` and is smaller by the MACs of the removed
    surplus channels otherwise.

    Args:
        filters: int, output channels.
        kernel_size, strides, padding, data_format, dilation_rate, activation,
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D` (kernel arguments apply to
            every convolution of the module).
        depth: `"auto"` (the paper's rule, `auto_depth`) or a positive int `d`.
        c0: int, the paper's `C_0` for `depth="auto"` (default 128).

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H', W', filters)`.

    Raises:
        ValueError: for non-positive sizes, an unknown `depth`, a `filters`
            too small for the depth, unknown `padding`/`data_format`, or a
            non rank-4 input.

    Example:

    >>> layer = CompConv2D(64, 3, depth=2)
    >>> tuple(layer(keras.ops.ones((1, 8, 8, 32))).shape)
    (1, 8, 8, 64)
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
        depth="auto",
        c0=128,
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
        depth = _validation.check_int(depth, "depth", also=("auto",))
        self.depth = depth
        self.c0 = _validation.check_positive_int(c0, "c0")
        if depth != "auto":
            self._plan(depth)

    def _plan(self, depth):
        """Channel bookkeeping for depth `d`; validates `filters`."""
        c_prim = primary_channels(self.filters, depth)
        q_width = [2 ** (i - 1) * c_prim for i in range(1, depth + 1)]
        last_keep, tail_keep = _last_part_widths(self.filters, depth)
        if last_keep < 1:
            smallest = next(
                f for f in range(self.filters + 1, 1 << 20) if _last_part_widths(f, depth)[0] >= 1
            )
            raise _validation.invalid_value(
                "filters",
                f"expected filters >= {smallest} for depth={depth} (C_prim={c_prim}), or a smaller depth",
                received=f"filters={self.filters}, depth={depth}",
            )
        q_width[-1] = last_keep
        return c_prim, q_width, tail_keep

    def _build_kernels(self, input_channels):
        self._resolve_plan(input_channels)
        depth = self.resolved_depth
        kh, kw = self.kernel_size
        c_prim = self.c_prim
        self.recursive_kernels = []
        fan_in = input_channels
        for i, width in enumerate(self._q_width):
            name = "primary_kernel" if i == 0 else f"recursive_kernel_{i + 1}"
            self.recursive_kernels.append(self._add_kernel(name, (kh, kw, fan_in, width)))
            fan_in = 2 ** (i + 1) * c_prim
        self.tailing_kernel = None
        if self._tail_width:
            self.tailing_kernel = self._add_kernel(
                "tailing_kernel", (kh, kw, self._q_width[-1], self._tail_width)
            )
        # Identity channels I_1..I_(d-1), consecutive from 0, modulo C_in.
        self._identity_channels = []
        start = 0
        for i in range(1, depth):
            width = 2 ** (i - 1) * c_prim
            self._identity_channels.append(
                [(start + t) % input_channels for t in range(width)]
            )
            start += width
        self._order = riffle_order(self.filters)

    def _convolve(self, inputs):
        df = self.data_format
        inner = dict(strides=1, padding="same", dilation_rate=self.dilation_rate, data_format=df)
        parts = []
        q = _core.conv(inputs, self.recursive_kernels[0], **self._conv_kwargs())
        for i, channels in enumerate(self._identity_channels):
            identity = self._identity(inputs, channels)
            x_i = _core.concat_channels([identity, q], df)
            parts.append(x_i)
            q = _core.conv(x_i, self.recursive_kernels[i + 1], **inner)
        parts.append(q)
        if self.tailing_kernel is not None:
            parts.append(_core.conv(q, self.tailing_kernel, **inner))
        y = _core.concat_channels(parts, df)
        if self.filters % 2 == 0:
            return _core.shuffle_channels(y, 2, df)
        return _core.take_channels(y, self._order, df)

    def _identity(self, inputs, channels):
        df = self.data_format
        if channels[-1] - channels[0] == len(channels) - 1:
            x = _core.slice_channels(inputs, channels[0], channels[-1] + 1, df)
        else:
            x = _core.take_channels(inputs, channels, df)
        return _core.sample_window_centres(
            x, self.kernel_size, self.strides, self.padding, self.dilation_rate, df
        )

    def inference_form(self):
        """The layer's convolutions, identity channels and output order, for export.

        `q = conv(x, kernels[0])` with the layer's geometry; for each `i`,
        `x_i = centres(x)[..., identity_channels[i]] (+) q` and
        `q = conv(x_i, kernels[i + 1])` (stride 1, "same"); the concatenation
        `x_1 (+) ... (+) q (+) conv(q, tailing_kernel)` taken in
        `output_order` is the output (bias and activation excluded).
        `centres(x)` is `x` at the first convolution's window centres
        (`centre_tap_crop`).

        Returns:
            A `CompConvInferenceForm` of float32 NumPy arrays.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        return CompConvInferenceForm(
            kernels=[self._numpy(k) for k in self.recursive_kernels],
            identity_channels=[list(c) for c in self._identity_channels],
            tailing_kernel=self._numpy(self.tailing_kernel),
            output_order=np.asarray(self._order),
            bias=self._numpy(self.bias),
        )

    def _macs_for(self, input_channels, output_spatial, input_shape):
        self._ensure_plan(input_shape)  # depth "auto" is resolved from the input channels
        kh, kw = self.kernel_size
        macs = input_channels * self._q_width[0]
        for i in range(1, len(self._q_width)):
            macs += 2**i * self.c_prim * self._q_width[i]
        macs += self._q_width[-1] * self._tail_width
        return output_spatial[0] * output_spatial[1] * kh * kw * macs

    def paper_macs(self, input_shape):
        """The paper's MAC formula for ONE sample (ignores surplus removal).

        Args:
            input_shape: input shape with or without batch dimension.

        Returns:
            int, `H W k^2 (C_in C_prim + sum_{i=1..d-1} (2^i C_prim)^2 +
            (2^(d-1) C_prim)^2)`.
        """
        self._ensure_plan(input_shape)
        input_shape = _core.batched_shape(input_shape)
        c_in = _validation.check_input_shape(self, input_shape)
        out = _core.spatial_dims(self.compute_output_shape(input_shape), self.data_format)
        kh, kw = self.kernel_size
        d, cp = self.resolved_depth, self.c_prim
        inner = sum((2**i * cp) ** 2 for i in range(1, d)) + (2 ** (d - 1) * cp) ** 2
        return out[0] * out[1] * kh * kw * (c_in * cp + inner)

    def _ensure_plan(self, input_shape):
        if not self.built:
            c_in = _validation.check_input_shape(self, _core.batched_shape(input_shape))
            self._resolve_plan(c_in)

    def _resolve_plan(self, input_channels):
        depth = self.depth
        if depth == "auto":
            depth = auto_depth(input_channels, self.c0)
        self.resolved_depth = depth
        self.c_prim, self._q_width, self._tail_width = self._plan(depth)

    def get_config(self):
        config = super().get_config()
        config.update({"depth": self.depth, "c0": self.c0})
        return config

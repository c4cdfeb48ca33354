"""IGCV1: interleaved group convolutions (Zhang et al., ICCV 2017)."""

import dataclasses

import numpy as np

import keras
from keras import ops

from keras_effconv import _validation
from keras_effconv.layers import _core
from keras_effconv.layers.base import EfficientConv2D


@dataclasses.dataclass(frozen=True)
class IGCInferenceForm:
    """`InterleavedGroupConv2D.inference_form()`: float32 NumPy arrays.

    Attributes:
        groups: `L`, the primary convolution's groups.
        primary_kernel: `(kh, kw, C_in / L, L * M)` grouped kernel.
        secondary_kernel: `(1, 1, L * M, filters)` dense kernel, interleaves
            folded in.
        bias: `(filters,)` or None.
    """

    groups: int
    primary_kernel: np.ndarray
    secondary_kernel: np.ndarray
    bias: object


IGC_FORMS = ("folded", "contraction", "dense")


def choose_igc_execution(primary_groups, input_channels, training, backend=None, xla=None):
    """The form `InterleavedGroupConv2D(execution="auto")` runs for one call: a measured rule.

    Measured with `L = 4` over ResNet-20 (28x28x16, 14x14x32, 7x7x64 at batch
    128) and ResNet-50 (56x56x64 ... 7x7x512 at batch 8) shapes, speed against
    Conv2D (fwd / fwd+bwd): with 4 input channels per primary group every
    exact form runs 0.29-0.92x and the `"dense"` composed kernel 0.86-1.0x;
    JAX runs the `"contraction"` form fastest from 8 channels per group on in
    training (1.42-4.1x) and from 16 in inference (with 8 it measured
    0.63-0.99x run to run, dense 0.99x); TensorFlow and torch run `"folded"`
    (a dense `1 x 1` with the interleave folded in) fastest up to 256 input
    channels and
    `"contraction"` at 512 (1.99x / 2.36x against 1.44x / 1.78x); torch with 8
    channels per group runs dense fastest (0.87x / 0.83x). TensorFlow under
    XLA (`jit_compile=True`) runs the folded form's grouped convolution per
    group: with 8 channels per group it measured 0.56x / 0.77x, so dense
    takes over below 16 there (dense: 1.15x / 1.10x at 4 per group).

    Args:
        primary_groups: the layer's `L`.
        input_channels: input channels, or None when unknown.
        training: whether the call is a training step.
        backend: the Keras backend, default the current one.
        xla: TensorFlow only: whether the call is traced under
            `jit_compile=True` (its own threshold); default: detected.

    Returns:
        `"folded"`, `"contraction"` or `"dense"`.
    """
    backend = backend or keras.backend.backend()
    if input_channels is None:
        return "contraction" if backend == "jax" else "folded"
    if xla is None:
        xla = _core.in_tensorflow_xla()
    per_group = input_channels // primary_groups
    dense_below = 8
    if backend == "torch" or (backend == "jax" and not training) or (backend == "tensorflow" and xla):
        dense_below = 16
    if per_group < dense_below:
        return "dense"
    if backend == "jax" or input_channels >= 512:
        return "contraction"
    return "folded"


@keras.saving.register_keras_serializable(package="keras_effconv")
class InterleavedGroupConv2D(EfficientConv2D):
    """Interleaved group convolution block (IGCV1, Zhang et al., ICCV 2017).

    Primary: a `k x k` grouped convolution with `L = primary_groups`
    partitions of `M = secondary_groups` output channels each (width
    `G = L * M`). Its output channel `a * M + j` (member `j` of partition
    `a`) is interleaved to position `j * L + a`. Secondary: a `1 x 1` grouped
    convolution with `M` partitions of `L` channels (each partition sees the
    `j`-th channel of every primary partition), whose output position
    `j * F + f` (`F = filters / M`) is mapped back by the inverse interleave
    to channel `f * M + j`. No normalisation or activation sits between the
    two group convolutions, so the block is one linear map, available as
    `dense_kernel()`. `activation` (default `None`) is applied at the end.

    With `C_in = filters = G`: params `G^2 (k^2 / L + 1 / M)` (+ bias), MACs
    per output pixel the same. `L = 1` (regular convolution + channel-wise
    1x1) and `M = 1` (Xception-like: depthwise-style primary + dense 1x1) are
    the paper's degenerate cases.

    The permutations are never materialised. Three exact forms
    (`execution`): `"folded"` (the secondary convolution as a dense `1 x 1`
    kernel with the interleave folded in; it multiplies
    `G * filters * (1 - 1/M)` structural zeros per pixel), `"contraction"`
    (the secondary as an exact batched contraction) and `"dense"` (one
    convolution with the composed kernel: because the secondary groups pair
    each primary output with its own weights, the composition is a broadcast
    product of the two kernels, no sum, and gradients reach both). `"auto"`
    picks per call by the measured rule `choose_igc_execution`;
    `execution_form(input_shape, training)` says which one runs.
    `compute_macs` counts the operator's MACs, whichever form runs.

    Args:
        filters: int, output channels; must be divisible by `secondary_groups`.
        kernel_size: int or tuple of 2 ints, primary kernel size.
        strides, padding, data_format, dilation_rate: as `keras.layers.Conv2D`;
            they apply to the primary convolution.
        activation: activation applied to the output, or `None`.
        use_bias: bool, whether to add a bias vector to the output.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`; kernel ones apply to
            both group convolutions.
        primary_groups: int `L`, must divide the input channels.
        secondary_groups: int `M`, or `None` for `filters // primary_groups`
            (so that `G = filters`); must divide `filters`.
        execution: `"auto"`, `"folded"`, `"contraction"` or `"dense"`.

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H', W', filters)`.

    Raises:
        ValueError: for non-positive sizes, groups that do not divide the
            channel counts, unknown `padding`/`data_format`/`execution`, bad
            input rank.

    Example:

    >>> layer = InterleavedGroupConv2D(64, 3, primary_groups=4, secondary_groups=16)
    >>> y = layer(keras.ops.ones((1, 16, 16, 64)))
    >>> layer.count_params() == 9 * 16 * 64 + 4 * 64 + 64  # primary + secondary + bias
    True
    """

    EXECUTION_FORMS = IGC_FORMS

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
        primary_groups=4,
        secondary_groups=None,
        execution="auto",
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
        self.primary_groups = _validation.check_positive_int(primary_groups, "primary_groups")
        self.secondary_groups = _validation.check_positive_int(
            secondary_groups, "secondary_groups", allow_none=True
        )
        if self.secondary_groups is None:
            _validation.check_divides(
                self.primary_groups, "primary_groups", self.filters, "filters", hint="with secondary_groups=None"
            )
            self._m = self.filters // self.primary_groups
        else:
            self._m = self.secondary_groups
        _validation.check_divides(self._m, "secondary_groups", self.filters, "filters")
        self.execution = self._check_execution(execution)

    @property
    def width(self):
        """G = L * M, the number of channels between the two group convs."""
        return self.primary_groups * self._m

    def _build_kernels(self, input_channels):
        l, m = self.primary_groups, self._m
        _validation.check_divides(l, "primary_groups", input_channels, "input channels")
        kh, kw = self.kernel_size
        self.primary_kernel = self._add_kernel(
            "primary_kernel", (kh, kw, input_channels // l, l * m)
        )
        self.secondary_kernel = self._add_kernel(
            "secondary_kernel", (1, 1, l, self.filters)
        )

    def _folded_secondary(self):
        """Secondary with both interleaves folded: `S[a*M + j, f*M + j] = W[a, j*F + f]`, zeros elsewhere.

        `W` times the `M x M` identity, broadcast, rather than a gather: on
        torch the gather's scatter gradient made a training step of a
        7x7x512 layer at batch 8 take 18.1 ms against 15.4 ms; and rather
        than a broadcast select, which TensorFlow runs several times slower
        than a broadcast multiply.
        """
        l, m, n = self.primary_groups, self._m, self.filters
        f_per = n // m
        same_j = np.eye(m, dtype=bool).reshape(1, m, 1, m)

        def fold(kernels):
            w = ops.reshape(kernels[0], (l, m, f_per, 1))
            folded = w * ops.convert_to_tensor(same_j, dtype=w.dtype)
            return ops.reshape(folded, (1, 1, l * m, n))

        return _core.reuse_while_unchanged(self, [self.secondary_kernel], fold, name="folded_secondary")

    def _auto_execution(self, input_shape, training):
        return choose_igc_execution(self.primary_groups, getattr(self, "input_channels", None), training)

    def _composed_kernel(self):
        return _core.reuse_while_unchanged(
            self, [self.primary_kernel, self.secondary_kernel], lambda kernels: self._compose(*kernels)
        )

    def _compose(self, primary, secondary):
        # K[h, w, a*cg + u, f*M + j] = P[h, w, u, a*M + j] * W[a, j*F + f]: the secondary
        # convolution's groups make the composition a broadcast product, no sum.
        l, m, n = self.primary_groups, self._m, self.filters
        kh, kw = self.kernel_size
        cg, f_per = self.input_channels // l, n // m
        primary = ops.reshape(primary, (kh, kw, cg, l, 1, m))
        primary = ops.transpose(primary, (0, 1, 3, 2, 4, 5))  # (kh, kw, L, cg, 1, M)
        secondary = ops.reshape(secondary, (l, m, f_per))
        secondary = ops.reshape(ops.transpose(secondary, (0, 2, 1)), (1, 1, l, 1, f_per, m))
        return ops.reshape(primary * secondary, (kh, kw, l * cg, n))

    def _convolve(self, inputs, form):
        df = self.data_format
        if form == "dense":
            return _core.conv(inputs, self._composed_kernel(), **self._conv_kwargs())
        y = _core.grouped_conv(
            inputs, self.primary_kernel, self.primary_groups, **self._conv_kwargs()
        )
        if form == "contraction":
            return self._secondary_contraction(y)
        secondary = self._folded_secondary()
        return _core.conv(y, secondary, data_format=df)

    def _secondary_contraction(self, y):
        # Exact: out[..., f*M + j] = sum_a y[..., a*M + j] * W[a, j*F + f].
        l, m, n = self.primary_groups, self._m, self.filters
        w = ops.reshape(self.secondary_kernel, (l, m, n // m))
        if self.data_format == "channels_last":
            shape = ops.shape(y)
            y = ops.reshape(y, (-1, shape[1], shape[2], l, m))
            out = ops.einsum("bhwaj,ajf->bhwfj", y, w)
            return ops.reshape(out, (-1, shape[1], shape[2], n))
        shape = ops.shape(y)
        y = ops.reshape(y, (-1, l, m, shape[2], shape[3]))
        out = ops.einsum("bajhw,ajf->bfjhw", y, w)
        return ops.reshape(out, (-1, n, shape[2], shape[3]))

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
        return self._to_float32(self._composed_kernel())

    def inference_form(self):
        """The layer as a grouped primary conv and one dense `1 x 1` conv, for export.

        `y = conv1x1(grouped_conv(x, primary_kernel, groups=primary_groups),
        secondary_kernel)` (bias and activation excluded), where
        `secondary_kernel` is the grouped secondary convolution with both
        interleaves folded in (zeros outside its groups).

        Returns:
            An `IGCInferenceForm` of float32 NumPy arrays.

        Raises:
            ValueError: if the layer is not built.
        """
        self._require_built()
        return IGCInferenceForm(
            groups=self.primary_groups,
            primary_kernel=self._numpy(self.primary_kernel),
            secondary_kernel=self._numpy(self._folded_secondary()),
            bias=self._numpy(self.bias),
        )

    def _macs_for(self, input_channels, output_spatial, input_shape):
        kh, kw = self.kernel_size
        l, m = self.primary_groups, self._m
        per_pixel = kh * kw * (input_channels // l) * l * m + l * self.filters
        return output_spatial[0] * output_spatial[1] * per_pixel

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "primary_groups": self.primary_groups,
                "secondary_groups": self.secondary_groups,
                "execution": self.execution,
            }
        )
        return config

"""Channel attention blocks: squeeze-and-excitation and ECA."""

import math

import keras
from keras import activations
from keras import initializers
from keras import ops

from keras_effconv import _validation
from keras_effconv.layers import _core


class _ChannelAttention(keras.layers.Layer):
    """Shared plumbing: global average pool -> gate -> rescale the input."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _validation.normalize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _pooled(self, inputs):
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        return ops.mean(inputs, axis=axes)

    def _rescale(self, inputs, gate):
        if self.data_format == "channels_last":
            return inputs * gate[:, None, None, :]
        return inputs * gate[:, :, None, None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


@keras.saving.register_keras_serializable(package="keras_effconv")
class SqueezeExcite(_ChannelAttention):
    """Squeeze-and-excitation (Hu et al., CVPR 2018).

    `x * gate(W2 act(W1 mean_hw(x) + b1) + b2)` with a bottleneck of
    `max(1, C // reduction)` units. HetConv's experiments use `reduction=8`.

    Args:
        reduction: int, channel reduction ratio of the bottleneck (default 16).
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        activation: bottleneck activation (default `"relu"`).
        gate_activation: gate activation (default `"sigmoid"`).
        kernel_initializer, bias_initializer: for both dense maps.

    Returns:
        A layer returning a tensor of the input's shape.

    Raises:
        ValueError: for a non-positive `reduction`, unknown `data_format`,
            or an input that is not rank 4 with known channels.

    Example:

    >>> se = SqueezeExcite(reduction=8)
    >>> tuple(se(keras.ops.ones((2, 7, 7, 64))).shape)
    (2, 7, 7, 64)
    """

    def __init__(
        self,
        reduction=16,
        data_format=None,
        activation="relu",
        gate_activation="sigmoid",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        self.reduction = _validation.check_positive_int(reduction, "reduction")
        self.activation = activations.get(activation)
        self.gate_activation = activations.get(gate_activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = _validation.check_input_shape(self, input_shape)
        hidden = max(1, channels // self.reduction)
        self.reduce_kernel = self.add_weight(
            name="reduce_kernel", shape=(channels, hidden), initializer=self.kernel_initializer
        )
        self.reduce_bias = self.add_weight(
            name="reduce_bias", shape=(hidden,), initializer=self.bias_initializer
        )
        self.expand_kernel = self.add_weight(
            name="expand_kernel", shape=(hidden, channels), initializer=self.kernel_initializer
        )
        self.expand_bias = self.add_weight(
            name="expand_bias", shape=(channels,), initializer=self.bias_initializer
        )

    def call(self, inputs):
        s = self._pooled(inputs)
        s = self.activation(ops.matmul(s, self.reduce_kernel) + self.reduce_bias)
        gate = self.gate_activation(ops.matmul(s, self.expand_kernel) + self.expand_bias)
        return self._rescale(inputs, gate)

    def compute_macs(self, input_shape):
        """MACs of the two dense maps for ONE sample (pooling and rescale excluded).

        Args:
            input_shape: input shape with or without the batch dimension.

        Returns:
            int, `2 * C * max(1, C // reduction)`.
        """
        channels = _validation.check_input_shape(self, _core.batched_shape(input_shape))
        return 2 * channels * max(1, channels // self.reduction)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "activation": activations.serialize(self.activation),
                "gate_activation": activations.serialize(self.gate_activation),
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
            }
        )
        return config


def eca_kernel_size(channels, gamma=2, b=1):
    """ECA's adaptive kernel size `k = odd(|log2(C) / gamma + b / gamma|)`.

    `odd(t)` is `t` truncated to an integer and bumped to the next odd value,
    as in the authors' code.
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@keras.saving.register_keras_serializable(package="keras_effconv")
class EfficientChannelAttention(_ChannelAttention):
    """Efficient channel attention (ECA-Net, Wang et al., CVPR 2020).

    `x * sigmoid(conv1d_k(mean_hw(x)))`: a 1-D convolution across channels
    (zero padded, no bias) with the adaptive `k = eca_kernel_size(C)` unless
    `kernel_size` is given.

    Args:
        kernel_size: None (adaptive) or an odd positive int.
        gamma: float, ECA's gamma (default 2).
        b: float, ECA's b (default 1).
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        kernel_initializer: initializer of the 1-D kernel.

    Returns:
        A layer returning a tensor of the input's shape.

    Raises:
        ValueError: for an even or non-positive `kernel_size`, a non-positive
            `gamma`, unknown `data_format`, or a bad input shape.

    Example:

    >>> eca = EfficientChannelAttention()
    >>> y = eca(keras.ops.ones((1, 4, 4, 256)))
    >>> eca.resolved_kernel_size
    5
    """

    def __init__(
        self,
        kernel_size=None,
        gamma=2,
        b=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(data_format=data_format, **kwargs)
        kernel_size = _validation.check_positive_int(kernel_size, "kernel_size", allow_none=True)
        if kernel_size is not None and kernel_size % 2 == 0:
            raise _validation.invalid_value(
                "kernel_size", "expected None or an odd positive integer", kernel_size
            )
        _validation.check_number(gamma, "gamma", low=0, low_inclusive=False)
        self.kernel_size = kernel_size
        # Python numbers are kept as given (the config round-trips them); NumPy
        # scalars become floats so that the config stays JSON-serializable.
        self.gamma = gamma if isinstance(gamma, (int, float)) else float(gamma)
        self.b = b
        self.kernel_initializer = initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = _validation.check_input_shape(self, input_shape)
        self.resolved_kernel_size = self.kernel_size or eca_kernel_size(
            channels, self.gamma, self.b
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.resolved_kernel_size, 1, 1),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs):
        s = self._pooled(inputs)[:, :, None]
        s = ops.conv(s, self.kernel, padding="same", data_format="channels_last")
        return self._rescale(inputs, ops.sigmoid(s[:, :, 0]))

    def compute_macs(self, input_shape):
        """MACs of the channel convolution for ONE sample (`C * k`).

        Args:
            input_shape: input shape with or without the batch dimension.

        Returns:
            int.
        """
        channels = _validation.check_input_shape(self, _core.batched_shape(input_shape))
        k = self.kernel_size or eca_kernel_size(channels, self.gamma, self.b)
        return channels * k

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "gamma": self.gamma,
                "b": self.b,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
            }
        )
        return config

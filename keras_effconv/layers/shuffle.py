"""Channel shuffle (ShuffleNet, Zhang et al., CVPR 2018) in a 4-D formulation."""

import numpy as np

import keras

from keras_effconv import _validation
from keras_effconv.layers import _core


@keras.saving.register_keras_serializable(package="keras_effconv")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle: output channel `j * groups + g` is input `g * (C / groups) + j`.

    Written with rank-4 tensors only (height and width are merged before the
    transpose), because mobile GPU delegates do not accelerate the usual 5-D
    reshape/transpose.

    Args:
        groups: int, number of groups; must divide the channel count.
        data_format: `"channels_last"`, `"channels_first"` or `None`.

    Returns:
        A layer returning a tensor of the input's shape.

    Raises:
        ValueError: if `groups` is not a positive integer or does not divide
            the channels, `data_format` is unknown, or the input is not rank 4.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(6, dtype="float32"), (1, 1, 1, 6))
    >>> keras.ops.convert_to_numpy(ChannelShuffle(2)(x)).ravel().tolist()
    [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """

    def __init__(self, groups, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.groups = _validation.check_positive_int(groups, "groups")
        self.data_format = _validation.normalize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = _validation.check_input_shape(self, input_shape)
        _validation.check_divides(self.groups, "groups", channels, "channels")

    def call(self, inputs):
        return _core.shuffle_channels(inputs, self.groups, self.data_format)

    def channel_order(self, channels):
        """The permutation this layer applies: output channel `j` is input `order[j]`.

        Args:
            channels: the number of channels.

        Returns:
            A NumPy int array of length `channels`.
        """
        per = channels // self.groups
        return np.array([g * per + j for j in range(per) for g in range(self.groups)])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_macs(self, input_shape):
        """A permutation: 0 multiply-accumulates.

        Args:
            input_shape: the input shape (unused).

        Returns:
            int, always 0.
        """
        return 0

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "data_format": self.data_format})
        return config


@keras.saving.register_keras_serializable(package="keras_effconv")
class ChannelSplit(keras.layers.Layer):
    """Splits the channels into `num_splits` equal contiguous parts (ShuffleNet V2's channel split).

    Part `i` holds channels `[i * C / num_splits, (i + 1) * C / num_splits)`.
    A layer rather than `x[..., :c]` on a Keras tensor, so that the graph
    holds no anonymous operations: profiling, decomposition and the LiteRT
    export see one named layer with a lowering rule (slices, or the 4-D
    shuffle when it follows a `ChannelShuffle` whose permutation the export
    carried lazily).

    Args:
        num_splits: int, the number of parts; must divide the channel count.
        data_format: `"channels_last"`, `"channels_first"` or `None`.

    Returns:
        A layer returning a list of `num_splits` tensors.

    Raises:
        ValueError: if `num_splits` is not a positive integer or does not
            divide the channels, `data_format` is unknown, or the input is not
            rank 4.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(4, dtype="float32"), (1, 1, 1, 4))
    >>> [keras.ops.convert_to_numpy(p).ravel().tolist() for p in ChannelSplit(2)(x)]
    [[0.0, 1.0], [2.0, 3.0]]
    """

    def __init__(self, num_splits=2, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.num_splits = _validation.check_positive_int(num_splits, "num_splits")
        self.data_format = _validation.normalize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = _validation.check_input_shape(self, input_shape)
        _validation.check_divides(self.num_splits, "num_splits", channels, "channels")

    def channel_ranges(self, channels):
        """The `(start, stop)` channel range of every part.

        Args:
            channels: the number of input channels.

        Returns:
            A list of `num_splits` `(start, stop)` int pairs.
        """
        per = channels // self.num_splits
        return [(i * per, (i + 1) * per) for i in range(self.num_splits)]

    def call(self, inputs):
        axis = _core.channel_axis(self.data_format)
        return [
            _core.slice_channels(inputs, start, stop, self.data_format)
            for start, stop in self.channel_ranges(inputs.shape[axis])
        ]

    def compute_output_shape(self, input_shape):
        axis = 3 if self.data_format == "channels_last" else 1
        shape = list(input_shape)
        shape[axis] = None if shape[axis] is None else shape[axis] // self.num_splits
        return [tuple(shape) for _ in range(self.num_splits)]

    def compute_macs(self, input_shape):
        """Slices: 0 multiply-accumulates.

        Args:
            input_shape: the input shape (unused).

        Returns:
            int, always 0.
        """
        return 0

    def get_config(self):
        config = super().get_config()
        config.update({"num_splits": self.num_splits, "data_format": self.data_format})
        return config

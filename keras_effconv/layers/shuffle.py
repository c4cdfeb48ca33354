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

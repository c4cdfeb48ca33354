"""Small inference primitives the rewrite needs and Keras has no layer for.

Both are plain `keras.ops` layers, so the optimized model runs (and saves)
on every backend; the TensorFlow converter turns them into the builtin
`GATHER`/`STRIDED_SLICE` and `DEPTH_TO_SPACE` operators, which mobile GPU
delegates run natively.
"""

import numpy as np

import keras
from keras import ops

from keras_effconv import _validation
from keras_effconv.layers import _core


@keras.saving.register_keras_serializable(package="keras_effconv")
class ChannelGather(keras.layers.Layer):
    """Picks input channels by index: `output[..., i] = input[..., indices[i]]`.

    An order made of at most `MAX_RUNS` ascending contiguous runs (a range,
    a roll of the channel grid) becomes slices and one concatenation
    (`STRIDED_SLICE` + `CONCATENATION` in LiteRT: copies XNNPACK runs, where
    its `GATHER` is a reference kernel 8x slower at 14x14x256); anything else
    a `GATHER` on the last axis. Used for permutations that could not be
    folded into a neighbouring kernel, for channel subsets, and for the
    rolled views of topological projections.

    Args:
        indices: list of ints, the input channel of every output channel.

    Returns:
        A layer mapping `(..., C)` to `(..., len(indices))`.

    Raises:
        ValueError: if `indices` is empty or holds negative entries.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(4, dtype="float32"), (1, 1, 1, 4))
    >>> keras.ops.convert_to_numpy(ChannelGather([3, 1])(x)).ravel().tolist()
    [3.0, 1.0]
    """

    MAX_RUNS = 16

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise _validation.invalid_value(
                "indices", "expected a non-empty list of non-negative channel indices", indices
            )
        self.indices = indices
        runs = _core.channel_runs(indices)
        self._runs = runs if len(runs) <= self.MAX_RUNS else None

    def call(self, inputs):
        if self._runs is not None:
            parts = [inputs[..., start:stop] for start, stop in self._runs]
            return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.take(inputs, np.asarray(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def compute_macs(self, input_shape):
        """A copy: 0 multiply-accumulates."""
        return 0

    def get_config(self):
        config = super().get_config()
        config["indices"] = list(self.indices)
        return config


@keras.saving.register_keras_serializable(package="keras_effconv")
class DepthToSpace(keras.layers.Layer):
    """`keras.ops.depth_to_space` as a layer (channels_last).

    Args:
        block_size: int >= 2.

    Returns:
        A layer mapping `(B, H, W, C * b^2)` to `(B, H * b, W * b, C)`.

    Raises:
        ValueError: if `block_size` is not an integer >= 2.

    Example:

    >>> tuple(DepthToSpace(2)(keras.ops.ones((1, 3, 3, 8))).shape)
    (1, 6, 6, 2)
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = _validation.check_int(block_size, "block_size", minimum=2)

    def call(self, inputs):
        return ops.depth_to_space(inputs, self.block_size, data_format="channels_last")

    def compute_output_shape(self, input_shape):
        b = self.block_size
        batch, h, w, c = input_shape
        return (
            batch,
            None if h is None else h * b,
            None if w is None else w * b,
            c // (b * b),
        )

    def compute_macs(self, input_shape):
        """A copy: 0 multiply-accumulates."""
        return 0

    def get_config(self):
        config = super().get_config()
        config["block_size"] = self.block_size
        return config


@keras.saving.register_keras_serializable(package="keras_effconv")
class SpatialSubsample(keras.layers.Layer):
    """Every `strides`-th row and column, `inputs[:, ::sh, ::sw, :]` (channels_last).

    LiteRT runs it as one STRIDED_SLICE. The rewrite puts it in front of a
    `1 x 1` convolution with stride > 1 on the GPU target, whose GPU delegate
    computes int8 strided `1 x 1` convolutions as if the stride were 1.

    Args:
        strides: int or pair of ints >= 1.

    Returns:
        A layer mapping `(B, H, W, C)` to `(B, ceil(H / sh), ceil(W / sw), C)`.

    Raises:
        ValueError: if `strides` is not a positive int or pair of them.

    Example:

    >>> tuple(SpatialSubsample(2)(keras.ops.ones((1, 5, 4, 3))).shape)
    (1, 3, 2, 3)
    """

    def __init__(self, strides, **kwargs):
        super().__init__(**kwargs)
        self.strides = _validation.normalize_tuple(strides, 2, "strides")

    def call(self, inputs):
        sh, sw = self.strides
        return inputs[:, ::sh, ::sw, :]

    def compute_output_shape(self, input_shape):
        batch, h, w, c = input_shape
        sh, sw = self.strides
        return (batch, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def compute_macs(self, input_shape):
        """A copy: 0 multiply-accumulates."""
        return 0

    def get_config(self):
        config = super().get_config()
        config["strides"] = self.strides
        return config

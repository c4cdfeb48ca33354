"""Channel permutations and the layers the rewrite passes through unchanged.

ChannelShuffle is never executed (its permutation is carried lazily and
absorbed by the next dense kernel); ChannelSplit slices, materializing a
pending shuffle first with the 4-D reshape/transpose (ShuffleNet V2's
shuffle-then-split would otherwise be two GATHERs, a reference kernel on
XNNPACK); ChannelGather materializes its channels;
attention blocks and DepthToSpace are copied as they are (`generic`).
"""

import numpy as np

from keras_effconv.export._layers import ChannelGather
from keras_effconv.export._layers import DepthToSpace
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import ChannelShuffle
from keras_effconv.layers import ChannelSplit
from keras_effconv.layers import EfficientChannelAttention
from keras_effconv.layers import SqueezeExcite


@lowering_rule(ChannelShuffle)
def lower_shuffle(rewriter, call):
    layer, value = call.layer, call.value
    require_channels_last(layer)
    order = layer.channel_order(value.tensor.shape[-1])
    perm = order if value.perm is None else value.perm[order]
    return Value(value.tensor, perm)


def _shuffle_groups(perm):
    """The `groups` of the ChannelShuffle whose order is `perm`, or None."""
    channels = len(perm)
    for groups in range(2, channels):
        if channels % groups == 0 and np.array_equal(ChannelShuffle(groups).channel_order(channels), perm):
            return groups
    return None


@lowering_rule(ChannelSplit)
def lower_split(rewriter, call):
    layer, value = call.layer, call.value
    require_channels_last(layer)
    tensor = value.tensor
    if value.perm is not None:
        groups = _shuffle_groups(value.perm)
        if groups is None:
            tensor = rewriter.materialize(value)
        else:
            shuffle = ChannelShuffle(groups, data_format="channels_last", name=rewriter.name(f"{layer.name}_shuffle"))
            tensor = rewriter.emit(shuffle, tensor)
    return [
        Value(rewriter.emit(ChannelGather(range(start, stop), name=rewriter.name(f"{layer.name}_{i}")), tensor))
        for i, (start, stop) in enumerate(layer.channel_ranges(tensor.shape[-1]))
    ]


@lowering_rule(ChannelGather)
def lower_gather(rewriter, call):
    return Value(rewriter.materialize(call.value, call.layer.indices))


@lowering_rule(SqueezeExcite, EfficientChannelAttention, DepthToSpace)
def copy_layer(rewriter, call):
    """Built from keras.ops only: a clone with the same weights is already mobile-friendly."""
    return rewriter.generic(call)

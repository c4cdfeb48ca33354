"""Channel permutations and the layers the rewrite passes through unchanged.

ChannelShuffle is never executed (its permutation is carried lazily and
absorbed by the next dense kernel); ChannelGather materializes its channels;
attention blocks and DepthToSpace are copied as they are (`generic`).
"""

from keras_effconv.export._layers import ChannelGather
from keras_effconv.export._layers import DepthToSpace
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import ChannelShuffle
from keras_effconv.layers import EfficientChannelAttention
from keras_effconv.layers import SqueezeExcite


@lowering_rule(ChannelShuffle)
def lower_shuffle(rewriter, call):
    layer, value = call.layer, call.value
    require_channels_last(layer)
    order = layer.channel_order(value.tensor.shape[-1])
    perm = order if value.perm is None else value.perm[order]
    return Value(value.tensor, perm)


@lowering_rule(ChannelGather)
def lower_gather(rewriter, call):
    return Value(rewriter.materialize(call.value, call.layer.indices))


@lowering_rule(SqueezeExcite, EfficientChannelAttention, DepthToSpace)
def copy_layer(rewriter, call):
    """Built from keras.ops only: a clone with the same weights is already mobile-friendly."""
    return rewriter.generic(call)

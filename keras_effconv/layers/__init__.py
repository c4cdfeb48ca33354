"""Efficient convolution layers (one module per method)."""

from keras_effconv.layers.attention import EfficientChannelAttention
from keras_effconv.layers.attention import SqueezeExcite
from keras_effconv.layers.compconv import CompConv2D
from keras_effconv.layers.factorized import FactorizedConv2D
from keras_effconv.layers.factorized import SpatialBottleneck
from keras_effconv.layers.factorized import TopologicalProjection
from keras_effconv.layers.hetconv import HetConv2D
from keras_effconv.layers.igc import InterleavedGroupConv2D
from keras_effconv.layers.separable import DepthwiseSeparableConv2D
from keras_effconv.layers.shuffle import ChannelShuffle
from keras_effconv.layers.shuffle import ChannelSplit

__all__ = [
    "ChannelShuffle",
    "ChannelSplit",
    "CompConv2D",
    "DepthwiseSeparableConv2D",
    "EfficientChannelAttention",
    "FactorizedConv2D",
    "HetConv2D",
    "InterleavedGroupConv2D",
    "SpatialBottleneck",
    "SqueezeExcite",
    "TopologicalProjection",
]

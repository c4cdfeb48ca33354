"""Efficient convolution layers (one module per method)."""

from keras_effconv.layers.hetconv import HetConv2D
from keras_effconv.layers.igc import InterleavedGroupConv2D

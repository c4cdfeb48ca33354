"""Multiply-accumulates of one call of a layer, for ONE sample.

Conventions (the papers' and the usual counters'): every tap of a kernel
window counts, also taps that fall on `"same"` padding; bias additions,
activations, normalization (folded into the preceding convolution at
inference), pooling, elementwise and reshaping layers count 0 MACs.
1 MAC = 2 FLOPs.
"""

import math
import re

import keras

# Layers that do no multiply-accumulates under the conventions above.
_ZERO_MAC_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
    keras.layers.Embedding,
)

_CONV_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _channels_and_spatial(shape, data_format):
    shape = tuple(shape)
    if data_format == "channels_first":
        return shape[1], shape[2:]
    return shape[-1], shape[1:-1]


def _prod(values, what, layer):
    if any(v is None for v in values):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}' "
            f"({type(layer).__name__}): its {what} is not known ({tuple(values)}). "
            "Pass `input_shape` with known spatial sizes, e.g. input_shape=(224, 224, 3)."
        )
    return math.prod(values)


def _einsum_macs(layer, output_shape):
    inputs_spec, output_spec = layer.equation.split("->")
    kernel_spec = inputs_spec.split(",")[1]
    contracted = [dim for letter, dim in zip(kernel_spec, layer.kernel.shape) if letter not in output_spec]
    return _prod(output_shape[1:], "output shape", layer) * math.prod(contracted)


def layer_macs(layer, input_shape, output_shape):
    """MACs of one call of `layer`, or None when no rule knows the layer.

    Args:
        layer: a built Keras layer or operation.
        input_shape: shape of its (first) input, batch dimension included.
        output_shape: shape of its (first) output, batch dimension included.

    Returns:
        int, or None for a layer with weights that no rule covers.
    """
    if hasattr(layer, "compute_macs"):
        return int(layer.compute_macs(tuple(input_shape)))
    if isinstance(layer, _ZERO_MAC_LAYERS):
        return 0
    if isinstance(layer, _CONV_TRANSPOSE):
        in_channels, in_spatial = _channels_and_spatial(input_shape, layer.data_format)
        taps = math.prod(layer.kernel_size)
        return _prod(in_spatial, "input spatial size", layer) * taps * in_channels * layer.filters
    if isinstance(layer, _SEPARABLE):
        in_channels, _ = _channels_and_spatial(input_shape, layer.data_format)
        _, out_spatial = _channels_and_spatial(output_shape, layer.data_format)
        pixels = _prod(out_spatial, "output spatial size", layer)
        mid = in_channels * layer.depth_multiplier
        return pixels * (math.prod(layer.kernel_size) * mid + mid * layer.filters)
    if isinstance(layer, _DEPTHWISE):
        in_channels, _ = _channels_and_spatial(input_shape, layer.data_format)
        _, out_spatial = _channels_and_spatial(output_shape, layer.data_format)
        pixels = _prod(out_spatial, "output spatial size", layer)
        return pixels * math.prod(layer.kernel_size) * in_channels * layer.depth_multiplier
    if isinstance(layer, _CONV):
        in_channels, _ = _channels_and_spatial(input_shape, layer.data_format)
        _, out_spatial = _channels_and_spatial(output_shape, layer.data_format)
        pixels = _prod(out_spatial, "output spatial size", layer)
        return pixels * math.prod(layer.kernel_size) * (in_channels // layer.groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        positions = _prod(input_shape[1:-1], "input shape", layer)
        return positions * input_shape[-1] * layer.units
    if isinstance(layer, keras.layers.EinsumDense) and re.fullmatch(r"[^,]+,[^,]+->.+", layer.equation):
        return _einsum_macs(layer, output_shape)
    if not getattr(layer, "weights", None):
        return 0
    return None

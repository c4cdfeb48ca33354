"""SIC layers: depthwise convolutions, dense `1 x 1` projections, and the spatial bottleneck's
per-channel transposed convolution as copy-scale-DEPTH_TO_SPACE (no TRANSPOSE_CONV)."""

import numpy as np

import keras

from keras_effconv.export._layers import DepthToSpace
from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import numpy_float32
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import SpatialBottleneck
from keras_effconv.layers import TopologicalProjection


def _projection(rewriter, kernel, bias, value, name):
    """A `1 x 1` projection as one dense CONV_2D reading `value` in its held order."""
    kernel = rows_for_actual(kernel, value.perm, axis=2)
    bias = bias if bias is not None else np.zeros(kernel.shape[3], "float32")
    return rewriter.linear([Term("conv", value.tensor, kernel, bias, name)])


def _bottleneck(rewriter, form, x, name):
    """Depthwise s2 -> projection -> per-channel 2x2 s2 transposed conv, cropped to `x`'s size."""
    kernel = form.depthwise_kernel
    zeros = np.zeros(kernel.shape[2], "float32")
    y = rewriter.emit_term(Term("depthwise", x, kernel, zeros, f"{name}_dw", strides=2, padding="same"))
    y = _projection(rewriter, form.projection_kernel, None, Value(y), f"{name}_projection").tensor
    filters = form.projection_kernel.shape[3]
    # The transposed conv is 4 copies scaled per (tap, channel), then depth_to_space.
    copies = rewriter.emit(keras.layers.Concatenate(name=rewriter.name(f"{name}_copies")), [y] * 4)
    scale = form.upsample_scale.reshape(1, 1, 4 * filters, 1)
    bias = form.bias if form.bias is not None else np.zeros(filters, "float32")
    y = rewriter.emit_term(Term("depthwise", copies, scale, np.tile(bias, 4), f"{name}_upsample_scale"))
    y = rewriter.emit(DepthToSpace(2, name=rewriter.name(f"{name}_depth_to_space")), y)
    h, w = x.shape[1:3]
    if h is None or w is None:
        raise ValueError(f"optimize_for_inference: layer '{name}' needs static spatial sizes. Pass `input_shape`.")
    if y.shape[1] != h or y.shape[2] != w:
        crop = keras.layers.Cropping2D(((0, y.shape[1] - h), (0, y.shape[2] - w)), name=rewriter.name(f"{name}_crop"))
        y = rewriter.emit(crop, y)
    return y


@lowering_rule(FactorizedConv2D)
def lower_factorized(rewriter, call):
    """Unit by unit: depthwise + projection (or the bottleneck), residual add, activation."""
    layer, value = call.layer, call.value
    require_channels_last(layer)
    name = layer.name
    for u, unit in enumerate(layer.inference_form()):
        x = rewriter.materialize(value)
        if unit.bottleneck is not None:
            out = Value(_bottleneck(rewriter, unit.bottleneck, x, f"{name}_unit{u}"))
        else:
            zeros = np.zeros(unit.depthwise_kernel.shape[2], "float32")
            dw = rewriter.emit_term(
                Term("depthwise", x, unit.depthwise_kernel, zeros, f"{name}_unit{u}_dw", **unit.geometry)
            )
            out = _projection(rewriter, unit.projection_kernel, unit.projection_bias, Value(dw),
                              f"{name}_unit{u}_projection")
        if unit.residual:
            out = Value(rewriter.emit(keras.layers.Add(name=rewriter.name(f"{name}_unit{u}_residual")), [out.tensor, x]))
        value = rewriter.activation(out, layer.activation, f"{name}_unit{u}")
    return value


@lowering_rule(SpatialBottleneck)
def lower_spatial_bottleneck(rewriter, call):
    layer = call.layer
    require_channels_last(layer)
    x = rewriter.materialize(call.value)
    value = Value(_bottleneck(rewriter, layer.inference_form(), x, layer.name))
    return rewriter.activation(value, layer.activation, layer.name)


@lowering_rule(TopologicalProjection)
def lower_topological_projection(rewriter, call):
    """The projection's equivalent dense `1 x 1` CONV_2D (`dense_kernel()`)."""
    layer = call.layer
    require_channels_last(layer)
    value = _projection(rewriter, numpy_float32(layer.dense_kernel()), numpy_float32(layer.bias), call.value, layer.name)
    return rewriter.activation(value, layer.activation, layer.name)

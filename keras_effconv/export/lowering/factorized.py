"""SIC layers: depthwise convolutions, dense `1 x 1` projections, and the spatial bottleneck's
per-channel transposed convolution as copy-scale-DEPTH_TO_SPACE (no TRANSPOSE_CONV)."""

import numpy as np

import keras

from keras_effconv.export._layers import DepthToSpace
from keras_effconv.export._layers import SpatialSubsample
from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import SpatialBottleneck
from keras_effconv.layers import TopologicalProjection


def _projection(rewriter, kernel, bias, value, name, form=None):
    """A `1 x 1` projection reading `value` in its held order.

    Dense, or a topological projection (`form`) in the form the layer runs.
    """
    if form is not None:
        return _topological(rewriter, form, value, name)
    kernel = rows_for_actual(kernel, value.perm, axis=2)
    bias = bias if bias is not None else np.zeros(kernel.shape[3], "float32")
    return rewriter.linear([Term("conv", value.tensor, kernel, bias, name)])


def _topological(rewriter, form, value, name):
    """`TopologicalProjection.inference_form()` as CONV_2Ds.

    Rolled groups: the input subsampled (when strided), then per window
    offset its rolled channel view (slices + one concatenation) through a
    grouped CONV_2D with `d1 d2` groups, summed with ADD; a following BN folds
    into every term. The masked dense kernel is emitted instead when the layer
    runs it, and on the GPU target when the channels per group are not
    multiples of 4 (the GPU delegate computes such grouped convs wrongly).
    """
    bias = form.bias if form.bias is not None else np.zeros(form.dense_kernel.shape[3], "float32")
    s_in, filters = form.group_kernels.shape[3:]
    groups = form.dense_kernel.shape[2] // s_in
    if form.execution == "masked_dense" or not rewriter.native_grouping(s_in, filters // groups):
        kernel = rows_for_actual(form.dense_kernel, value.perm, axis=2)
        return rewriter.linear([Term("conv", value.tensor, kernel, bias, name, strides=form.strides)])
    if form.strides != (1, 1):
        tensor = rewriter.emit(SpatialSubsample(form.strides, name=rewriter.name(f"{name}_subsample")), value.tensor)
        value = Value(tensor, value.perm)
    zeros = np.zeros_like(bias)
    terms = []
    for o, order in enumerate(form.input_orders):
        # reorder=False: re-emitting the producer per offset would repeat its work.
        view = rewriter.materialize(value, order, reorder=False)
        terms.append(Term("conv", view, form.group_kernels[o], bias if o == 0 else zeros, f"{name}_offset{o}"))
    return rewriter.linear(terms)


def _bottleneck(rewriter, form, x, name):
    """Depthwise s2 -> projection -> per-channel 2x2 s2 transposed conv, cropped to `x`'s size."""
    kernel = form.depthwise_kernel
    zeros = np.zeros(kernel.shape[2], "float32")
    y = rewriter.emit_term(Term("depthwise", x, kernel, zeros, f"{name}_dw", strides=2, padding="same"))
    y = _projection(rewriter, form.projection_kernel, None, Value(y), f"{name}_projection", form.projection_form)
    y = rewriter.materialize(y)
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
    for u, unit in enumerate(layer.inference_form(value.tensor.shape)):
        x = rewriter.materialize(value)
        if unit.bottleneck is not None:
            out = Value(_bottleneck(rewriter, unit.bottleneck, x, f"{name}_unit{u}"))
        else:
            zeros = np.zeros(unit.depthwise_kernel.shape[2], "float32")
            dw = rewriter.emit_term(
                Term("depthwise", x, unit.depthwise_kernel, zeros, f"{name}_unit{u}_dw", **unit.geometry)
            )
            out = _projection(rewriter, unit.projection_kernel, unit.projection_bias, Value(dw),
                              f"{name}_unit{u}_projection", unit.projection_form)
        if unit.residual:
            out = Value(rewriter.emit(keras.layers.Add(name=rewriter.name(f"{name}_unit{u}_residual")), [out.tensor, x]))
        value = rewriter.activation(out, layer.activation, f"{name}_unit{u}")
    return value


@lowering_rule(SpatialBottleneck)
def lower_spatial_bottleneck(rewriter, call):
    layer = call.layer
    require_channels_last(layer)
    x = rewriter.materialize(call.value)
    value = Value(_bottleneck(rewriter, layer.inference_form(x.shape), x, layer.name))
    return rewriter.activation(value, layer.activation, layer.name)


@lowering_rule(TopologicalProjection)
def lower_topological_projection(rewriter, call):
    """The projection in the form the layer runs (`inference_form()`)."""
    layer = call.layer
    require_channels_last(layer)
    value = _topological(rewriter, layer.inference_form(call.value.tensor.shape), call.value, layer.name)
    return rewriter.activation(value, layer.activation, layer.name)

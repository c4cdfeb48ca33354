"""CompConv2D: its convolutions, slices and concatenations; the final shuffle is never executed."""

import numpy as np

import keras

from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import conv_geometry
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import CompConv2D


@lowering_rule(CompConv2D)
def lower_compconv(rewriter, call):
    """The recursion unrolled; the output shuffle is carried as a lazy permutation."""
    layer, value = call.layer, call.value
    require_channels_last(layer)
    name = layer.name
    form = layer.inference_form()
    inner = dict(strides=1, padding="same", dilation_rate=layer.dilation_rate)

    def zeros(kernel):
        return np.zeros(kernel.shape[3], "float32")

    first = rows_for_actual(form.kernels[0], value.perm, axis=2)
    q = rewriter.emit_term(Term("conv", value.tensor, first, zeros(first), f"{name}_q1", **conv_geometry(layer)))
    parts = []
    for i, channels in enumerate(form.identity_channels):
        identity = rewriter.materialize(value, channels, reorder=False)
        identity = rewriter.subsample(identity, layer)
        x_i = rewriter.emit(keras.layers.Concatenate(name=rewriter.name(f"{name}_x{i + 1}")), [identity, q])
        parts.append(x_i)
        kernel = form.kernels[i + 1]
        q = rewriter.emit_term(Term("conv", x_i, kernel, zeros(kernel), f"{name}_q{i + 2}", **inner))
    parts.append(q)
    if form.tailing_kernel is not None:
        kernel = form.tailing_kernel
        parts.append(rewriter.emit_term(Term("conv", q, kernel, zeros(kernel), f"{name}_tail", **inner)))
    y = parts[0]
    if len(parts) > 1:
        y = rewriter.emit(keras.layers.Concatenate(name=rewriter.name(f"{name}_concat")), parts)
    perm = form.output_order
    out = Value(y, perm)
    if form.bias is not None:
        bias_actual = np.empty(layer.filters, "float32")
        bias_actual[perm] = form.bias
        ones = np.ones((1, 1, layer.filters, 1), "float32")
        out = rewriter.linear([Term("depthwise", y, ones, bias_actual, f"{name}_bias")], perm=perm)
    return rewriter.activation(out, layer.activation, name)

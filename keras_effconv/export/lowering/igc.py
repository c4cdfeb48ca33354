"""InterleavedGroupConv2D: grouped primary CONV_2D + one dense `1 x 1` with both interleaves folded in."""

import numpy as np

from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import conv_geometry
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import InterleavedGroupConv2D


@lowering_rule(InterleavedGroupConv2D)
def lower_igc(rewriter, call):
    """Primary (grouped, or dense reading the permuted input for L = 1), then the folded secondary."""
    layer, value = call.layer, call.value
    require_channels_last(layer)
    form = layer.inference_form()
    primary = form.primary_kernel
    if form.groups == 1:
        x, primary = value.tensor, rows_for_actual(primary, value.perm, axis=2)
    else:
        x = rewriter.materialize(value)
    zeros = np.zeros(primary.shape[3], "float32")
    y = rewriter.emit_term(Term("conv", x, primary, zeros, f"{layer.name}_primary", **conv_geometry(layer)))
    bias = form.bias if form.bias is not None else np.zeros(layer.filters, "float32")
    out = rewriter.linear([Term("conv", y, form.secondary_kernel, bias, f"{layer.name}_secondary")])
    return rewriter.activation(out, layer.activation, layer.name)

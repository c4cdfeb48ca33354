"""HetConv2D: one grouped `k x k` CONV_2D over residue-class-ordered channels + one `1 x 1` CONV_2D."""

import numpy as np

from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import conv_geometry
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rules import lowering_rule
from keras_effconv.layers import HetConv2D


@lowering_rule(HetConv2D)
def lower_hetconv(rewriter, call):
    """Grouped `k x k` + centre-tap `1 x 1`, outputs left in residue-class order (a lazy permutation)."""
    layer, value = call.layer, call.value
    require_channels_last(layer)
    form = layer.inference_form()
    n = layer.filters
    bias = form.bias if form.bias is not None else np.zeros(n, "float32")
    if form.groups == 1:
        kernel = rows_for_actual(form.kernel, value.perm, axis=2)
        out = rewriter.linear([Term("conv", value.tensor, kernel, bias, layer.name, **conv_geometry(layer))])
        return rewriter.activation(out, layer.activation, layer.name)
    x = rewriter.materialize(value, form.input_order)
    centres, centre_geometry = rewriter.centre_input(x, layer)
    terms = [
        Term("conv", x, form.kernel, bias[form.output_order], f"{layer.name}_kxk", **conv_geometry(layer)),
        Term("conv", centres, form.pointwise_kernel, np.zeros(n, "float32"), f"{layer.name}_1x1", **centre_geometry),
    ]
    # Column t holds output channel output_order[t]: natural channel j sits at argsort(output_order)[j].
    out = rewriter.linear(terms, perm=np.argsort(form.output_order))
    return rewriter.activation(out, layer.activation, layer.name)

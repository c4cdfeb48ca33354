"""Keras' own layers: convolutions and Dense as foldable linear terms, BN folded, the rest passed through.

Per-channel layers (activations, padding, pooling, BN that cannot fold) keep
a lazy permutation; merges keep it when all inputs share it; Dropout-like
layers vanish at inference; nearest UpSampling2D becomes an integer nearest
resize on the GPU target (RESHAPE+TILE is not accelerated, RESIZE is).
"""

import numpy as np

import keras

from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import conv_geometry
from keras_effconv.export.rewriter import is_elementwise
from keras_effconv.export.rewriter import numpy_float32
from keras_effconv.export.rewriter import require_channels_last
from keras_effconv.export.rewriter import rows_for_actual
from keras_effconv.export.rewriter import unsupported
from keras_effconv.export.rules import lowering_rule


def _bias(layer, channels):
    return numpy_float32(layer.bias) if layer.use_bias else np.zeros(channels, "float32")


@lowering_rule(keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
def lower_conv(rewriter, call):
    """One linear term (SeparableConv2D: depthwise + a foldable pointwise)."""
    layer, value = call.layer, call.value
    require_channels_last(layer)
    if getattr(layer, "lora_enabled", False):
        raise unsupported(layer, "LoRA-enabled layers must be merged first (`layer.disable_lora()` is not exact).")
    name, geometry = layer.name, conv_geometry(layer)
    if isinstance(layer, keras.layers.SeparableConv2D):
        x = rewriter.materialize(value)
        dw = numpy_float32(layer.depthwise_kernel)
        zeros = np.zeros(dw.shape[2] * dw.shape[3])
        depthwise = rewriter.emit_term(Term("depthwise", x, dw, zeros, f"{name}_dw", **geometry))
        pointwise = numpy_float32(layer.pointwise_kernel)
        out = rewriter.linear([Term("conv", depthwise, pointwise, _bias(layer, layer.filters), f"{name}_pw")])
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        # Per channel, so a pending permutation passes through: the kernel follows
        # the channels as they are held and the output keeps the order (no GATHER).
        kernel = numpy_float32(layer.kernel)
        channels, multiplier = kernel.shape[2], kernel.shape[3]
        bias = _bias(layer, channels * multiplier).reshape(channels, multiplier)
        perm = value.perm
        out_perm = None if perm is None else (perm[:, None] * multiplier + np.arange(multiplier)).ravel()
        kernel, bias = rows_for_actual(kernel, perm, axis=2), rows_for_actual(bias, perm, axis=0).ravel()
        term = Term("depthwise", value.tensor, kernel, bias, name, **geometry)
        out = rewriter.linear([term], perm=out_perm)
    else:
        kernel = numpy_float32(layer.kernel)
        if layer.groups == 1:
            x, kernel = value.tensor, rows_for_actual(kernel, value.perm, axis=2)
        else:
            x = rewriter.materialize(value)
        out = rewriter.linear([Term("conv", x, kernel, _bias(layer, kernel.shape[3]), name, **geometry)])
    return rewriter.activation(out, layer.activation, name)


@lowering_rule(keras.layers.Dense)
def lower_dense(rewriter, call):
    layer, value = call.layer, call.value
    if getattr(layer, "lora_enabled", False):
        return rewriter.generic(call)
    kernel = rows_for_actual(numpy_float32(layer.kernel), value.perm, axis=0)
    out = rewriter.linear([Term("dense", value.tensor, kernel, _bias(layer, layer.units), layer.name)])
    return rewriter.activation(out, layer.activation, layer.name)


@lowering_rule(keras.layers.BatchNormalization)
def lower_batch_normalization(rewriter, call):
    """Folded into the producer's kernel and bias where it is linear and single-use, else kept."""
    layer, value = call.layer, call.value
    rank = len(value.tensor.shape)
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    if axis != rank - 1:
        return rewriter.generic(call)
    mean, var = numpy_float32(layer.moving_mean), numpy_float32(layer.moving_variance)
    gamma = numpy_float32(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = numpy_float32(layer.beta) if layer.center else np.zeros_like(mean)
    inv = 1.0 / np.sqrt(var.astype("float64") + layer.epsilon)
    scale = (gamma * inv).astype("float32")
    shift = (beta - mean * gamma * inv).astype("float32")
    folded = rewriter.fold_affine(value, scale, shift)
    if folded is not None:
        return folded
    params = [gamma, beta, mean, var]

    def fresh(order):
        bn = keras.layers.BatchNormalization(epsilon=layer.epsilon, dtype="float32", name=rewriter.name(layer.name))
        return bn, [p[order] for p in params]

    actual = np.arange(len(mean)) if value.perm is None else np.argsort(value.perm)
    bn, weights = fresh(actual)
    tensor = rewriter.emit(bn, value.tensor, weights)

    def reorder(order):
        inner = rewriter.try_reorder(value, order)
        if inner is None:
            return None
        bn, weights = fresh(order)
        return rewriter.emit(bn, inner, weights)

    return Value(tensor, value.perm, reorder=reorder)


@lowering_rule(keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)
def lower_activation(rewriter, call):
    if not is_elementwise(call.layer):
        return rewriter.generic(call)
    return rewriter.per_channel(rewriter.clone(call.layer), call.value)


@lowering_rule(
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
def lower_per_channel(rewriter, call):
    require_channels_last(call.layer)
    return rewriter.per_channel(rewriter.clone(call.layer), call.value)


@lowering_rule(
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
def lower_inference_identity(rewriter, call):
    """Identity at inference: the input value itself."""
    return call.value


@lowering_rule(
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
def lower_merge(rewriter, call):
    """Elementwise merge; the inputs' permutation is kept when they all share it."""
    values = call.inputs
    perms = [v.perm for v in values]
    same = all(
        (p is None and perms[0] is None) or (p is not None and perms[0] is not None and np.array_equal(p, perms[0]))
        for p in perms
    )
    if same:
        tensors, perm = [v.tensor for v in values], perms[0]
    else:
        tensors, perm = [rewriter.materialize(v) for v in values], None
    return Value(rewriter.emit(rewriter.clone(call.layer), tensors), perm)


@lowering_rule(keras.layers.UpSampling2D)
def lower_upsampling(rewriter, call):
    layer, value = call.layer, call.value
    if layer.interpolation != "nearest" or rewriter.target != "gpu":
        return rewriter.generic(call)
    require_channels_last(layer)
    h, w = value.tensor.shape[1:3]
    if h is None or w is None:
        return rewriter.generic(call)
    sh, sw = layer.size

    def resize():
        return keras.layers.Resizing(h * sh, w * sw, interpolation="nearest", name=rewriter.name(layer.name))

    return rewriter.per_channel(resize(), value, fresh=resize)

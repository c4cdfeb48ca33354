"""`optimize_for_inference`: an equivalent model made of mobile-friendly ops.

The rewrite walks the model with `keras.models.clone_model(...,
call_function=...)` (the same pattern as `keras_effconv.convert`) and emits,
for every layer, standard Keras layers (plus two tiny `keras.ops` layers,
`ChannelGather` and `DepthToSpace`) whose LiteRT operators run natively on
mobile GPU delegates (DESIGN.md §5):

- BatchNormalization after a convolution-like producer is folded into its
  kernel and bias; otherwise it stays (LiteRT runs it as MUL+ADD).
- HetConv2D: grouped `k x k` CONV_2D over residue-class-ordered channels +
  one `1 x 1` CONV_2D (strided windows sampled by a crop + strided 1x1).
- InterleavedGroupConv2D: grouped primary CONV_2D + dense `1 x 1` secondary
  with both interleaves folded into its kernel.
- CompConv2D: its convolutions, slices and concatenations; the final
  channel shuffle is not executed (see below).
- FactorizedConv2D / SpatialBottleneck / TopologicalProjection: depthwise
  convolutions, dense `1 x 1` projections, and for the per-channel
  transposed convolution a copy-scale-`DEPTH_TO_SPACE` (no Conv2DTranspose).
- SeparableConv2D: DEPTHWISE_CONV_2D + CONV_2D (so BN folds into the second).
- Grouped convolutions stay native only when the input and output channels
  per group are multiples of 4 (target `"gpu"`; the GPU delegate computes
  wrong results otherwise), become DEPTHWISE_CONV_2D with one input channel
  per group, and are split into one CONV_2D per group otherwise.

Channel permutations (HetConv's residue classes, CompConv's and
ChannelShuffle's shuffles) are carried lazily: a tensor may be held in a
permuted channel order, per-channel layers (BN, activations, padding,
pooling) just follow it, and the next dense convolution or Dense layer
absorbs it into its kernel rows. Where a permutation is needed before a
producer that can emit its channels in any order (e.g. the 1x1 convolution
in front of a HetConv), that producer is re-emitted with permuted kernel
columns. Only when neither is possible is a single GATHER emitted.
"""

import numpy as np

import keras

from keras_effconv import layers as eff
from keras_effconv._model_graph import all_layers
from keras_effconv._model_graph import functional_graph
from keras_effconv.export._layers import ChannelGather
from keras_effconv.export._layers import DepthToSpace
from keras_effconv.layers import _core

TARGETS = ("gpu", "cpu")

_PER_CHANNEL_LAYERS = (
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
_ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)
_INFERENCE_IDENTITY_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_EFFCONV_LAYERS = (
    eff.HetConv2D,
    eff.InterleavedGroupConv2D,
    eff.CompConv2D,
    eff.FactorizedConv2D,
    eff.TopologicalProjection,
    eff.SpatialBottleneck,
    eff.ChannelShuffle,
    eff.SqueezeExcite,
    eff.EfficientChannelAttention,
    ChannelGather,
    DepthToSpace,
)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float32")


def _is_identity(order, size=None):
    order = np.asarray(order)
    return (size is None or len(order) == size) and np.array_equal(order, np.arange(len(order)))


class _Term:
    """One convolution-like producer whose output channels can be rescaled.

    `kind` is "conv" (kernel `(kh, kw, C_in/groups, C_out)`), "depthwise"
    (`(kh, kw, C, m)`) or "dense" (`(C_in, C_out)`).
    """

    def __init__(self, kind, inputs, kernel, bias, name, **geometry):
        self.kind = kind
        self.inputs = inputs
        self.kernel = np.asarray(kernel, dtype="float32")
        self.bias = np.asarray(bias, dtype="float32")
        self.name = name
        self.geometry = geometry

    def scaled(self, scale, shift=None):
        if self.kind == "depthwise":
            kh, kw, c, m = self.kernel.shape
            kernel = self.kernel * scale.reshape(c, m)
        else:
            kernel = self.kernel * scale
        bias = self.bias * scale + (0.0 if shift is None else shift)
        return _Term(self.kind, self.inputs, kernel, bias, self.name, **self.geometry)

    def reordered(self, order):
        return _Term(self.kind, self.inputs, self.kernel[..., order], self.bias[order], self.name, **self.geometry)

    @property
    def dense(self):
        return self.kind == "dense" or (
            self.kind == "conv" and self.kernel.shape[2] == self.inputs.shape[-1]
        )


class _Value:
    """A rewritten tensor: `logical[..., j] == tensor[..., perm[j]]`.

    `terms` (a list of `_Term` summed in `tensor`'s channel order) is set for
    linear producers, so a following BatchNormalization can fold into them.
    `reorder(order)` re-emits the value with channels `logical[order]`, or
    returns None. `single_use` is True when the original tensor has exactly
    one consumer and is no model output, so re-emitting it duplicates nothing.
    """

    def __init__(self, tensor, perm=None, terms=None, reorder=None):
        self.tensor = tensor
        self.perm = None if perm is None or _is_identity(perm, tensor.shape[-1]) else np.asarray(perm)
        self.terms = terms
        self.reorder = reorder
        self.single_use = False


def _channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format != "channels_last":
        raise ValueError(
            f"optimize_for_inference: layer '{layer.name}' ({type(layer).__name__}) "
            f"uses data_format='{data_format}'; LiteRT and mobile GPUs need "
            "'channels_last'. Rebuild the model with channels_last layers."
        )


def _unsupported(layer, why):
    return ValueError(
        f"optimize_for_inference: layer '{layer.name}' ({type(layer).__name__}) "
        f"is not supported: {why}"
    )


def _check_layer(layer):
    """Raises for layers the rewrite cannot turn into verified builtin ops."""
    if isinstance(layer, keras.layers.Lambda):
        raise _unsupported(
            layer,
            "a Lambda layer holds arbitrary Python code that cannot be saved "
            "safely, converted in a separate process or checked for mobile "
            "GPUs. Replace it by built-in layers or a registered custom layer "
            "made of keras.ops.",
        )
    if isinstance(layer, keras.Model):
        return
    module = type(layer).__module__
    if isinstance(layer, _EFFCONV_LAYERS) or module.startswith("keras."):
        return
    raise _unsupported(
        layer,
        "only Keras built-in layers and keras_effconv layers can be rewritten "
        "and verified for mobile GPUs.",
    )


def _functional(model):
    return functional_graph(model, "optimize_for_inference")


class _Rewriter:
    def __init__(self, target):
        self.target = target
        self.values = {}
        self.image = {}
        self.consumers = {}
        self.outputs = set()
        self.names = set()

    # -- bookkeeping ---------------------------------------------------------

    def scan(self, model):
        model = _functional(model)
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                for tensor in node.input_tensors:
                    self.consumers[id(tensor)] = self.consumers.get(id(tensor), 0) + 1
                if isinstance(node.operation, keras.Model):
                    self.scan(node.operation)
                    for inner in _functional(node.operation).outputs:
                        self.outputs.add(id(inner))
        for tensor in model.outputs:
            self.outputs.add(id(tensor))

    def name(self, base):
        name, i = base, 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def emit(self, layer, inputs, weights=None):
        """Calls a fresh layer on `inputs` and sets its weights."""
        outputs = layer(inputs)
        if weights is not None:
            layer.set_weights([np.asarray(w, dtype="float32") for w in weights])
        return outputs

    def register(self, value):
        if id(value.tensor) in self.values and self.values[id(value.tensor)] is not value:
            # Two values on one tensor (e.g. a free permutation): give the new one its own.
            tensor = self.emit(keras.layers.Identity(name=self.name("identity")), value.tensor)
            value = _Value(tensor, value.perm, value.terms, value.reorder)
        self.values[id(value.tensor)] = value
        return value

    # -- emission helpers ----------------------------------------------------

    def conv(self, x, kernel, bias, name, strides=1, padding="same", dilation_rate=1):
        """CONV_2D / DEPTHWISE_CONV_2D / per-group CONV_2Ds for a (grouped) kernel."""
        kh, kw, in_per_group, out_channels = kernel.shape
        groups = x.shape[-1] // in_per_group
        out_per_group = out_channels // groups
        common = dict(strides=strides, padding=padding, dilation_rate=dilation_rate, dtype="float32")
        if groups > 1 and in_per_group == 1:
            dw = kernel.reshape(kh, kw, groups, out_per_group)
            layer = keras.layers.DepthwiseConv2D(
                (kh, kw), depth_multiplier=out_per_group, name=self.name(name), **common
            )
            return self.emit(layer, x, [dw, bias])
        gpu_safe = in_per_group % 4 == 0 and out_per_group % 4 == 0
        if groups == 1 or self.target == "cpu" or gpu_safe:
            layer = keras.layers.Conv2D(
                out_channels, (kh, kw), groups=groups, name=self.name(name), **common
            )
            return self.emit(layer, x, [kernel, bias])
        # The GPU delegate computes grouped convs with channels per group not a
        # multiple of 4 wrongly: one dense conv per group, exact and MAC-exact.
        parts = []
        for g in range(groups):
            xg = self.emit(
                ChannelGather(range(g * in_per_group, (g + 1) * in_per_group), name=self.name(f"{name}_in{g}")),
                x,
            )
            cols = slice(g * out_per_group, (g + 1) * out_per_group)
            layer = keras.layers.Conv2D(out_per_group, (kh, kw), name=self.name(f"{name}_g{g}"), **common)
            parts.append(self.emit(layer, xg, [kernel[..., cols], bias[cols]]))
        return self.emit(keras.layers.Concatenate(name=self.name(f"{name}_concat")), parts)

    def emit_term(self, term):
        if term.kind == "conv":
            return self.conv(term.inputs, term.kernel, term.bias, term.name, **term.geometry)
        if term.kind == "depthwise":
            kh, kw, c, m = term.kernel.shape
            layer = keras.layers.DepthwiseConv2D(
                (kh, kw), depth_multiplier=m, dtype="float32", name=self.name(term.name), **term.geometry
            )
            return self.emit(layer, term.inputs, [term.kernel, term.bias])
        layer = keras.layers.Dense(term.kernel.shape[1], dtype="float32", name=self.name(term.name))
        return self.emit(layer, term.inputs, [term.kernel, term.bias])

    def linear(self, terms, perm=None):
        """The sum of `terms`, as a value BN can fold into."""
        outputs = [self.emit_term(t) for t in terms]
        tensor = outputs[0]
        if len(outputs) > 1:
            tensor = self.emit(keras.layers.Add(name=self.name(f"{terms[0].name}_sum")), outputs)
        reorder = None
        if perm is None and len(terms) == 1 and terms[0].dense:
            term = terms[0]
            reorder = lambda order: self.emit_term(term.reordered(order))  # noqa: E731
        return _Value(tensor, perm, terms, reorder)

    def fold_affine(self, value, scale, shift):
        """`value * scale + shift` (per logical channel) folded into its producer."""
        if not value.terms or not value.single_use:
            return None
        if value.perm is not None:
            scale_actual, shift_actual = np.empty_like(scale), np.empty_like(shift)
            scale_actual[value.perm], shift_actual[value.perm] = scale, shift
            scale, shift = scale_actual, shift_actual
        terms = [t.scaled(scale, shift if i == 0 else None) for i, t in enumerate(value.terms)]
        return self.linear(terms, value.perm)

    def try_reorder(self, value, order):
        if value.single_use and value.reorder is not None:
            return value.reorder(order)
        return None

    def materialize(self, value, order=None, reorder=True):
        """A tensor holding `logical[..., order]` (all channels when None)."""
        channels = len(value.perm) if value.perm is not None else value.tensor.shape[-1]
        order = np.arange(channels) if order is None else np.asarray(order)
        index = order if value.perm is None else value.perm[order]
        if _is_identity(index, value.tensor.shape[-1]):
            return value.tensor
        if reorder:
            tensor = self.try_reorder(value, order)
            if tensor is not None:
                return tensor
        return self.emit(ChannelGather(index.tolist(), name=self.name("channel_gather")), value.tensor)

    def activation(self, value, activation, name):
        """Applies a Keras activation function (no-op for linear)."""
        if activation is None or activation is keras.activations.linear:
            return value
        layer = keras.layers.Activation(activation, dtype="float32", name=self.name(f"{name}_act"))
        return self.per_channel(layer, value) if _elementwise(layer) else _Value(
            self.emit(layer, self.materialize(value))
        )

    def per_channel(self, layer, value, fresh=None):
        """Applies an elementwise / per-channel layer; the permutation follows."""
        tensor = self.emit(layer, value.tensor)
        fresh = fresh or (lambda: layer.__class__.from_config(_renamed(layer.get_config(), self.name(layer.name))))

        def reorder(order):
            inner = self.try_reorder(value, order)
            return None if inner is None else self.emit(fresh(), inner)

        return _Value(tensor, value.perm, reorder=reorder)

    def centre_input(self, x, kernel_size, strides, padding, dilation_rate, name):
        """Input and 1x1-conv geometry that read the centre tap of every k x k window."""
        kh, kw = kernel_size
        sh, sw = strides
        dh, dw = dilation_rate
        if padding == "same" and (sh, sw) == (1, 1) and (kh - 1) * dh % 2 == 0 and (kw - 1) * dw % 2 == 0:
            return x, dict(strides=1, padding="same")
        crops = []
        for length, k, s, d in ((x.shape[1], kh, sh, dh), (x.shape[2], kw, sw, dw)):
            if length is None:
                raise ValueError(
                    f"optimize_for_inference: layer '{name}' is strided or 'valid'; "
                    "its exact inference form needs static spatial sizes. Pass `input_shape`."
                )
            centre = ((k - 1) * d) // 2
            start = centre - _core._same_pad_amounts(length, k, s, d)[0] if padding == "same" else centre
            out = _core.conv_output_length(length, k, s, padding, d)
            span = (out - 1) * s + 1
            crops.append((start, length - start - span))
        if any(c < 0 for pair in crops for c in pair):
            raise ValueError(f"optimize_for_inference: cannot sample the window centres of layer '{name}'.")
        if any(c for pair in crops for c in pair):
            x = self.emit(keras.layers.Cropping2D(tuple(crops), name=self.name(f"{name}_centres")), x)
        return x, dict(strides=(sh, sw), padding="valid")

    def subsample(self, x, kernel_size, strides, padding, dilation_rate, name):
        x, geometry = self.centre_input(x, kernel_size, strides, padding, dilation_rate, name)
        if geometry["strides"] in (1, (1, 1)):
            return x
        layer = keras.layers.MaxPooling2D(1, strides=geometry["strides"], name=self.name(f"{name}_subsample"))
        return self.emit(layer, x)

    # -- layers --------------------------------------------------------------

    def lower(self, layer, values, args, kwargs):
        if isinstance(layer, keras.Model):
            return self.inline(layer, values)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
            _channels_last(layer)
            if getattr(layer, "lora_enabled", False):
                raise _unsupported(layer, "LoRA-enabled layers must be merged first (`layer.disable_lora()` is not exact).")
            return [self.lower_conv(layer, values[0])]
        if isinstance(layer, keras.layers.Dense) and not getattr(layer, "lora_enabled", False):
            return [self.lower_dense(layer, values[0])]
        if isinstance(layer, keras.layers.BatchNormalization):
            return [self.lower_bn(layer, values[0])]
        if isinstance(layer, _ACTIVATION_LAYERS) and _elementwise(layer):
            return [self.per_channel(self.clone(layer), values[0])]
        if isinstance(layer, _PER_CHANNEL_LAYERS):
            _channels_last(layer)
            return [self.per_channel(self.clone(layer), values[0])]
        if isinstance(layer, _INFERENCE_IDENTITY_LAYERS):
            return [values[0]]
        if isinstance(layer, _MERGE_LAYERS):
            return [self.lower_merge(layer, values)]
        if isinstance(layer, eff.HetConv2D):
            return [self.lower_hetconv(layer, values[0])]
        if isinstance(layer, eff.InterleavedGroupConv2D):
            return [self.lower_igc(layer, values[0])]
        if isinstance(layer, eff.CompConv2D):
            return [self.lower_compconv(layer, values[0])]
        if isinstance(layer, eff.FactorizedConv2D):
            return [self.lower_factorized(layer, values[0])]
        if isinstance(layer, eff.SpatialBottleneck):
            _channels_last(layer)
            x = self.materialize(values[0])
            value = _Value(self.bottleneck(layer, x, layer.name))
            return [self.activation(value, layer.activation, layer.name)]
        if isinstance(layer, eff.TopologicalProjection):
            _channels_last(layer)
            value = self.projection(layer, values[0], layer.name)
            return [self.activation(value, layer.activation, layer.name)]
        if isinstance(layer, eff.ChannelShuffle):
            _channels_last(layer)
            return [self.lower_shuffle(layer, values[0])]
        if isinstance(layer, ChannelGather):
            return [_Value(self.materialize(values[0], layer.indices))]
        if isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest" and self.target == "gpu":
            return [self.lower_upsampling(layer, values[0])]
        return self.generic(layer, values, args, kwargs)

    def clone(self, layer):
        clone = layer.__class__.from_config(_renamed(layer.get_config(), self.name(layer.name)))
        return clone

    def generic(self, layer, values, args, kwargs):
        """Any other layer: inputs in natural channel order, weights copied."""
        tensors = {id(v.tensor): self.materialize(v) for v in values}
        new_args, new_kwargs = keras.tree.map_structure(
            lambda a: tensors.get(id(a), a) if isinstance(a, keras.KerasTensor) else a, (args, kwargs)
        )
        clone = self.clone(layer)
        outputs = clone(*new_args, **new_kwargs)
        if layer.weights:
            clone.set_weights(layer.get_weights())
        return [_Value(t) for t in keras.tree.flatten(outputs)]

    def inline(self, model, values):
        functional = _functional(model)
        for inner, value in zip(functional.inputs, values):
            self.image[id(inner)] = value.tensor
        outputs = functional._run_through_graph(
            [v.tensor for v in values], operation_fn=lambda op: op, call_fn=self.call
        )
        return [self.values[id(t)] for t in keras.tree.flatten(outputs)]

    def lower_conv(self, layer, value):
        name = layer.name
        geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        if isinstance(layer, keras.layers.SeparableConv2D):
            x = self.materialize(value)
            dw = _np(layer.depthwise_kernel)
            depthwise = self.emit_term(_Term("depthwise", x, dw, np.zeros(dw.shape[2] * dw.shape[3]), f"{name}_dw", **geometry))
            bias = _np(layer.bias) if layer.use_bias else np.zeros(layer.filters)
            out = self.linear([_Term("conv", depthwise, _np(layer.pointwise_kernel), bias, f"{name}_pw")])
            return self.activation(out, layer.activation, name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            x = self.materialize(value)
            kernel = _np(layer.kernel)
            bias = _np(layer.bias) if layer.use_bias else np.zeros(kernel.shape[2] * kernel.shape[3])
            out = self.linear([_Term("depthwise", x, kernel, bias, name, **geometry)])
            return self.activation(out, layer.activation, name)
        kernel = _np(layer.kernel)
        bias = _np(layer.bias) if layer.use_bias else np.zeros(kernel.shape[3], "float32")
        if layer.groups == 1:
            x, kernel = value.tensor, _rows_for_actual(kernel, value.perm, axis=2)
        else:
            x = self.materialize(value)
        out = self.linear([_Term("conv", x, kernel, bias, name, **geometry)])
        return self.activation(out, layer.activation, name)

    def lower_dense(self, layer, value):
        kernel = _rows_for_actual(_np(layer.kernel), value.perm, axis=0)
        bias = _np(layer.bias) if layer.use_bias else np.zeros(layer.units, "float32")
        out = self.linear([_Term("dense", value.tensor, kernel, bias, layer.name)])
        return self.activation(out, layer.activation, layer.name)

    def lower_bn(self, layer, value):
        rank = len(value.tensor.shape)
        axis = layer.axis if layer.axis >= 0 else rank + layer.axis
        if axis != rank - 1:
            return self.generic(layer, [value], (value.tensor,), {})[0]
        mean, var = _np(layer.moving_mean), _np(layer.moving_variance)
        gamma = _np(layer.gamma) if layer.scale else np.ones_like(mean)
        beta = _np(layer.beta) if layer.center else np.zeros_like(mean)
        inv = 1.0 / np.sqrt(var.astype("float64") + layer.epsilon)
        scale = (gamma * inv).astype("float32")
        shift = (beta - mean * gamma * inv).astype("float32")
        folded = self.fold_affine(value, scale, shift)
        if folded is not None:
            return folded
        params = [gamma, beta, mean, var]

        def fresh(order):
            bn = keras.layers.BatchNormalization(epsilon=layer.epsilon, dtype="float32", name=self.name(layer.name))
            return bn, [p[order] for p in params]

        channels = len(mean)
        actual = np.arange(channels) if value.perm is None else np.argsort(value.perm)
        bn, weights = fresh(actual)
        tensor = self.emit(bn, value.tensor, weights)

        def reorder(order):
            inner = self.try_reorder(value, order)
            if inner is None:
                return None
            bn, weights = fresh(order)
            return self.emit(bn, inner, weights)

        return _Value(tensor, value.perm, reorder=reorder)

    def lower_merge(self, layer, values):
        perms = [v.perm for v in values]
        same = all(
            (p is None and perms[0] is None) or (p is not None and perms[0] is not None and np.array_equal(p, perms[0]))
            for p in perms
        )
        if same:
            tensors, perm = [v.tensor for v in values], perms[0]
        else:
            tensors, perm = [self.materialize(v) for v in values], None
        return _Value(self.emit(self.clone(layer), tensors), perm)

    def lower_shuffle(self, layer, value):
        channels = value.tensor.shape[-1]
        groups = layer.groups
        per = channels // groups
        order = np.array([g * per + j for j in range(per) for g in range(groups)])
        perm = order if value.perm is None else value.perm[order]
        return _Value(value.tensor, perm)

    def lower_upsampling(self, layer, value):
        # RESHAPE+TILE (nearest UpSampling2D) is not accelerated; an integer
        # nearest resize is the same function and is.
        _channels_last(layer)
        h, w = value.tensor.shape[1:3]
        if h is None or w is None:
            return self.generic(layer, [value], (value.tensor,), {})[0]
        sh, sw = layer.size
        resize = keras.layers.Resizing(h * sh, w * sw, interpolation="nearest", name=self.name(layer.name))
        return self.per_channel(resize, value, fresh=lambda: keras.layers.Resizing(
            h * sh, w * sw, interpolation="nearest", name=self.name(layer.name)))

    # -- keras_effconv layers ------------------------------------------------

    def lower_hetconv(self, layer, value):
        _channels_last(layer)
        c_in, part, n = layer.input_channels, layer.part, layer.filters
        geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        bias = _np(layer.bias) if layer.bias is not None else np.zeros(n, "float32")
        if part == 1:
            kernel = _rows_for_actual(_np(layer.kernel), value.perm, axis=2)
            out = self.linear([_Term("conv", value.tensor, kernel, bias, layer.name, **geometry)])
            return self.activation(out, layer.activation, layer.name)
        cg, ng = c_in // part, n // part
        in_order = np.array([r + part * u for r in range(part) for u in range(cg)])
        out_order = np.array([r + part * t for r in range(part) for t in range(ng)])
        x = self.materialize(value, in_order)
        pointwise = _np(_core.gather_from_parts(layer._weights(), layer._pointwise_class_map))
        centres, centre_geometry = self.centre_input(
            x, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate, layer.name
        )
        terms = [
            _Term("conv", x, _np(layer.kernel), bias[out_order], f"{layer.name}_kxk", **geometry),
            _Term("conv", centres, pointwise, np.zeros(n, "float32"), f"{layer.name}_1x1", **centre_geometry),
        ]
        # Outputs come in residue-class order: natural channel j sits at np.argsort(out_order)[j].
        out = self.linear(terms, perm=np.argsort(out_order))
        return self.activation(out, layer.activation, layer.name)

    def lower_igc(self, layer, value):
        _channels_last(layer)
        geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        primary = _np(layer.primary_kernel)
        if layer.primary_groups == 1:
            x, primary = value.tensor, _rows_for_actual(primary, value.perm, axis=2)
        else:
            x = self.materialize(value)
        y = self.emit_term(_Term("conv", x, primary, np.zeros(primary.shape[3], "float32"), f"{layer.name}_primary", **geometry))
        # Secondary grouped 1x1 with both interleaves folded into one dense 1x1 kernel.
        secondary = _np(_core.gather_from_parts([layer.secondary_kernel], layer._secondary_map))
        bias = _np(layer.bias) if layer.bias is not None else np.zeros(layer.filters, "float32")
        out = self.linear([_Term("conv", y, secondary, bias, f"{layer.name}_secondary")])
        return self.activation(out, layer.activation, layer.name)

    def lower_compconv(self, layer, value):
        _channels_last(layer)
        name = layer.name
        geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        inner = dict(strides=1, padding="same", dilation_rate=layer.dilation_rate)
        kernels = [_np(k) for k in layer.recursive_kernels]
        zeros = lambda k: np.zeros(k.shape[3], "float32")  # noqa: E731
        first = _rows_for_actual(kernels[0], value.perm, axis=2)
        q = self.emit_term(_Term("conv", value.tensor, first, zeros(first), f"{name}_q1", **geometry))
        parts = []
        for i, channels in enumerate(layer._identity_channels):
            identity = self.materialize(value, channels, reorder=False)
            identity = self.subsample(identity, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate, name)
            x_i = self.emit(keras.layers.Concatenate(name=self.name(f"{name}_x{i + 1}")), [identity, q])
            parts.append(x_i)
            k = kernels[i + 1]
            q = self.emit_term(_Term("conv", x_i, k, zeros(k), f"{name}_q{i + 2}", **inner))
        parts.append(q)
        if layer.tailing_kernel is not None:
            k = _np(layer.tailing_kernel)
            parts.append(self.emit_term(_Term("conv", q, k, zeros(k), f"{name}_tail", **inner)))
        y = parts[0]
        if len(parts) > 1:
            y = self.emit(keras.layers.Concatenate(name=self.name(f"{name}_concat")), parts)
        # The final channel shuffle is never executed: it is carried as a permutation.
        perm = np.asarray(layer._order if layer.filters % 2 else _riffle(layer.filters))
        out = _Value(y, perm)
        if layer.bias is not None:
            bias_actual = np.empty(layer.filters, "float32")
            bias_actual[perm] = _np(layer.bias)
            ones = np.ones((1, 1, layer.filters, 1), "float32")
            out = self.linear([_Term("depthwise", y, ones, bias_actual, f"{name}_bias")], perm=perm)
        return self.activation(out, layer.activation, name)

    def projection(self, block, value, name):
        """A 1x1 projection (Conv2D or TopologicalProjection) as a dense CONV_2D."""
        kernel = _np(block.dense_kernel() if isinstance(block, eff.TopologicalProjection) else block.kernel)
        kernel = _rows_for_actual(kernel, value.perm, axis=2)
        bias = _np(block.bias) if block.bias is not None else np.zeros(kernel.shape[3], "float32")
        return self.linear([_Term("conv", value.tensor, kernel, bias, name)])

    def bottleneck(self, block, x, name):
        """SpatialBottleneck: depthwise s2 -> projection -> per-channel 2x2 s2 transposed conv."""
        kernel = _np(block.depthwise_kernel)
        y = self.emit_term(
            _Term("depthwise", x, kernel, np.zeros(kernel.shape[2], "float32"), f"{name}_dw", strides=2, padding="same")
        )
        y = self.projection(block.projection, _Value(y), f"{name}_projection").tensor
        filters = block.filters
        # Transposed conv == 4 copies, scaled per (tap, channel), then depth_to_space.
        copies = self.emit(keras.layers.Concatenate(name=self.name(f"{name}_copies")), [y] * 4)
        scale = _np(block.upsample_kernel).reshape(1, 1, 4 * filters, 1)
        bias = _np(block.bias) if block.bias is not None else np.zeros(filters, "float32")
        y = self.emit_term(_Term("depthwise", copies, scale, np.tile(bias, 4), f"{name}_upsample_scale"))
        y = self.emit(DepthToSpace(2, name=self.name(f"{name}_depth_to_space")), y)
        h, w = x.shape[1:3]
        if h is None or w is None:
            raise ValueError(f"optimize_for_inference: layer '{name}' needs static spatial sizes. Pass `input_shape`.")
        if y.shape[1] != h or y.shape[2] != w:
            y = self.emit(keras.layers.Cropping2D(((0, y.shape[1] - h), (0, y.shape[2] - w)), name=self.name(f"{name}_crop")), y)
        return y

    def lower_factorized(self, layer, value):
        _channels_last(layer)
        name = layer.name
        inner = dict(strides=1, padding="same", dilation_rate=layer.dilation_rate)
        first_geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
        for u, ((c, first, bottleneck, residual), block, depthwise) in enumerate(
            zip(layer._plan, layer.unit_blocks, layer._unit_depthwise)
        ):
            x = self.materialize(value)
            if bottleneck:
                out = _Value(self.bottleneck(block, x, f"{name}_unit{u}"))
            else:
                kernel = _np(depthwise)
                dw = self.emit_term(
                    _Term("depthwise", x, kernel, np.zeros(c, "float32"), f"{name}_unit{u}_dw",
                          **(first_geometry if first else inner))
                )
                out = self.projection(block, _Value(dw), f"{name}_unit{u}_projection")
            if residual:
                out = _Value(self.emit(keras.layers.Add(name=self.name(f"{name}_unit{u}_residual")), [out.tensor, x]))
            value = self.activation(out, layer.activation, f"{name}_unit{u}")
        return value

    # -- the clone_model call function ---------------------------------------

    def call(self, layer, *args, **kwargs):
        flat = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        node = None
        for candidate in getattr(layer, "_inbound_nodes", []):
            originals = candidate.input_tensors
            if len(originals) == len(flat) and all(
                self.image.get(id(o)) is a for o, a in zip(originals, flat)
            ):
                node = candidate
                break
        values = [self.values[id(a)] for a in flat]
        outputs = self.lower(layer, values, args, kwargs)
        originals = node.output_tensors if node is not None else [None] * len(outputs)
        results = []
        for value, original in zip(outputs, originals):
            if original is not None and id(original) in self.outputs:
                value = _Value(self.materialize(value))
            value = self.register(value)
            if original is not None:
                value.single_use = self.consumers.get(id(original), 0) == 1 and id(original) not in self.outputs
                self.image[id(original)] = value.tensor
            results.append(value.tensor)
        return results[0] if len(results) == 1 else results


def _elementwise(layer):
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "")
    return name not in ("softmax", "log_softmax")


def _renamed(config, name):
    config = dict(config)
    config["name"] = name
    return config


def _riffle(channels):
    half = channels // 2
    return [h * half + t for t in range(half) for h in range(2)]


def _rows_for_actual(kernel, perm, axis):
    """Kernel whose input rows follow a tensor held in permuted channel order."""
    if perm is None:
        return kernel
    out = np.empty_like(kernel)
    index = [slice(None)] * kernel.ndim
    index[axis] = perm
    out[tuple(index)] = kernel
    return out


def _check_target(target):
    if target not in TARGETS:
        raise ValueError(
            f"Invalid value for argument `target`: expected one of {TARGETS}. Received: target={target!r}"
        )
    return target


def _static_inputs(model, input_shape, batch_size):
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(
            "Invalid value for argument `batch_size`: expected a positive integer "
            f"(mobile runtimes need a static batch) or None. Received: batch_size={batch_size!r}"
        )
    inputs = _functional(model).inputs
    if input_shape is not None:
        if len(inputs) != 1:
            raise ValueError(
                f"Invalid value for argument `input_shape`: model '{model.name}' has "
                f"{len(inputs)} inputs; `input_shape` applies to single-input models only."
            )
        input_shape = tuple(input_shape)
        if len(input_shape) != len(inputs[0].shape) - 1 or any(
            not isinstance(d, (int, np.integer)) or d < 1 for d in input_shape
        ):
            raise ValueError(
                "Invalid value for argument `input_shape`: expected a per-sample shape of "
                f"{len(inputs[0].shape) - 1} positive integers like (224, 224, 3). "
                f"Received: input_shape={input_shape!r}"
            )
        shapes = [input_shape]
    else:
        shapes = [tuple(t.shape[1:]) for t in inputs]
        for t, shape in zip(inputs, shapes):
            if any(d is None for d in shape):
                raise ValueError(
                    f"Model '{model.name}' has input '{t.name}' with unknown size {tuple(t.shape)}: "
                    "pass `input_shape` (e.g. input_shape=(224, 224, 3)); mobile runtimes need static shapes."
                )
    for t, shape in zip(inputs, shapes):
        known = tuple(t.shape[1:])
        if any(k is not None and k != s for k, s in zip(known, shape)):
            raise ValueError(
                f"Invalid value for argument `input_shape`: {shape} does not match the "
                f"model's input shape {known}."
            )
    return [
        keras.Input(batch_shape=(None if batch_size is None else int(batch_size),) + tuple(int(d) for d in shape), dtype=t.dtype, name=t.name)
        for t, shape in zip(inputs, shapes)
    ]


def optimize_for_inference(model, target="gpu", input_shape=None, batch_size=1):
    """Returns an equivalent model made of ops that run natively on `target`.

    The result computes the same function as `model` (within float32
    round-off) with a static input shape `(batch_size, H, W, C)`, using only
    standard Keras layers plus `ChannelGather`/`DepthToSpace`: BatchNormalization
    folded into the preceding convolution, every keras_effconv layer lowered
    to its fastest exact form for `target`, grouped convolutions kept native
    only where the input and output channels per group are multiples of 4
    (GPU), channel shuffles and permutations folded into neighbouring
    kernels. See the module docstring for the exact forms. The weights are
    copied (the result shares nothing with `model`); it runs on every Keras
    backend and is what `export_litert` converts.

    Args:
        model: a built Functional or Sequential `keras.Model` with
            channels_last layers (nested Functional/Sequential models are
            inlined).
        target: `"gpu"` (default; mobile GPU delegates) or `"cpu"`
            (XNNPACK: grouped convolutions always stay native).
        input_shape: optional per-sample input shape, e.g. `(224, 224, 3)`;
            required when the model's spatial sizes are unknown.
        batch_size: int, the static batch size (default 1), or None for a
            dynamic batch (for fine-tuning, e.g. quantization-aware training).

    Returns:
        A new Functional `keras.Model`.

    Raises:
        ValueError: for a bad `target`, `input_shape` or `batch_size`, a
            subclassed model, a channels_first layer, or an unsupported
            layer (e.g. a `Lambda`), naming the layer.

    Example:

    >>> from keras_effconv.applications import EffResNet20
    >>> model = EffResNet20(input_shape=(28, 28, 1), classes=10, conv="hetconv")
    >>> fast = optimize_for_inference(model, target="gpu")
    >>> tuple(fast.input.shape)
    (1, 28, 28, 1)
    >>> any(isinstance(l, keras.layers.BatchNormalization) for l in fast.layers)
    False
    """
    _check_target(target)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r} of type {type(model).__name__}")
    functional = _functional(model)
    if not model.built:
        raise ValueError(f"`model` '{model.name}' is not built: call it on an input or build it first.")
    for layer in all_layers(model):
        _check_layer(layer)
    inputs = _static_inputs(model, input_shape, batch_size)
    rewriter = _Rewriter(target)
    rewriter.scan(functional)
    for original, new in zip(functional.inputs, inputs):
        rewriter.register(_Value(new))
        rewriter.image[id(original)] = new
        rewriter.names.add(new.name)
    return keras.models.clone_model(
        functional,
        input_tensors=keras.tree.pack_sequence_as(functional.input, inputs), clone_function=lambda layer: layer, call_function=rewriter.call
    )

"""The rewriter core behind `optimize_for_inference`: graph bookkeeping and algebra.

The core knows no conv method. It walks a Functional model (through
`keras.models.clone_model(call_function=...)`), hands every layer call to the
lowering rule registered for the layer's class (`keras_effconv.export.rules`)
and offers the rules a small set of emission helpers. What each step
preserves:

- every rewritten tensor is a `Value`: the tensor plus a lazy channel
  permutation (`logical[..., j] == tensor[..., perm[j]]`), so permutations
  are carried instead of executed; every helper returns values that equal the
  original layer outputs in *logical* channel order (within float32 round-off);
- `linear(terms)` emits a sum of convolution-like terms and remembers them,
  so a following per-channel affine map (BatchNormalization) can be folded
  into their kernels and biases (`fold_affine`) — exact in real arithmetic;
- `materialize(value, order)` returns a plain tensor holding the logical
  channels `order`: it first asks the producer to re-emit itself with
  permuted kernel columns (`reorder`), which adds no op, and emits a single
  GATHER only when that is impossible;
- a value is re-emitted or folded only when its original tensor has one
  consumer and is no model output (`single_use`), so no computation is
  duplicated and every model output is materialized in natural order;
- grouped convolutions are emitted natively only where the GPU delegate
  computes them correctly (channels per group multiples of 4, target "gpu"),
  else as depthwise or per-group convolutions: the same function and MACs.
"""

import numpy as np

import keras

from keras_effconv import _model_graph
from keras_effconv.export._layers import ChannelGather
from keras_effconv.export._layers import SpatialSubsample
from keras_effconv.export.rules import LoweringCall
from keras_effconv.export.rules import rule_for


def numpy_float32(x):
    """A weight or tensor as a float32 NumPy array (None stays None)."""
    return None if x is None else np.asarray(keras.ops.convert_to_numpy(x), dtype="float32")


def is_identity(order, size=None):
    """Whether `order` is `0, 1, ..., n-1` (of length `size` when given)."""
    order = np.asarray(order)
    return (size is None or len(order) == size) and np.array_equal(order, np.arange(len(order)))


def rows_for_actual(kernel, perm, axis):
    """`kernel` with its input rows moved so it reads a tensor held in permuted order `perm`."""
    if perm is None:
        return kernel
    out = np.empty_like(kernel)
    index = [slice(None)] * kernel.ndim
    index[axis] = perm
    out[tuple(index)] = kernel
    return out


def conv_geometry(layer):
    """The `strides`, `padding` and `dilation_rate` of a convolution-like layer."""
    return dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)


def unsupported(layer, why):
    """The ValueError for a layer the rewrite cannot lower, naming it."""
    return ValueError(
        f"optimize_for_inference: layer '{layer.name}' ({type(layer).__name__}) is not supported: {why}"
    )


def require_channels_last(layer):
    """Raises unless `layer` computes in channels_last (what LiteRT and mobile GPUs run)."""
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format != "channels_last":
        raise ValueError(
            f"optimize_for_inference: layer '{layer.name}' ({type(layer).__name__}) "
            f"uses data_format='{data_format}'; LiteRT and mobile GPUs need "
            "'channels_last'. Rebuild the model with channels_last layers."
        )


def is_elementwise(layer):
    """Whether an activation layer acts on each channel separately (not softmax)."""
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return name not in ("softmax", "log_softmax")


class Term:
    """One convolution-like producer whose output channels can be rescaled or reordered.

    Args:
        kind: `"conv"` (kernel `(kh, kw, C_in / groups, C_out)`),
            `"depthwise"` (`(kh, kw, C, multiplier)`) or `"dense"`
            (`(C_in, C_out)`).
        inputs: the (rewritten) tensor it reads.
        kernel, bias: NumPy arrays.
        name: base name of the emitted layer.
        **geometry: `strides`, `padding`, `dilation_rate`.
    """

    def __init__(self, kind, inputs, kernel, bias, name, **geometry):
        self.kind = kind
        self.inputs = inputs
        self.kernel = np.asarray(kernel, dtype="float32")
        self.bias = np.asarray(bias, dtype="float32")
        self.name = name
        self.geometry = geometry

    def scaled(self, scale, shift=None):
        """The term times `scale` per output channel (plus `shift`): exact."""
        if self.kind == "depthwise":
            c, m = self.kernel.shape[2:]
            kernel = self.kernel * scale.reshape(c, m)
        else:
            kernel = self.kernel * scale
        bias = self.bias * scale + (0.0 if shift is None else shift)
        return Term(self.kind, self.inputs, kernel, bias, self.name, **self.geometry)

    def reordered(self, order):
        """The term with output channels `order` (a column permutation or subset)."""
        return Term(self.kind, self.inputs, self.kernel[..., order], self.bias[order], self.name, **self.geometry)

    @property
    def dense(self):
        return self.kind == "dense" or (self.kind == "conv" and self.kernel.shape[2] == self.inputs.shape[-1])


class Value:
    """A rewritten tensor: `logical[..., j] == tensor[..., perm[j]]`.

    `terms` (a list of `Term` summed in `tensor`'s channel order) is set for
    linear producers, so a following BatchNormalization can fold into them.
    `reorder(order)` re-emits the value with channels `logical[order]`, or
    returns None. `single_use` is True when the original tensor has exactly
    one consumer and is no model output, so re-emitting it duplicates nothing.
    """

    def __init__(self, tensor, perm=None, terms=None, reorder=None):
        self.tensor = tensor
        self.perm = None if perm is None or is_identity(perm, tensor.shape[-1]) else np.asarray(perm)
        self.terms = terms
        self.reorder = reorder
        self.single_use = False


class Rewriter:
    """Rewrites one Functional model for `target` (`"gpu"` or `"cpu"`); see the module docstring."""

    numpy = staticmethod(numpy_float32)

    def __init__(self, target):
        self.target = target
        self.values = {}
        self.image = {}
        self.consumers = {}
        self.outputs = set()
        self.names = set()

    # -- bookkeeping ---------------------------------------------------------

    def scan(self, model):
        """Counts each tensor's consumers and marks model outputs (nested models included)."""
        model = _model_graph.functional_graph(model, "optimize_for_inference")
        for node in _model_graph.nodes_in_order(model):
            for tensor in node.input_tensors:
                self.consumers[id(tensor)] = self.consumers.get(id(tensor), 0) + 1
            if isinstance(node.operation, keras.Model):
                self.scan(node.operation)
                for inner in _model_graph.functional_graph(node.operation, "optimize_for_inference").outputs:
                    self.outputs.add(id(inner))
        for tensor in model.outputs:
            self.outputs.add(id(tensor))

    def name(self, base):
        """A layer name not used yet in the rewritten model."""
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
        """Records `value` as the rewrite of its tensor (one value per tensor)."""
        if id(value.tensor) in self.values and self.values[id(value.tensor)] is not value:
            tensor = self.emit(keras.layers.Identity(name=self.name("identity")), value.tensor)
            value = Value(tensor, value.perm, value.terms, value.reorder)
        self.values[id(value.tensor)] = value
        return value

    # -- emission helpers ----------------------------------------------------

    def native_grouping(self, in_per_group, out_per_group):
        """Whether a grouped CONV_2D with these channels per group runs right on the target.

        The GPU delegate computes grouped convs whose channels per group are not
        multiples of 4 wrongly (measured on the WebGPU accelerator); CPUs run any.
        """
        return self.target == "cpu" or (in_per_group % 4 == 0 and out_per_group % 4 == 0)

    def conv(self, x, kernel, bias, name, strides=1, padding="same", dilation_rate=1):
        """CONV_2D / DEPTHWISE_CONV_2D / per-group CONV_2Ds for a (grouped) kernel: the same function."""
        kh, kw, in_per_group, out_channels = kernel.shape
        groups = x.shape[-1] // in_per_group
        out_per_group = out_channels // groups
        if (kh, kw) == (1, 1) and strides not in (1, (1, 1)) and self.target == "gpu":
            # LiteRT's GPU delegate runs an int8 1x1 CONV_2D with stride > 1 as if its stride
            # were 1 (measured on the WebGPU accelerator): subsample first (a STRIDED_SLICE).
            x = self.emit(SpatialSubsample(strides, name=self.name(f"{name}_subsample")), x)
            strides, padding = 1, "valid"
        common = dict(strides=strides, padding=padding, dilation_rate=dilation_rate, dtype="float32")
        if groups > 1 and in_per_group == 1:
            if (kh, kw) == (1, 1) and out_per_group > 1 and self.target == "gpu" and strides in (1, (1, 1)):
                # LiteRT's GPU delegate computes a 1x1 DEPTHWISE_CONV_2D with depth multiplier > 1 wrongly
                # (measured on the WebGPU accelerator: IGCV1 L100M2's grouped shortcuts, max error 0.5),
                # while 3x3 ones are right: the same function as a 3x3 kernel that is zero off the centre.
                kernel = np.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
                kh, kw = 3, 3
                common["padding"] = "same"
            dw = kernel.reshape(kh, kw, groups, out_per_group)
            layer = keras.layers.DepthwiseConv2D((kh, kw), depth_multiplier=out_per_group, name=self.name(name), **common)
            return self.emit(layer, x, [dw, bias])
        if groups == 1 or self.native_grouping(in_per_group, out_per_group):
            layer = keras.layers.Conv2D(out_channels, (kh, kw), groups=groups, name=self.name(name), **common)
            return self.emit(layer, x, [kernel, bias])
        # The GPU delegate computes grouped convs with channels per group not a
        # multiple of 4 wrongly: one dense conv per group, exact and MAC-exact.
        parts = []
        for g in range(groups):
            indices = range(g * in_per_group, (g + 1) * in_per_group)
            xg = self.emit(ChannelGather(indices, name=self.name(f"{name}_in{g}")), x)
            cols = slice(g * out_per_group, (g + 1) * out_per_group)
            layer = keras.layers.Conv2D(out_per_group, (kh, kw), name=self.name(f"{name}_g{g}"), **common)
            parts.append(self.emit(layer, xg, [kernel[..., cols], bias[cols]]))
        return self.emit(keras.layers.Concatenate(name=self.name(f"{name}_concat")), parts)

    def emit_term(self, term):
        """Emits one `Term` and returns its output tensor."""
        if term.kind == "conv":
            return self.conv(term.inputs, term.kernel, term.bias, term.name, **term.geometry)
        if term.kind == "depthwise":
            m = term.kernel.shape[3]
            layer = keras.layers.DepthwiseConv2D(
                term.kernel.shape[:2], depth_multiplier=m, dtype="float32", name=self.name(term.name), **term.geometry
            )
            return self.emit(layer, term.inputs, [term.kernel, term.bias])
        layer = keras.layers.Dense(term.kernel.shape[1], dtype="float32", name=self.name(term.name))
        return self.emit(layer, term.inputs, [term.kernel, term.bias])

    def linear(self, terms, perm=None):
        """The sum of `terms` (held in order `perm`), as a value BN can fold into."""
        outputs = [self.emit_term(t) for t in terms]
        tensor = outputs[0]
        if len(outputs) > 1:
            tensor = self.emit(keras.layers.Add(name=self.name(f"{terms[0].name}_sum")), outputs)
        reorder = None
        if perm is None and len(terms) == 1 and terms[0].dense:
            term = terms[0]
            reorder = lambda order: self.emit_term(term.reordered(order))  # noqa: E731
        return Value(tensor, perm, terms, reorder)

    def fold_affine(self, value, scale, shift):
        """`value * scale + shift` (per logical channel) folded into its producer, or None."""
        if not value.terms or not value.single_use:
            return None
        if value.perm is not None:
            scale_actual, shift_actual = np.empty_like(scale), np.empty_like(shift)
            scale_actual[value.perm], shift_actual[value.perm] = scale, shift
            scale, shift = scale_actual, shift_actual
        terms = [t.scaled(scale, shift if i == 0 else None) for i, t in enumerate(value.terms)]
        return self.linear(terms, value.perm)

    def try_reorder(self, value, order):
        """The producer re-emitted with channels `logical[order]`, or None."""
        if value.single_use and value.reorder is not None:
            return value.reorder(order)
        return None

    def materialize(self, value, order=None, reorder=True):
        """A tensor holding `logical[..., order]` (all channels when None)."""
        channels = len(value.perm) if value.perm is not None else value.tensor.shape[-1]
        order = np.arange(channels) if order is None else np.asarray(order)
        index = order if value.perm is None else value.perm[order]
        if is_identity(index, value.tensor.shape[-1]):
            return value.tensor
        if reorder:
            tensor = self.try_reorder(value, order)
            if tensor is not None:
                return tensor
        return self.emit(ChannelGather(index.tolist(), name=self.name("channel_gather")), value.tensor)

    def activation(self, value, activation, name):
        """Applies a Keras activation function (no-op for linear); elementwise ones keep the permutation."""
        if activation is None or activation is keras.activations.linear:
            return value
        layer = keras.layers.Activation(activation, dtype="float32", name=self.name(f"{name}_act"))
        if is_elementwise(layer):
            return self.per_channel(layer, value)
        return Value(self.emit(layer, self.materialize(value)))

    def per_channel(self, layer, value, fresh=None):
        """Applies an elementwise / per-channel layer; the permutation follows it."""
        tensor = self.emit(layer, value.tensor)
        fresh = fresh or (lambda: self.clone(layer))

        def reorder(order):
            inner = self.try_reorder(value, order)
            return None if inner is None else self.emit(fresh(), inner)

        return Value(tensor, value.perm, reorder=reorder)

    def centre_input(self, x, layer):
        """`(input, 1x1 geometry)` that read the centre tap of every window of `layer`."""
        try:
            crop = layer.centre_tap_crop(x.shape)
        except ValueError:
            raise ValueError(
                f"optimize_for_inference: layer '{layer.name}' is strided or 'valid'; "
                "its exact inference form needs static spatial sizes. Pass `input_shape`."
            ) from None
        if crop is None:
            return x, dict(strides=1, padding="same")
        if any(c < 0 for pair in crop for c in pair):
            raise ValueError(f"optimize_for_inference: cannot sample the window centres of layer '{layer.name}'.")
        if any(c for pair in crop for c in pair):
            x = self.emit(keras.layers.Cropping2D(crop, name=self.name(f"{layer.name}_centres")), x)
        return x, dict(strides=layer.strides, padding="valid")

    def subsample(self, x, layer):
        """The centre taps of `layer`'s windows as a tensor (crop + strided 1x1 pooling)."""
        x, geometry = self.centre_input(x, layer)
        if geometry["strides"] in (1, (1, 1)):
            return x
        pool = keras.layers.MaxPooling2D(1, strides=geometry["strides"], name=self.name(f"{layer.name}_subsample"))
        return self.emit(pool, x)

    def clone(self, layer):
        """A fresh copy of `layer` (same config, new unique name, no weights)."""
        config = dict(layer.get_config())
        config["name"] = self.name(layer.name)
        return layer.__class__.from_config(config)

    def generic(self, call):
        """Any other layer: a clone with copied weights, inputs in natural channel order."""
        tensors = {id(v.tensor): self.materialize(v) for v in call.inputs}
        new_args, new_kwargs = keras.tree.map_structure(
            lambda a: tensors.get(id(a), a) if isinstance(a, keras.KerasTensor) else a, (call.args, call.kwargs)
        )
        clone = self.clone(call.layer)
        outputs = clone(*new_args, **new_kwargs)
        if call.layer.weights:
            clone.set_weights(call.layer.get_weights())
        return [Value(t) for t in keras.tree.flatten(outputs)]

    # -- walking the graph ---------------------------------------------------

    def inline(self, model, values):
        """Rewrites a nested model's layers in place of the model."""
        functional = _model_graph.functional_graph(model, "optimize_for_inference")
        for inner, value in zip(functional.inputs, values):
            self.image[id(inner)] = value.tensor
        outputs = _model_graph.run_graph(functional, [v.tensor for v in values], self.call)
        return [self.values[id(t)] for t in keras.tree.flatten(outputs)]

    def lower(self, layer, values, args, kwargs):
        """The rewritten outputs of one layer call: a nested model inlined, else its rule."""
        if isinstance(layer, keras.Model):
            return self.inline(layer, values)
        rule = rule_for(layer)
        call = LoweringCall(layer, values, args, kwargs)
        outputs = rule(self, call) if rule is not None else self.generic(call)
        return outputs if isinstance(outputs, (list, tuple)) else [outputs]

    def call(self, layer, *args, **kwargs):
        """The `clone_model` call function: lowers one call and records its outputs."""
        flat = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        node = None
        for candidate in _model_graph.inbound_nodes(layer):
            originals = candidate.input_tensors
            if len(originals) == len(flat) and all(self.image.get(id(o)) is a for o, a in zip(originals, flat)):
                node = candidate
                break
        values = [self.values[id(a)] for a in flat]
        outputs = self.lower(layer, values, args, kwargs)
        originals = node.output_tensors if node is not None else [None] * len(outputs)
        results = []
        for value, original in zip(outputs, originals):
            if original is not None and id(original) in self.outputs:
                value = Value(self.materialize(value))
            value = self.register(value)
            if original is not None:
                value.single_use = self.consumers.get(id(original), 0) == 1 and id(original) not in self.outputs
                self.image[id(original)] = value.tensor
            results.append(value.tensor)
        return results[0] if len(results) == 1 else results

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

How each layer is lowered is its method's rule in `export/lowering/`
(registered with `keras_effconv.export.lowering_rule`); the graph
bookkeeping and the permutation/BN-folding algebra are the rewriter core,
`export/rewriter.py`.

Channel permutations (HetConv's residue classes, CompConv's and
ChannelShuffle's shuffles) are carried lazily: a tensor may be held in a
permuted channel order, per-channel layers (BN, activations, padding,
pooling) just follow it, and the next dense convolution or Dense layer
absorbs it into its kernel rows. Where a permutation is needed before a
producer that can emit its channels in any order (e.g. the 1x1 convolution
in front of a HetConv), that producer is re-emitted with permuted kernel
columns. Only when neither is possible is a single GATHER emitted.
"""

import keras

from keras_effconv import _model_graph
from keras_effconv import _validation
from keras_effconv.export import lowering  # noqa: F401  (registers the built-in rules)
from keras_effconv.export.rewriter import Rewriter
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rewriter import unsupported
from keras_effconv.export.rules import rule_for

TARGETS = ("gpu", "cpu")


def _check_layer(layer):
    """Raises for layers the rewrite cannot turn into verified builtin ops."""
    if isinstance(layer, keras.layers.Lambda):
        raise unsupported(
            layer,
            "a Lambda layer holds arbitrary Python code that cannot be saved "
            "safely, converted in a separate process or checked for mobile "
            "GPUs. Replace it by built-in layers or a registered custom layer "
            "made of keras.ops.",
        )
    if isinstance(layer, keras.Model) or rule_for(layer) is not None:
        return
    if type(layer).__module__.startswith("keras."):
        return
    raise unsupported(
        layer,
        "no export lowering rule is registered for it. Register one with "
        "`keras_effconv.export.lowering_rule` (only Keras built-in layers are "
        "copied as they are).",
    )


def _functional(model):
    return _model_graph.functional_graph(model, "optimize_for_inference")


def _check_target(target):
    return _validation.check_choice(target, "target", TARGETS)


def _static_inputs(model, input_shape, batch_size):
    batch_size = _validation.check_int(
        batch_size, "batch_size", allow_none=True, hint="mobile runtimes need a static batch"
    )
    inputs = _functional(model).inputs
    if input_shape is not None:
        if len(inputs) != 1:
            raise _validation.invalid_value(
                "input_shape",
                f"`input_shape` applies to single-input models only; model '{model.name}' has {len(inputs)} inputs",
                input_shape,
            )
        input_shape = tuple(input_shape)
        rank = len(inputs[0].shape) - 1
        if len(input_shape) != rank or not all(_validation.is_int(d) and d >= 1 for d in input_shape):
            raise _validation.invalid_value(
                "input_shape",
                f"expected a per-sample shape of {rank} positive integers like (224, 224, 3)",
                input_shape,
            )
        shapes = [input_shape]
    else:
        shapes = [tuple(t.shape[1:]) for t in inputs]
        for t, shape in zip(inputs, shapes):
            if any(d is None for d in shape):
                raise _validation.invalid_value(
                    "input_shape",
                    f"model '{model.name}' has input '{t.name}' with unknown size {tuple(t.shape)}, and mobile "
                    "runtimes need static shapes: pass one, e.g. input_shape=(224, 224, 3)",
                    input_shape,
                )
    for t, shape in zip(inputs, shapes):
        known = tuple(t.shape[1:])
        if any(k is not None and k != s for k, s in zip(known, shape)):
            raise _validation.invalid_value(
                "input_shape", f"expected a shape that matches the model's input shape {known}", shape
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
    for layer in _model_graph.all_layers(model):
        _check_layer(layer)
    inputs = _static_inputs(model, input_shape, batch_size)
    rewriter = Rewriter(target)
    rewriter.scan(functional)
    for original, new in zip(functional.inputs, inputs):
        rewriter.register(Value(new))
        rewriter.image[id(original)] = new
        rewriter.names.add(new.name)
    return keras.models.clone_model(
        functional,
        input_tensors=keras.tree.pack_sequence_as(functional.input, inputs), clone_function=lambda layer: layer, call_function=rewriter.call
    )

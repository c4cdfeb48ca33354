"""Expand depthwise separable pairs into regular convolutions (He et al., arXiv 1910.09455).

The paper's recipe trains a network whose depthwise + pointwise pairs are
each one regular `k x k` convolution, then decomposes it back
(`depthwise_decompose`) to the separable structure and fine-tunes.
`expand_separable` builds the network it trains, from the separable one.

A pair is a `DepthwiseConv2D` (kernel `D`, `(kh, kw, M, r)`, bias `d` or
none, no activation) whose output feeds only a `1 x 1` `Conv2D` (`groups=1`,
stride 1, kernel `P`, `(1, 1, M r, N)`, bias `p` or none), possibly through
one `BatchNormalization` over the channels. In inference the
BatchNormalization is the affine map `z -> s z + h` per channel
(`s = gamma / sqrt(moving_variance + epsilon)`,
`h = beta - moving_mean * s`), so the pair computes

    y_n = sum_{m, j} P[m r + j, n] s_{m r + j} (D[:, :, m, j] * x_m) + b_n,
    b_n = p_n + sum_c P[c, n] (s_c d_c + h_c),

i.e. the `k x k` convolution with kernel
`W[:, :, m, n] = sum_j D[:, :, m, j] s_{m r + j} P[m r + j, n]` (per input
channel a rank-`r` block: exactly what `depthwise_decompose` with
`rank=r` reconstructs) and bias `b`. It takes the depthwise conv's stride,
padding and dilation and the pointwise conv's activation, regularizers and
kernel initializer (for training from scratch).

Where the bias goes: when the pointwise conv has no bias and no activation
and feeds only a `BatchNormalization` (ShuffleNet V2, MobileNets), `b` is
folded into that layer's `moving_mean` (`BN(z + b)` with mean `mu` equals
`BN(z)` with mean `mu - b`; in training BN subtracts the batch mean, so the
bias would have no effect there anyway) and the expanded conv has no bias,
exactly the conv + BN + ReLU structure the paper trains. Otherwise the
expanded conv carries `b` (`use_bias=True`).

The other direction is `depthwise_decompose(..., insert_batchnorm=True)`: it
puts a BatchNormalization back between the depthwise and the pointwise conv,
initialised as the identity in inference with the statistics of the
depthwise outputs on the given data (so the model computes the same function
in inference and nearly the same in training, where BN normalises with batch
statistics); the folded bias stays in the following BN. Expanding and
decomposing with rank 1 thus returns a model with the original layer types,
shapes, MACs and parameters that computes the original function.

Only the model's own graph is searched (pairs inside nested models are not
expanded); equivalence holds in inference.
"""

import collections
import dataclasses

import numpy as np

import keras

from keras_effconv import _model_graph
from keras_effconv import _progress
from keras_effconv import _validation
from keras_effconv.decompose import _common
from keras_effconv.decompose import _graph
from keras_effconv.decompose import _stats

_NONLINEAR = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
)


@dataclasses.dataclass(frozen=True)
class SeparablePair:
    """One depthwise/pointwise pair and the convolution that replaced it.

    Attributes:
        depthwise: name of the `DepthwiseConv2D`.
        batchnorm: name of the BatchNormalization between the two, or None.
        pointwise: name of the `1 x 1` `Conv2D`.
        expanded: name of the regular `Conv2D` in the expanded model.
        folded_into: name of the BatchNormalization after the pair that took
            its bias into its moving mean, or None.
    """

    depthwise: str
    batchnorm: str
    pointwise: str
    expanded: str
    folded_into: str = None


@dataclasses.dataclass
class _Pair:
    depthwise: object
    batchnorm: object
    pointwise: object
    following: object  # BatchNormalization taking the bias, or None


def _is_channel_batchnorm(layer, data_format):
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return list(axis) in ([3], [-1]) if data_format == "channels_last" else list(axis) == [1]


def _is_linear(activation):
    return activation is None or activation is keras.activations.linear


class _Graph:
    """Who consumes each tensor of a Functional graph, and how often each layer is called."""

    def __init__(self, model):
        graph = _model_graph.functional_graph(model, "`expand_separable`")
        self.nodes = _model_graph.nodes_in_order(graph)
        self.consumers = collections.defaultdict(list)
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers[id(tensor)].append(node.operation)
        self.outputs = {id(t) for t in graph.outputs}
        self.calls = collections.Counter(id(node.operation) for node in self.nodes)
        self.node_of = {id(node.operation): node for node in self.nodes}

    def only_consumer(self, layer):
        """The one layer reading `layer`'s output, or None (several, none, or a model output)."""
        output = self.node_of[id(layer)].output_tensors[0]
        if id(output) in self.outputs or len(self.consumers[id(output)]) != 1:
            return None
        consumer = self.consumers[id(output)][0]
        return consumer if self.calls[id(consumer)] == 1 else None


def _classify(graph, dw):
    """`(pair, None)`, or `(None, (reason, nonlinear))` for a depthwise conv that is no pair."""
    if graph.calls[id(dw)] != 1:
        return None, ("it is called more than once (a shared layer)", False)
    if not _is_linear(dw.activation):
        return None, (f"its activation {dw.activation.__name__!r} sits between it and the 1x1 convolution", True)
    nxt = graph.only_consumer(dw)
    batchnorm = None
    if nxt is not None and _is_channel_batchnorm(nxt, dw.data_format):
        batchnorm, nxt = nxt, graph.only_consumer(nxt)
    if nxt is None:
        return None, ("its output (after BatchNormalization) has several consumers or is a model output", False)
    if isinstance(nxt, _NONLINEAR):
        return None, (f"'{nxt.name}' ({type(nxt).__name__}) sits between it and the 1x1 convolution", True)
    if not (
        type(nxt) is keras.layers.Conv2D
        and tuple(nxt.kernel_size) == (1, 1)
        and tuple(nxt.strides) == (1, 1)
        and nxt.groups == 1
        and nxt.data_format == dw.data_format
        and not getattr(nxt, "lora_enabled", False)
    ):
        return None, (f"it feeds '{nxt.name}' ({type(nxt).__name__}), not a 1x1 Conv2D with stride 1 and groups=1",
                      False)
    following = None
    if not nxt.use_bias and _is_linear(nxt.activation):
        candidate = graph.only_consumer(nxt)
        if candidate is not None and _is_channel_batchnorm(candidate, nxt.data_format):
            following = candidate
    return _Pair(dw, batchnorm, nxt, following), None


def _find_pairs(model, layers):
    graph = _Graph(model)
    depthwise = [n.operation for n in graph.nodes if type(n.operation) is keras.layers.DepthwiseConv2D]
    if layers is None:
        selected, named = depthwise, False
    else:
        names = [layer if isinstance(layer, str) else getattr(layer, "name", layer) for layer in
                 ([layers] if isinstance(layers, (str, keras.layers.Layer)) else list(layers))]
        if not names:
            raise _validation.invalid_value("layers", "expected None or a non-empty list of layer names", layers)
        by_name = {layer.name: layer for layer in depthwise}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise _validation.invalid_value(
                "layers",
                f"expected names of DepthwiseConv2D layers of model '{model.name}' ({sorted(by_name)})",
                received=f"{missing}",
            )
        selected, named = [by_name[name] for name in names], True
    pairs, skipped = [], []
    for dw in selected:
        pair, problem = _classify(graph, dw)
        if pair is not None:
            pairs.append(pair)
            continue
        reason, nonlinear = problem
        if nonlinear or named:
            raise _validation.invalid_value(
                "model",
                "every selected DepthwiseConv2D must feed a 1x1 Conv2D linearly (optionally through one "
                "BatchNormalization), so that the pair is one convolution; pass `layers=` to choose others",
                received=f"layer '{dw.name}': {reason}",
            )
        skipped.append(f"'{dw.name}': {reason}")
    if not pairs:
        raise _validation.invalid_value(
            "model",
            "expected a model with at least one DepthwiseConv2D feeding a 1x1 Conv2D (a depthwise/pointwise pair)",
            received=f"model '{model.name}' without such pairs"
            + (f" ({'; '.join(skipped)})" if skipped else " (it has no DepthwiseConv2D)"),
        )
    return pairs


def _affine(batchnorm, channels):
    """Per-channel `(scale, shift)` of a BatchNormalization in inference (identity for None)."""
    if batchnorm is None:
        return np.ones(channels), np.zeros(channels)
    mean = _stats.to_numpy(batchnorm.moving_mean).astype(np.float64)
    variance = _stats.to_numpy(batchnorm.moving_variance).astype(np.float64)
    gamma = _stats.to_numpy(batchnorm.gamma).astype(np.float64) if batchnorm.scale else 1.0
    beta = _stats.to_numpy(batchnorm.beta).astype(np.float64) if batchnorm.center else 0.0
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    return scale, beta - mean * scale


def expanded_weights(depthwise_kernel, depthwise_bias, scale, shift, pointwise_kernel, pointwise_bias):
    """The kernel and bias of the regular convolution equal to depthwise -> affine -> pointwise.

    Args:
        depthwise_kernel: `(kh, kw, M, r)` array.
        depthwise_bias: `(M r,)` array or None.
        scale: `(M r,)` per-channel scale between the two (BatchNormalization in inference).
        shift: `(M r,)` per-channel shift between the two.
        pointwise_kernel: `(1, 1, M r, N)` array.
        pointwise_bias: `(N,)` array or None.

    Returns:
        `(kernel, bias)`: `(kh, kw, M, N)` and `(N,)` float64 arrays (see the
        module docstring for the formula).
    """
    kh, kw, m, r = depthwise_kernel.shape
    p = np.asarray(pointwise_kernel, np.float64)[0, 0]  # (M r, N)
    scaled = (np.asarray(scale, np.float64)[:, None] * p).reshape(m, r, -1)
    kernel = np.einsum("hwmj,mjn->hwmn", np.asarray(depthwise_kernel, np.float64), scaled)
    channel_bias = np.asarray(shift, np.float64)
    if depthwise_bias is not None:
        channel_bias = channel_bias + np.asarray(scale, np.float64) * np.asarray(depthwise_bias, np.float64)
    bias = channel_bias @ p
    if pointwise_bias is not None:
        bias = bias + np.asarray(pointwise_bias, np.float64)
    return kernel, bias


@_progress.closes_bars
def expand_separable(model, layers=None, *, verbose="auto"):
    """Replaces depthwise/pointwise pairs by single regular convolutions computing the same function.

    Every selected `DepthwiseConv2D` that feeds a `1 x 1` `Conv2D` with no
    nonlinearity in between (optionally through one BatchNormalization)
    becomes one `k x k` `Conv2D` named `<depthwise name>_expanded`, with the
    exact composed kernel: the structure He et al. (arXiv 1910.09455) train
    before decomposing back with `depthwise_decompose(...,
    insert_batchnorm=True)`. How the BatchNormalizations are handled in both
    directions, and the formula, are in the module docstring of
    `keras_effconv.decompose.expand`. Every other layer is a fresh copy with
    the same weights; the input model is never modified. To train the
    expanded structure from scratch, re-initialise it
    (`keras.models.clone_model(expanded)` draws fresh weights).

    Args:
        model: a built Functional or Sequential `keras.Model`.
        layers: None (every `DepthwiseConv2D` that forms a pair; those that
            cannot, e.g. followed by an addition, are left as they are) or a
            list of `DepthwiseConv2D` names, each of which must form a pair.
        verbose: 0 (silent), 1 (a progress bar over the pairs), 2 (one
            line when done) or `"auto"` (1 when standard output is a
            terminal or a notebook, else 0), as in `model.fit`.

    Returns:
        `(expanded_model, pairs)`: the new `keras.Model` (not compiled) and a
        list of `SeparablePair`, in graph order.

    Raises:
        ValueError: for a subclassed or unbuilt model; a model without
            depthwise/pointwise pairs; a selected depthwise conv with an
            activation or a nonlinearity between it and the `1 x 1` conv
            (named in the message); or a `layers` entry that is not a
            `DepthwiseConv2D` of the model or forms no pair; `verbose`
            other than 0, 1, 2 or `"auto"`.

    Example:

    >>> inputs = keras.Input((8, 8, 4))
    >>> x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    >>> x = keras.layers.BatchNormalization(name="dw_bn")(x)
    >>> outputs = keras.layers.Conv2D(6, 1, name="pw")(x)
    >>> expanded, pairs = expand_separable(keras.Model(inputs, outputs))
    >>> [layer.name for layer in expanded.layers[1:]], pairs[0].pointwise
    (['dw_expanded'], 'pw')
    """
    _graph.check_model(model)
    verbose = _progress.check_verbose(verbose)
    pairs = _find_pairs(model, layers)
    taken = _graph.all_layer_names(model)
    chains, results = {}, []
    progress = _progress.Progress(
        f"expand_separable: composing {len(pairs)} depthwise/pointwise pairs", len(pairs), verbose, "pair"
    )
    for pair in progress.iterate(pairs):
        dw, bn, pw, following = pair.depthwise, pair.batchnorm, pair.pointwise, pair.following
        scale, shift = _affine(bn, dw.kernel.shape[2] * dw.kernel.shape[3])
        kernel, bias = expanded_weights(
            _stats.to_numpy(dw.kernel),
            _stats.to_numpy(dw.bias) if dw.use_bias else None,
            scale,
            shift,
            _stats.to_numpy(pw.kernel),
            _stats.to_numpy(pw.bias) if pw.use_bias else None,
        )
        fold = following is not None
        conv = keras.layers.Conv2D(
            pw.filters,
            dw.kernel_size,
            strides=dw.strides,
            padding=dw.padding,
            data_format=dw.data_format,
            dilation_rate=dw.dilation_rate,
            activation=pw.activation,
            use_bias=not fold,
            kernel_initializer=_graph.PlaceholderZeros(),
            kernel_regularizer=pw.kernel_regularizer,
            bias_regularizer=pw.bias_regularizer,
            activity_regularizer=pw.activity_regularizer,
            bias_constraint=pw.bias_constraint,
            name=_graph.unique_name(f"{dw.name}_expanded", taken),
            dtype=pw.dtype_policy,
            trainable=dw.trainable and pw.trainable,
        )
        chains[id(dw)] = [conv]
        chains[id(pw)] = []
        if bn is not None:
            chains[id(bn)] = []
        new_following = None
        if fold:
            new_following = keras.layers.BatchNormalization.from_config(following.get_config())
            chains[id(following)] = [new_following]
        results.append((pair, conv, kernel, bias, new_following))
    progress.finish()

    new_model, _, _, _ = _graph.rebuild(model, lambda layer: chains.get(id(layer)), "`expand_separable`")
    described = []
    for pair, conv, kernel, bias, new_following in results:
        pw = pair.pointwise
        if new_following is None:
            _common.set_conv_weights(conv, kernel, bias)
        else:
            _common.set_conv_weights(conv, kernel)
            new_following.set_weights(pair.following.get_weights())
            mean = _stats.to_numpy(pair.following.moving_mean).astype(np.float64)
            new_following.moving_mean.assign((mean - bias).astype(new_following.moving_mean.dtype))
        conv.kernel_initializer = _common.copy_initializer(pw.kernel_initializer)
        conv.bias_initializer = _common.copy_initializer(pw.bias_initializer)
        described.append(
            SeparablePair(
                depthwise=pair.depthwise.name,
                batchnorm=None if pair.batchnorm is None else pair.batchnorm.name,
                pointwise=pw.name,
                expanded=conv.name,
                folded_into=None if new_following is None else pair.following.name,
            )
        )
    return new_model, described

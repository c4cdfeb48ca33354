"""Shared steps of the depthwise and channel decompositions."""

import numpy as np

import keras

from keras_effconv import _validation
from keras_effconv.decompose import _graph
from keras_effconv.decompose import _stats
from keras_effconv.decompose.report import DecompositionReport
from keras_effconv.decompose.report import LayerReport


def ineligibility(layer):
    """Why `layer` cannot be decomposed, or None if it can."""
    if type(layer) is not keras.layers.Conv2D:
        return f"it is a {type(layer).__name__}, not a keras.layers.Conv2D"
    if layer.groups != 1:
        return f"it has groups={layer.groups} (only groups=1 is decomposed)"
    if layer.kernel_size[0] * layer.kernel_size[1] == 1:
        return "its kernel is 1x1 (only k x k kernels with k > 1 are decomposed)"
    return None


def select_layers(model, layers):
    """The Conv2D layers to decompose, validated (order: `model.layers`, depth first)."""
    selected = _select(model, layers)
    check_finite_weights(model, selected)
    return selected


def _select(model, layers):
    leaves = _graph.leaf_layers(model)
    eligible = [layer for layer in leaves if ineligibility(layer) is None]
    if layers is None:
        if not eligible:
            raise _validation.invalid_value(
                "model",
                "expected a model with at least one keras.layers.Conv2D with groups=1 and a kernel "
                "larger than 1x1",
                received=f"model '{model.name}', which has no layer that can be decomposed",
            )
        return eligible
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise _validation.invalid_value("layers", "expected None or a list of layer names or layers", layers) from None
    if not layers:
        raise _validation.invalid_value("layers", "expected None or a non-empty list of layer names or layers", layers)
    names = [layer.name for layer in eligible]
    selected = []
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            matches = [layer for layer in leaves if layer is item]
            label = item.name
        elif isinstance(item, str):
            matches = [layer for layer in leaves if layer.name == item]
            label = item
        else:
            raise _validation.invalid_value(
                "layers", "entries must be layer names or layers", received=f"the entry {item!r}"
            )
        if not matches:
            raise _validation.invalid_value(
                "layers",
                f"model '{model.name}' has no layer {label!r}; layers that can be decomposed: {names}",
                received=f"the entry {label!r}",
            )
        if len(matches) > 1:
            raise _validation.invalid_value(
                "layers",
                f"the name {label!r} is used by several layers of nested models; pass the layer objects instead",
                received=f"the entry {label!r}",
            )
        reason = ineligibility(matches[0])
        if reason is not None:
            raise _validation.invalid_value(
                "layers",
                f"layer {label!r} cannot be decomposed because {reason}; layers that can be decomposed: {names}",
                received=f"the entry {label!r}",
            )
        if all(matches[0] is not s for s in selected):
            selected.append(matches[0])
    return selected


def check_finite_weights(model, layers):
    """Refuses layers whose weights hold NaN or inf (the SVD would fail with "SVD did not converge")."""
    for layer in layers:
        for weight in layer.weights:
            values = _stats.to_numpy(weight)
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                raise _validation.invalid_value(
                    "model",
                    f"expected finite weights in the layers to decompose, but the weights of layer '{layer.name}' "
                    f"contain NaN or inf ({bad} of {values.size} values of '{weight.name}'; was it trained "
                    "with a diverging loss?)",
                    received=f"model '{model.name}'",
                )


def check_finite_statistics(layer, *arrays):
    """Refuses NaN/inf statistics of `layer`'s inputs or outputs on the data."""
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise _validation.invalid_value(
            "data",
            f"expected finite inputs and outputs of layer '{layer.name}' on the data, but they contain NaN or inf: "
            "the data is finite, so a layer before it produces them (check the weights of the earlier layers, "
            "e.g. BatchNormalization moving statistics)",
            received=f"data whose statistics at layer '{layer.name}' are not finite",
        )


def output_pixels(model, layers):
    """`{id(layer): output positions summed over all its calls, or None}` for conv layers."""
    result = {id(layer): 0 for layer in layers}
    for layer, _, out_shape in _graph.call_shapes(model):
        key = id(layer)
        if key in result and result[key] is not None:
            spatial = out_shape[1:3] if layer.data_format == "channels_last" else out_shape[2:4]
            result[key] = None if any(s is None for s in spatial) else result[key] + int(np.prod(spatial))
    return result


def copy_initializer(initializer):
    # A new object (as Keras' own layers do), so seeded initializers are not shared.
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


def pointwise_successor(conv, filters, name):
    """The `1 x 1` Conv2D that ends a decomposed `conv`: it takes over its bias,
    activation, regularizers, constraint, dtype policy and trainability.

    Args:
        conv: the `Conv2D` being replaced.
        filters: output channels (the original's).
        name: the new layer's (unique) name.

    Returns:
        An unbuilt `keras.layers.Conv2D` with placeholder weights (see
        `finish_replacement`).
    """
    return keras.layers.Conv2D(
        filters,
        1,
        data_format=conv.data_format,
        activation=conv.activation,
        use_bias=conv.use_bias,
        kernel_initializer=_graph.PlaceholderZeros(),
        kernel_regularizer=conv.kernel_regularizer,
        bias_regularizer=conv.bias_regularizer,
        activity_regularizer=conv.activity_regularizer,
        bias_constraint=conv.bias_constraint,
        name=name,
        dtype=conv.dtype_policy,
        trainable=conv.trainable,
    )


def finish_replacement(conv, chain):
    """Gives the replacement layers the original's initializers (see below).

    They are created with placeholder initializers because their weights
    are set right away (initialising every new shape compiles on JAX); their
    configs then name the original conv's initializers, which is what a
    re-initialisation of the new model should use.
    """
    first, last = chain[0], chain[-1]
    if isinstance(first, keras.layers.DepthwiseConv2D):
        first.depthwise_initializer = copy_initializer(conv.kernel_initializer)
    else:
        first.kernel_initializer = copy_initializer(conv.kernel_initializer)
    last.kernel_initializer = copy_initializer(conv.kernel_initializer)
    last.bias_initializer = copy_initializer(conv.bias_initializer)


_BATCHNORM_OPTIONS = ("momentum", "epsilon", "center", "scale")


def check_batchnorm_option(value):
    """`insert_batchnorm` -> None (no layer) or the BatchNormalization arguments."""
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= set(_BATCHNORM_OPTIONS):
        return dict(value)
    raise _validation.invalid_value(
        "insert_batchnorm", f"expected True, False or a dict with keys from {list(_BATCHNORM_OPTIONS)}", value
    )


def middle_batchnorm(conv, kwargs, name):
    """The BatchNormalization between a decomposed conv's depthwise and pointwise halves (weights set later)."""
    axis = -1 if conv.data_format == "channels_last" else 1
    return keras.layers.BatchNormalization(
        axis=axis, name=name, dtype=conv.dtype_policy, trainable=conv.trainable, **kwargs
    )


def calibrate_middle_batchnorms(new_model, order, chains, calls, batches):
    """Sets every middle BatchNormalization to the identity in inference, with data statistics when given.

    Statistics of the depthwise outputs over `batches` (per channel, over
    samples and positions) become the moving mean and variance, and
    `gamma = sqrt(variance + epsilon)`, `beta = mean` keep the layer the
    identity in inference; without data the statistics are 0 and 1.
    """
    middles = [chains[id(layer)][1] for layer in order if len(chains[id(layer)]) == 3]
    sums = {id(bn): 0.0 for bn in middles}
    squares = {id(bn): 0.0 for bn in middles}
    counts = {id(bn): 0 for bn in middles}
    if batches is not None:
        targets = {id(chains[id(layer)][1]): calls[id(layer)] for layer in order if len(chains[id(layer)]) == 3}
        for x in batches:
            captured = _graph.capture_inputs(new_model, x, targets)
            for bn in middles:
                axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) else bn.axis
                for value in captured[id(bn)]:
                    y = np.moveaxis(_stats.to_numpy(value).astype(np.float64), axis, -1)
                    y = y.reshape(-1, y.shape[-1])
                    sums[id(bn)] = sums[id(bn)] + y.sum(axis=0)
                    squares[id(bn)] = squares[id(bn)] + (y**2).sum(axis=0)
                    counts[id(bn)] += y.shape[0]
    for bn in middles:
        channels = bn.moving_mean.shape[0]
        if counts[id(bn)]:
            mean = sums[id(bn)] / counts[id(bn)]
            variance = np.maximum(squares[id(bn)] / counts[id(bn)] - mean**2, 0.0)
        else:
            mean, variance = np.zeros(channels), np.ones(channels)
        if bn.scale:
            bn.gamma.assign(np.sqrt(variance + bn.epsilon).astype(bn.gamma.dtype))
        else:  # without gamma the identity needs moving_variance + epsilon = 1
            variance = np.full(channels, 1.0 - bn.epsilon)
        if bn.center:
            bn.beta.assign(mean.astype(bn.beta.dtype))
        else:
            mean = np.zeros(channels)
        bn.moving_mean.assign(mean.astype(bn.moving_mean.dtype))
        bn.moving_variance.assign(variance.astype(bn.moving_variance.dtype))


def set_conv_weights(layer, kernel, bias=None):
    weights = [np.asarray(kernel, dtype=layer.kernel.dtype)]
    if layer.use_bias:
        weights.append(np.asarray(bias, dtype=layer.bias.dtype))
    layer.set_weights(weights)


def output_errors(model, new_model, order, chains, calls, batches):
    """Relative output error of every replaced layer on `batches` (see LayerReport)."""
    sq_err = {id(layer): 0.0 for layer in order}
    sq_ref = {id(layer): 0.0 for layer in order}
    for x in batches:
        originals = _graph.capture_inputs(model, x, {id(l): calls[id(l)] for l in order})
        news = _graph.capture_inputs(
            new_model, x, {id(chains[id(l)][0]): calls[id(l)] for l in order}
        )
        for layer in order:
            chain = chains[id(layer)]
            for xo, xn in zip(originals[id(layer)], news[id(chain[0])]):
                y = _stats.to_numpy(_stats.linear_output(layer, xo)).astype(np.float64)
                y_hat = _stats.to_numpy(_stats.chain_linear_output(chain, xn))
                sq_err[id(layer)] += float(np.sum((y - y_hat) ** 2))
                sq_ref[id(layer)] += float(np.sum(y**2))
    return {
        key: float(np.sqrt(sq_err[key] / sq_ref[key])) if sq_ref[key] > 0 else float(np.sqrt(sq_err[key]))
        for key in sq_err
    }


def relative_error(reference, approximation):
    norm = np.linalg.norm(reference)
    diff = np.linalg.norm(reference - approximation)
    return float(diff / norm) if norm > 0 else float(diff)


def make_report(method, model, new_model, order, chains, entries, errors):
    """Builds the DecompositionReport; `entries[id(layer)]` = (rank, kernel error)."""
    spatial_old = output_pixels(model, order)
    layers = []
    for layer in order:
        chain = chains[id(layer)]
        kh, kw, m, n = layer.kernel.shape
        rank, kernel_error = entries[id(layer)]
        pixels = spatial_old[id(layer)]
        per_pixel_before = kh * kw * m * n
        per_pixel_after = sum(int(np.prod(l.kernel.shape)) for l in chain if hasattr(l, "kernel"))
        layers.append(
            LayerReport(
                name=layer.name,
                new_layers=tuple(l.name for l in chain),
                kernel_size=(kh, kw),
                in_channels=m,
                out_channels=n,
                rank=int(rank),
                kernel_error=float(kernel_error),
                output_error=None if errors is None else errors[id(layer)],
                macs_before=None if pixels is None else pixels * per_pixel_before,
                macs_after=None if pixels is None else pixels * per_pixel_after,
                params_before=int(layer.count_params()),
                params_after=int(sum(l.count_params() for l in chain)),
            )
        )
    return DecompositionReport(
        method=method,
        layers=layers,
        model_macs_before=_graph.model_macs(model),
        model_macs_after=_graph.model_macs(new_model),
        model_params_before=int(model.count_params()),
        model_params_after=int(new_model.count_params()),
    )

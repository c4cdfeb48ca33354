"""Channel decomposition (Zhang, Zou, He & Sun 2015), the baseline of He et al.

A `k x k` `Conv2D` with kernel `W` (as the `(kh * kw * M, N)` matrix) and
bias `b` becomes a `k x k` conv to `d'` channels with kernel `W P` (no bias)
followed by a `1 x 1` conv with kernel `P^T` and the bias and activation,
where `P` (`N x d'`) has orthonormal columns: the pair computes
`y_hat = P P^T (W^T x) + b_hat`, the output projected on a `d'`-dimensional
subspace. MACs per output position: `d' (kh kw M + N)` instead of
`kh kw M N`.

Without data `P` holds the first `d'` right singular vectors of `W` (the
best rank-`d'` kernel, i.e. response PCA for white inputs). With data, as in
Zhang et al., `P` holds the top `d'` principal directions of the layer's
responses `y` on the data (original model; covariance accumulated over all
positions, `N x N` memory), and `b_hat = y_mean + P P^T (b - y_mean)`, so
`y_hat = P P^T (y - y_mean) + y_mean`. Layers without bias use the raw second
moment and keep no bias. This is their linear response reconstruction; their
non-linear (ReLU-aware) and asymmetric refinements are not implemented.

`d'` per layer comes from a MAC budget: `ratio` keeps each selected layer at
most that share of its MACs (`d' = floor(ratio * kh kw M N / (kh kw M + N))`);
`macs` is a target for the whole model's analytic MACs: a uniform ratio is
applied first, then the leftover budget is given one channel at a time to the
layer with the lowest current ratio, never exceeding `macs`. `d'` is at least
1 and never makes a layer costlier than the original.
"""

import math

import numpy as np

import keras

from keras_effconv import _progress
from keras_effconv import _validation
from keras_effconv.decompose import _common
from keras_effconv.decompose import _graph
from keras_effconv.decompose import _stats


def _widths(model, selected, ratio, macs):
    """`{id(layer): d'}` meeting the budget (module docstring)."""
    pixels = _common.output_pixels(model, selected)
    geometry = {}
    for conv in selected:
        kh, kw, m, n = conv.kernel.shape
        full = kh * kw * m * n
        unit = kh * kw * m + n
        cap = max(1, min(n, kh * kw * m, full // unit))
        geometry[id(conv)] = (full, unit, cap)
    if macs is None:
        return {
            key: int(min(cap, max(1, math.floor(ratio * full / unit))))
            for key, (full, unit, cap) in geometry.items()
        }
    model_macs = _graph.model_macs(model)
    if model_macs is None or any(p is None for p in pixels.values()):
        raise _validation.invalid_value(
            "macs", "the model has an unknown spatial size, so its MACs are unknown; use `ratio` instead", macs
        )
    original = sum(pixels[key] * full for key, (full, _, _) in geometry.items())
    budget = macs - (model_macs - original)
    minimum = sum(pixels[key] * unit for key, (_, unit, _) in geometry.items())
    if budget < minimum:
        raise _validation.invalid_value(
            "macs",
            f"with d'=1 in every selected layer the model still needs {model_macs - original + minimum:,} MACs",
            received=f"macs={macs:,} (the model has {model_macs:,})",
        )
    share = min(1.0, budget / original)
    widths = {
        key: int(min(cap, max(1, math.floor(share * full / unit))))
        for key, (full, unit, cap) in geometry.items()
    }
    used = sum(pixels[key] * unit * widths[key] for key, (_, unit, _) in geometry.items())
    while True:
        candidates = [
            (widths[key] * unit / full, key)
            for key, (full, unit, cap) in geometry.items()
            if widths[key] < cap and used + pixels[key] * unit <= budget
        ]
        if not candidates:
            return widths
        _, key = min(candidates)
        widths[key] += 1
        used += pixels[key] * geometry[key][1]


def _response_moments(model, selected, calls, batches):
    """Per layer `(sum y y^T, sum y, count)` of the original responses."""
    moments = {
        id(conv): [np.zeros((conv.filters, conv.filters)), np.zeros(conv.filters), 0]
        for conv in selected
    }
    targets = {id(conv): calls[id(conv)] for conv in selected}
    for x in batches:
        captured = _graph.capture_inputs(model, x, targets)
        for conv in selected:
            for xin in captured[id(conv)]:
                y = _stats.channels_last(_stats.linear_output(conv, xin), conv.data_format)
                y = y.reshape(-1, conv.filters).astype(np.float64)
                acc = moments[id(conv)]
                acc[0] += y.T @ y
                acc[1] += y.sum(axis=0)
                acc[2] += y.shape[0]
    return moments


@_progress.closes_bars
def channel_decompose(
    model,
    ratio=None,
    macs=None,
    data=None,
    layers=None,
    *,
    batch_size=32,
    steps=None,
    verbose="auto",
):
    """Channel decomposition baseline (Zhang et al. 2015) of a trained model.

    Every selected `keras.layers.Conv2D` (`groups=1`, kernel larger than
    `1 x 1`) becomes a `k x k` `Conv2D` to `d'` channels (`<name>_reduce`,
    same strides, padding and dilation, no bias) and a `1 x 1` `Conv2D`
    back to `filters` channels (`<name>_expand`, with the bias and
    activation). The math is in the module docstring of
    `keras_effconv.decompose.channel`. Other layers are exact copies; the
    input model is never modified; the new model is not compiled.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        ratio: a number in (0, 1]: every selected layer keeps at most this
            share of its MACs. Exactly one of `ratio` and `macs`.
        macs: int, target analytic MACs (one sample) of the whole new model;
            `d'` is chosen per layer to come as close as possible without
            exceeding it.
        data: None (SVD of the kernel) or inputs in any form accepted by
            `depthwise_decompose`: the subspace is then the principal
            subspace of each layer's responses (Zhang et al.), and the report
            gives output errors.
        layers: None (every eligible `Conv2D`) or a list of names / layers.
        batch_size: batch size used to split array `data`.
        steps: None or the number of batches read from `data`.
        verbose: 0 (silent), 1 (a progress bar per stage: the response
            statistics and the error measurement per batch, the
            factorization per layer), 2 (one line per stage) or `"auto"`
            (1 when standard output is a terminal or a notebook, else 0),
            as in `model.fit`.

    Returns:
        `(new_model, report)`; `report.layers[i].rank` is `d'`.

    Raises:
        ValueError: for a model without eligible `Conv2D`, none or both of
            `ratio` / `macs`, `ratio` outside (0, 1], a `macs` target below
            what `d' = 1` costs, `data` that does not fit the model, or
            `verbose` other than 0, 1, 2 or `"auto"`.

    Example:

    >>> inputs = keras.Input((8, 8, 16))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(16, 3, padding="same")(inputs))
    >>> new_model, report = channel_decompose(model, ratio=0.5)
    >>> report.layers[0].rank  # floor(0.5 * 9*16*16 / (9*16 + 16))
    7
    >>> report.macs_after <= report.macs_before // 2
    True
    """
    _graph.check_model(model)
    if (ratio is None) == (macs is None):
        raise _validation.invalid_value(
            "ratio",
            "pass exactly one of `ratio` (share of each layer's MACs) and `macs` (target MACs of the whole model)",
            received=f"ratio={ratio!r}, macs={macs!r}",
        )
    if ratio is not None:
        ratio = _validation.check_number(
            ratio, "ratio", low=0, high=1, low_inclusive=False, hint="the share of each layer's MACs to keep"
        )
    else:
        macs = _validation.check_positive_int(macs, "macs")
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    steps = _validation.check_positive_int(steps, "steps", allow_none=True)
    verbose = _progress.check_verbose(verbose)
    selected = _common.select_layers(model, layers)
    batches = _stats.Batches(data, model, batch_size, steps) if data is not None else None
    widths = _widths(model, selected, ratio, macs)

    taken = _graph.all_layer_names(model)
    plans = {}
    for conv in selected:
        width = widths[id(conv)]
        reduce = keras.layers.Conv2D(
            width,
            conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            data_format=conv.data_format,
            dilation_rate=conv.dilation_rate,
            use_bias=False,
            kernel_initializer=_graph.PlaceholderZeros(),
            kernel_regularizer=conv.kernel_regularizer,
            name=_graph.unique_name(f"{conv.name}_reduce", taken),
            dtype=conv.dtype_policy,
            trainable=conv.trainable,
        )
        expand = _common.pointwise_successor(conv, conv.filters, _graph.unique_name(f"{conv.name}_expand", taken))
        plans[id(conv)] = [reduce, expand]

    new_model, chains, order, calls = _graph.rebuild(model, lambda layer: plans.get(id(layer)), "`channel_decompose`")
    moments = None
    if batches is not None:
        progress = _progress.Progress(
            f"channel_decompose: collecting the responses of {len(order)} layers on data", batches.count(),
            verbose, "batch",
        )
        moments = _response_moments(model, order, calls, progress.iterate(batches))
        progress.finish()

    entries = {}
    how = "SVD" if moments is None else "PCA"
    progress = _progress.Progress(
        f"channel_decompose: factorizing {len(order)} layers ({how})", len(order), verbose, "layer"
    )
    for conv in progress.iterate(order):
        reduce, expand = chains[id(conv)]
        _common.finish_replacement(conv, chains[id(conv)])
        width = widths[id(conv)]
        kernel = _stats.to_numpy(conv.kernel).astype(np.float64)
        kh, kw, m, n = kernel.shape
        w = kernel.reshape(kh * kw * m, n)
        bias = _stats.to_numpy(conv.bias).astype(np.float64) if conv.use_bias else None
        if moments is None:
            _, _, vt = np.linalg.svd(w, full_matrices=False)
            p = vt[:width].T
            new_bias = bias
        else:
            yy, sy, count = moments[id(conv)]
            _common.check_finite_statistics(conv, yy, sy)
            second = yy / max(count, 1)
            mean = sy / max(count, 1)
            if conv.use_bias:
                second = second - np.outer(mean, mean)
            _, vectors = np.linalg.eigh(second)
            p = vectors[:, ::-1][:, :width]
            new_bias = mean + p @ (p.T @ (bias - mean)) if conv.use_bias else None
        reduce.set_weights([(w @ p).reshape(kh, kw, m, width).astype(reduce.kernel.dtype)])
        _common.set_conv_weights(expand, p.T.reshape(1, 1, width, n), new_bias)
        entries[id(conv)] = (width, _common.relative_error(w, w @ p @ p.T))
    progress.finish()

    errors = None
    if batches is not None:
        progress = _progress.Progress(
            f"channel_decompose: measuring the output errors of {len(order)} layers on data", batches.count(),
            verbose, "batch",
        )
        errors = _common.output_errors(model, new_model, order, chains, calls, progress.iterate(batches))
        progress.finish()
    method = "channel" if batches is None else "channel-pca"
    report = _common.make_report(method, model, new_model, order, chains, entries, errors)
    return new_model, report

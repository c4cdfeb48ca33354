"""Depthwise decomposition of trained convolutions (He et al., arXiv 1910.09455).

Notation. A `Conv2D` with kernel `W` of shape `(kh, kw, M, N)` computes at
every output position `y = sum_m W_m^T x_m + b`, where `x_m` (length
`k2 = kh * kw`) is the receptive field of input channel `m` and
`W_m = kernel[:, :, m, :]` reshaped to `(k2, N)`. A `DepthwiseConv2D` with
`depth_multiplier=r` followed by a `1 x 1` `Conv2D` computes
`y_hat = sum_m P_m D_m^T x_m + b_hat`, with `D_m` (`k2 x r`) the depthwise
kernels `dw[:, :, m, j]` and `P_m` (`N x r`) the pointwise rows `m * r + j`
(Keras orders the depthwise outputs channel-major). The pair is exactly the
convolution with kernel blocks `W_hat_m = D_m P_m^T`: any kernel whose
per-channel blocks have rank <= r. Strides, padding and dilation go on the
depthwise conv; the bias and the activation on the pointwise conv.

`method="svd"` minimises the kernel error `sum_m ||W_m - W_hat_m||_F^2`. By
Eckart-Young the optimum is the truncated SVD of every block: `D_m` = the
first `r` left singular vectors (unit norm), `P_m` = the right ones scaled by
the singular values. The squared error is the sum of the discarded singular
values squared; a separable kernel (rank-1 blocks) and `r = k2` are exact.

`method="data"` minimises the error of the layer OUTPUT on real inputs, with
multi-layer compensation. Let `x~` be the layer's input in the ORIGINAL model
and `x` its input in the decomposed model, in which every earlier layer
(topological order) is already replaced. The target is the original output
`y = W^T x~ + b`; we solve

    min  E || y - W_hat^T x - b_hat ||^2   over per-channel rank-r W_hat, b_hat.

With `Sigma = Cov(x)` (`D x D`, `D = k2 * M`, every channel, so cross-channel
correlations count) and `G = Cov(x, y)` (`D x N`), the objective is
`f(W_hat) = tr(W_hat^T Sigma W_hat) - 2 tr(W_hat^T G) + const` and the optimal
bias is `b_hat = E[y] - W_hat^T E[x]` (raw second moments and no `b_hat` when
the layer has no bias). `Sigma` and `G` are sums over batches and patches, so
memory is `O(D^2 + D N)` whatever the amount of data; patches are never
stored (`positions_per_image` additionally subsamples output positions).

The rank constraint is per channel, so `f` is minimised by block coordinate
descent over channels, starting from the SVD solution. With the other
channels fixed, channel `m` solves

    min_{rank(W_hat_m) <= r}  tr(W_hat_m^T A_m W_hat_m) - 2 tr(W_hat_m^T B_m),
    A_m = Sigma_mm + lam I,   B_m = G_m - sum_{j != m} Sigma_mj W_hat_j + lam W_m,

which is a generalised SVD in closed form: with `A_m = L L^T` (Cholesky) the
objective is `||L^T W_hat_m - L^-1 B_m||_F^2 + const`, so `L^T W_hat_m` is
the truncated SVD `U_r S_r V_r^T` of `L^-1 B_m`, i.e. `D_m = L^-T U_r` and
`P_m = V_r S_r` (then rescaled so each depthwise kernel has unit norm). Every
step solves its block exactly, so the objective never increases; sweeps stop
when it improves by less than 1e-6 (relative) or after `iterations` sweeps.
A sweep costs `O(D^2 N)`.

Why this formulation: the closed-form per-channel GSVD alone (whiten channel
`m` by `Sigma_mm^(1/2)`, SVD, unwhiten) ignores how channels correlate and
how the other channels' errors add up in the same outputs; the first sweep
above is that per-channel GSVD applied to the residual target, and the next
sweeps account for the cross-channel terms exactly. The small ridge
`lam * sum_m ||W_hat_m - W_m||^2`, `lam = 1e-2 * tr(Sigma) / D` (1% of the
average input variance), keeps every block well posed where the data hardly
excites a direction, pulling it towards the original kernel there (a
channel that is always zero gets its SVD solution). On a small Fashion-MNIST
CNN, 1e-2 gave the same or a lower held-out output error than 1e-3 to 1e-5,
with kernels much closer to the original (relative kernel error about 1.4
instead of 7 at rank 1). With white inputs unchanged by earlier layers
(`Sigma = s I`, `x = x~`) the method reduces to the SVD.

Ranks: `rank` is the number of depthwise kernels per input channel (the
`depth_multiplier`, one per layer, the same for every channel); it is capped
at `min(kh * kw, N)`, where the decomposition is already exact. With
`energy=e`, each layer gets the smallest `r` such that the kept singular
values hold at least the share `e` of the layer's `sum sigma^2` (summed over
all channels), computed from the kernel for both methods.
"""

import numpy as np

import keras

from keras_effconv import _progress
from keras_effconv import _validation
from keras_effconv.decompose import _common
from keras_effconv.decompose import _graph
from keras_effconv.decompose import _stats

_RIDGE = 1e-2
_TOLERANCE = 1e-6


def _blocks(kernel):
    """`(kh, kw, M, N)` kernel -> `(M, kh * kw, N)` per-channel blocks W_m."""
    kh, kw, m, n = kernel.shape
    return np.transpose(kernel, (2, 0, 1, 3)).reshape(m, kh * kw, n)


def _svd_rank(s, rank, energy):
    q = s.shape[1]
    if energy is None:
        return min(rank, q)
    kept = np.cumsum(np.sum(s**2, axis=0))
    total = kept[-1]
    if total <= 0:
        return 1
    return int(min(q, np.searchsorted(kept, energy * total * (1 - 1e-12)) + 1))


def _factor_kernels(d, p, kernel_size):
    """Factors `D (M, k2, r)`, `P (M, N, r)` -> depthwise and pointwise kernels."""
    m, k2, r = d.shape
    n = p.shape[1]
    dw = np.transpose(d.reshape(m, kernel_size[0], kernel_size[1], r), (1, 2, 0, 3))
    pw = np.transpose(p, (0, 2, 1)).reshape(1, 1, m * r, n)
    return dw, pw


def _normalise(d, p):
    # Unit-norm depthwise kernels, scale on the pointwise side (as the SVD does).
    norms = np.linalg.norm(d, axis=1, keepdims=True)  # (M, 1, r)
    safe = np.where(norms > 0, norms, 1.0)
    return d / safe, p * safe


def _block_descent(w_blocks, sigma, g, d, p, iterations):
    """Minimises f (module docstring) over per-channel rank-r kernels, from `d`, `p`."""
    m, k2, n = w_blocks.shape
    r = d.shape[2]
    size = m * k2
    trace = float(np.trace(sigma))
    lam = _RIDGE * trace / size if trace > 0 else 1.0
    w = w_blocks.reshape(size, n)
    w_hat = np.einsum("mkr,mnr->mkn", d, p).reshape(size, n)
    z = sigma @ w_hat
    inv_chol = []
    for c in range(m):
        block = slice(c * k2, (c + 1) * k2)
        a = sigma[block, block] + lam * np.eye(k2)
        inv_chol.append(np.linalg.inv(np.linalg.cholesky(a)))
    d, p = d.copy(), p.copy()

    def objective():
        return float(
            np.sum(w_hat * z) - 2 * np.sum(w_hat * g) + lam * np.sum((w_hat - w) ** 2)
        )

    value = objective()
    for _ in range(iterations):
        for c in range(m):
            block = slice(c * k2, (c + 1) * k2)
            current = w_hat[block]
            b = g[block] - z[block] + sigma[block, block] @ current + lam * w[block]
            u, s, vt = np.linalg.svd(inv_chol[c] @ b, full_matrices=False)
            d[c] = inv_chol[c].T @ u[:, :r]
            p[c] = vt[:r].T * s[:r]
            new = d[c] @ p[c].T
            z += sigma[:, block] @ (new - current)
            w_hat[block] = new
        z = sigma @ w_hat  # no drift from the rank-k2 updates
        new_value = objective()
        done = value - new_value <= _TOLERANCE * max(abs(value), 1e-30)
        value = new_value
        if done:
            break
    return _normalise(d, p)


def _fit_data(conv, chain, factors, model, new_model, calls, batches, positions_per_image, iterations, rng, progress):
    """Refits one layer's factors on data (module docstring); returns (d, p, bias)."""
    dw = chain[0]
    w = _stats.kernel_matrix(_stats.to_numpy(conv.kernel).astype(np.float64))
    bias = (
        _stats.to_numpy(conv.bias).astype(np.float64) if conv.use_bias else np.zeros(w.shape[1])
    )
    moments = _stats.Moments(*w.shape)
    for x in progress.iterate(batches):
        originals = _graph.capture_inputs(model, x, {id(conv): calls})[id(conv)]
        news = _graph.capture_inputs(new_model, x, {id(dw): calls})[id(dw)]
        for xo, xn in zip(originals, news):
            for po, pn in _stats.position_chunks([xo, xn], conv, positions_per_image, rng):
                moments.add(pn, po @ w + bias)
    sigma, g, mean_x, mean_y = moments.centered(conv.use_bias)
    _common.check_finite_statistics(conv, sigma, g, mean_x, mean_y)
    d, p = _block_descent(factors["blocks"], sigma, g, factors["d"], factors["p"], iterations)
    w_hat = np.einsum("mkr,mnr->mkn", d, p).reshape(w.shape)
    return d, p, mean_y - w_hat.T @ mean_x


@_progress.closes_bars
def depthwise_decompose(
    model,
    rank=1,
    energy=None,
    method="svd",
    data=None,
    layers=None,
    *,
    batch_size=32,
    steps=None,
    positions_per_image=None,
    iterations=10,
    seed=0,
    insert_batchnorm=False,
    verbose="auto",
):
    """Replaces k x k convolutions of a trained model by depthwise + pointwise pairs.

    Every selected `keras.layers.Conv2D` (`groups=1`, kernel larger than
    `1 x 1`) becomes `DepthwiseConv2D(kernel_size, depth_multiplier=r,
    strides, padding, dilation_rate, use_bias=False)` named `<name>_dw`,
    followed by `Conv2D(filters, 1)` named `<name>_pw` that carries the
    original bias and activation. The math (per-channel SVD, and the
    data-driven generalised SVD with multi-layer compensation) is in the
    module docstring of `keras_effconv.decompose.depthwise`. With
    `insert_batchnorm`, a `BatchNormalization` named `<name>_bn` sits
    between the two (as in MobileNets and ShuffleNet V2): it is the identity
    in inference, and with `data` its moving statistics are those of the
    depthwise outputs on `data` (`gamma = sqrt(var + epsilon)`,
    `beta = mean`), so training-mode normalisation starts close to the
    identity too; without `data` they are 0 and 1. This is how a model
    expanded by `expand_separable` gets its structure back.

    Every other layer is a fresh copy with the same config and exactly the
    same weights; nested Functional / Sequential models stay nested and are
    rebuilt too. The input model is never modified. The new model is not
    compiled.

    Args:
        model: a built Functional or Sequential `keras.Model` (also with
            branches and nested models, channels_last or channels_first).
        rank: int >= 1, depthwise kernels per input channel; capped per layer
            at `min(kh * kw, filters)` (exact there).
        energy: None or a float in (0, 1]; if set, it overrides `rank`: each
            layer gets the smallest rank keeping this share of its
            `sum sigma^2`.
        method: `"svd"` (minimise the kernel error; data optional, used for
            the report only) or `"data"` (minimise the output error on
            `data`; needs `data`).
        data: None, or the inputs to use: an array, an `(x, y)` tuple, a
            `tf.data.Dataset`, a `keras.utils.PyDataset` or any iterable of
            batches (batches may be `(x, y[, w])` tuples). With data, the
            report gives each layer's output error. Single-input models only.
        layers: None (every eligible `Conv2D`) or a list of layer names or
            layer objects to decompose.
        batch_size: batch size used to split array `data`.
        steps: None or the number of batches read from `data` per pass.
        positions_per_image: None (all) or the number of random output
            positions per image used for the `"data"` statistics.
        iterations: maximum block-coordinate sweeps of the `"data"` method.
        seed: seed of the position sampling.
        insert_batchnorm: False, True, or a dict of `BatchNormalization`
            arguments (e.g. `{"momentum": 0.9}`) for the layer put between
            the depthwise and the pointwise conv (see above).
        verbose: 0 (silent), 1 (a progress bar per stage: SVD per layer,
            the data fit per layer and batch, which is the slow part, the
            BatchNormalization calibration and the error measurement per
            batch), 2 (one line per stage) or `"auto"` (1 when standard
            output is a terminal or a notebook, else 0), as in `model.fit`.

    Returns:
        `(new_model, report)`: the decomposed `keras.Model` and a
        `DecompositionReport` (per layer: rank, relative kernel error, output
        error on `data`, MACs and parameters before and after).

    Raises:
        ValueError: if `model` is not a built Functional/Sequential model,
            has no eligible `Conv2D` (or `layers` names one that is missing
            or not eligible), `rank < 1`, `energy` is outside (0, 1],
            `method` is unknown, `method="data"` without `data`, `data`
            does not match the model input, or `verbose` is not 0, 1, 2 or
            `"auto"`.

    Example:

    >>> inputs = keras.Input((8, 8, 16))
    >>> outputs = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> new_model, report = depthwise_decompose(model, rank=1)
    >>> [layer.name for layer in new_model.layers[1:]] == [
    ...     f"{model.layers[1].name}_dw", f"{model.layers[1].name}_pw"]
    True
    >>> report.macs_before == 8 * 8 * 9 * 16 * 16
    True
    >>> report.macs_after == 8 * 8 * (9 * 16 + 16 * 16)
    True
    """
    _graph.check_model(model)
    rank = _validation.check_positive_int(rank, "rank")
    energy = _validation.check_number(
        energy, "energy", low=0, high=1, low_inclusive=False, allow_none=True, hint="the share of sum(sigma^2) to keep"
    )
    method = _validation.check_choice(method, "method", ("svd", "data"))
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    steps = _validation.check_positive_int(steps, "steps", allow_none=True)
    positions_per_image = _validation.check_positive_int(
        positions_per_image, "positions_per_image", allow_none=True
    )
    iterations = _validation.check_positive_int(iterations, "iterations")
    batchnorm_kwargs = _common.check_batchnorm_option(insert_batchnorm)
    verbose = _progress.check_verbose(verbose)
    if method == "data" and data is None:
        raise _validation.invalid_value(
            "data",
            "method='data' needs input samples (an array, (x, y) tuple, tf.data.Dataset or iterable of batches)",
            data,
        )
    selected = _common.select_layers(model, layers)
    batches = _stats.Batches(data, model, batch_size, steps) if data is not None else None

    taken = _graph.all_layer_names(model)
    factors = {}
    progress = _progress.Progress(
        f"depthwise_decompose: factorizing {len(selected)} layers (SVD)", len(selected), verbose, "layer"
    )
    for conv in progress.iterate(selected):
        kernel = _stats.to_numpy(conv.kernel).astype(np.float64)
        blocks = _blocks(kernel)
        u, s, vt = np.linalg.svd(blocks, full_matrices=False)
        r = _svd_rank(s, rank, energy)
        d = u[:, :, :r]
        p = np.transpose(vt[:, :r, :], (0, 2, 1)) * s[:, None, :r]
        kh, kw, m, n = kernel.shape
        dw = keras.layers.DepthwiseConv2D(
            kernel_size=conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            depth_multiplier=r,
            data_format=conv.data_format,
            dilation_rate=conv.dilation_rate,
            use_bias=False,
            depthwise_initializer=_graph.PlaceholderZeros(),
            depthwise_regularizer=conv.kernel_regularizer,
            name=_graph.unique_name(f"{conv.name}_dw", taken),
            dtype=conv.dtype_policy,
            trainable=conv.trainable,
        )
        pw = _common.pointwise_successor(conv, n, _graph.unique_name(f"{conv.name}_pw", taken))
        bias = _stats.to_numpy(conv.bias) if conv.use_bias else None
        chain = [dw, pw]
        if batchnorm_kwargs is not None:
            bn_name = _graph.unique_name(f"{conv.name}_bn", taken)
            chain.insert(1, _common.middle_batchnorm(conv, batchnorm_kwargs, bn_name))
        factors[id(conv)] = {"blocks": blocks, "d": d, "p": p, "bias": bias, "chain": chain}
    progress.finish()

    new_model, chains, order, calls = _graph.rebuild(
        model, lambda layer: factors[id(layer)]["chain"] if id(layer) in factors else None, "`depthwise_decompose`"
    )

    def assign(conv, d, p, bias):
        dw, pw = chains[id(conv)][0], chains[id(conv)][-1]
        dw_kernel, pw_kernel = _factor_kernels(d, p, conv.kernel_size)
        dw.set_weights([dw_kernel.astype(dw.kernel.dtype)])
        _common.set_conv_weights(pw, pw_kernel, bias)

    for conv in order:
        f = factors[id(conv)]
        _common.finish_replacement(conv, chains[id(conv)])
        assign(conv, f["d"], f["p"], f["bias"])
    if batchnorm_kwargs is not None:
        # Exactly the identity while the data-driven fit reads the new model's activations.
        _common.calibrate_middle_batchnorms(new_model, order, chains, calls, None)
    if method == "data":
        rng = np.random.default_rng(seed)
        count = batches.count()
        progress = _progress.Progress(
            f"depthwise_decompose: fitting {len(order)} layers on data (method='data'"
            + (f", {count} batches per layer)" if count else ")"),
            None if count is None else count * len(order), verbose, "batch",
        )
        for conv in order:
            f = factors[id(conv)]
            d, p, bias = _fit_data(
                conv, chains[id(conv)], f, model, new_model, calls[id(conv)],
                batches, positions_per_image, iterations, rng, progress,
            )
            f["d"], f["p"] = d, p
            assign(conv, d, p, bias)
        progress.finish()
    if batchnorm_kwargs is not None and batches is not None:
        progress = _progress.Progress(
            f"depthwise_decompose: calibrating {len(order)} BatchNormalization layers on data",
            batches.count(), verbose, "batch",
        )
        _common.calibrate_middle_batchnorms(new_model, order, chains, calls, progress.iterate(batches))
        progress.finish()

    entries = {}
    for conv in order:
        f = factors[id(conv)]
        w_hat = np.einsum("mkr,mnr->mkn", f["d"], f["p"])
        entries[id(conv)] = (f["d"].shape[2], _common.relative_error(f["blocks"], w_hat))
    errors = None
    if batches is not None:
        progress = _progress.Progress(
            f"depthwise_decompose: measuring the output errors of {len(order)} layers on data",
            batches.count(), verbose, "batch",
        )
        errors = _common.output_errors(model, new_model, order, chains, calls, progress.iterate(batches))
        progress.finish()
    report = _common.make_report(method, model, new_model, order, chains, entries, errors)
    return new_model, report

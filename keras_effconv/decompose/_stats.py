"""Data plumbing for the data-driven decompositions: batches, patches, moments.

Everything here is NumPy (float64 accumulators), so it is the same on every
backend. Memory stays bounded: batches are turned into patch matrices a chunk
at a time and only sums of products are kept.
"""

import itertools

import numpy as np

import keras
from keras import ops

from keras_effconv import _validation

_EXPECTED = "expected an array, an (x, y) tuple of arrays or an iterable of batches"

# Largest patch matrix (rows x columns) materialised at once: 2**21 float64
# values = 16 MiB, big enough for efficient GEMMs.
_CHUNK_ELEMENTS = 2**21


def to_numpy(x):
    if hasattr(x, "detach"):  # torch tensors, also when KERAS_BACKEND differs
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        x = np.asarray(x)
    except Exception:  # backend tensors that need Keras' own conversion
        x = np.asarray(ops.convert_to_numpy(x))
    if x.dtype.name == "bfloat16":  # ml_dtypes arrays from TF / JAX
        x = x.astype(np.float32)
    return x


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (list, tuple, dict))


class Batches:
    """Re-iterable source of model-input batches built from `data`.

    Accepts what `model.fit` accepts for `x`: an array (split into batches of
    `batch_size`), a tuple `(x, y)` / `(x, y, sample_weight)` of arrays, or any
    iterable of batches (`tf.data.Dataset`, `keras.utils.PyDataset`, a torch
    `DataLoader`, a list or generator), where a batch may itself be an
    `(x, y, ...)` tuple. One-shot iterators (generators) are read once (up to
    `steps` batches) and kept, because the decompositions make several passes.
    """

    def __init__(self, data, model, batch_size=32, steps=None, name="data"):
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.steps = steps
        spec = model.inputs
        if len(spec) != 1:
            raise _validation.invalid_value(
                name,
                "data-driven decomposition supports single-input models only",
                received=f"{name} for model '{model.name}', which has {len(spec)} inputs",
            )
        self.input_shape = tuple(spec[0].shape)
        if data is None:
            raise _validation.invalid_value(name, _EXPECTED, data)
        if isinstance(data, tuple) and data and _is_array(data[0]):
            data = data[0]
        if _is_array(data):
            self._array = data
            self._iterable = None
            self._check(to_numpy(data[:1]) if len(data) else to_numpy(data))
            if len(data) == 0:
                raise _validation.invalid_value(
                    name, "expected at least one sample", received=f"{name} of shape {tuple(data.shape)}"
                )
        else:
            self._array = None
            try:
                iterator = iter(data)
            except TypeError:
                raise _validation.invalid_value(
                    name, _EXPECTED, received=f"{name} of type {type(data).__name__}"
                ) from None
            if iterator is data:  # one-shot: keep what we read
                data = list(itertools.islice(iterator, steps))
            self._iterable = data
            first = next(iter(self), None)
            if first is None:
                raise _validation.invalid_value(
                    name, "expected at least one batch", received=f"{name} that yields no batches"
                )

    def _unpack(self, batch):
        # Keras convention: a tuple batch is (x, y[, sample_weight]); torch
        # DataLoaders yield lists for the same thing.
        if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3 and _is_array(batch[0]):
            if len(batch) > 1 or isinstance(batch, tuple):
                batch = batch[0]
        if isinstance(batch, (list, tuple)) and len(batch) == 1:
            batch = batch[0]
        return to_numpy(batch)

    def _check(self, x):
        expected = self.input_shape
        if x.ndim != len(expected) or any(
            e is not None and e != s for e, s in zip(expected[1:], x.shape[1:])
        ):
            raise _validation.invalid_value(
                self.name,
                f"batches must have shape {('batch',) + expected[1:]} to match the input of model '{self.model.name}'",
                received=f"a batch of shape {tuple(x.shape)}",
            )
        if np.issubdtype(x.dtype, np.floating):
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            if bad:
                raise _validation.invalid_value(
                    self.name,
                    "batches must contain finite values (no NaN or inf)",
                    received=f"a batch of shape {tuple(x.shape)} with {bad} NaN/inf values",
                )

    def count(self):
        """The number of batches one pass yields, or None when the iterable has no length (progress bars)."""
        if self._array is not None:
            total = -(-len(self._array) // self.batch_size)
        else:
            try:
                total = len(self._iterable)
            except (TypeError, ValueError):  # generators, tf.data of unknown cardinality
                return self.steps
        return total if self.steps is None else min(total, self.steps)

    def __iter__(self):
        if self._array is not None:
            n = len(self._array)
            starts = range(0, n, self.batch_size)
            if self.steps is not None:
                starts = starts[: self.steps]
            for start in starts:
                x = to_numpy(self._array[start : start + self.batch_size])
                self._check(x)
                yield x
        else:
            for batch in itertools.islice(self._iterable, self.steps):
                x = self._unpack(batch)
                self._check(x)
                yield x


def channels_last(x, data_format):
    x = to_numpy(x)
    return np.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x


def _pad_amounts(length, kernel, stride, dilation, padding):
    if padding == "valid":
        return 0, 0
    effective = (kernel - 1) * dilation + 1
    out = -(-length // stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2  # TensorFlow "same": extra after


def patches(x, kernel_size, strides, padding, dilation_rate):
    """Receptive fields of a convolution, channel-major.

    Args:
        x: `(B, H, W, C)` channels_last array.

    Returns:
        `(B, H', W', C * kh * kw)` array; column `c * kh * kw + a * kw + b`
        holds input channel `c` at tap `(a, b)`. Padding follows
        `keras.ops.conv` (TensorFlow's convention for "same").
    """
    kh, kw = kernel_size
    sh, sw = strides
    dh, dw = dilation_rate
    b, h, w, c = x.shape
    ph = _pad_amounts(h, kh, sh, dh, padding)
    pw = _pad_amounts(w, kw, sw, dw, padding)
    x = np.pad(x, [(0, 0), ph, pw, (0, 0)])
    out_h = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    out_w = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    taps = np.empty((b, out_h, out_w, c, kh * kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            taps[..., i * kw + j] = x[
                :,
                i * dh : i * dh + (out_h - 1) * sh + 1 : sh,
                j * dw : j * dw + (out_w - 1) * sw + 1 : sw,
                :,
            ]
    return taps.reshape(b, out_h, out_w, c * kh * kw)


def position_chunks(x_list, conv, positions_per_image, rng):
    """Yields matching float64 patch matrices for each array of `x_list`.

    `x_list` holds inputs of the same convolution (e.g. from the original and
    from the decomposed model); the same output positions are taken from
    each, a random subset of `positions_per_image` per image when given.
    """
    geometry = (conv.kernel_size, conv.strides, conv.padding, conv.dilation_rate)
    x_list = [channels_last(x, conv.data_format) for x in x_list]
    columns = x_list[0].shape[-1] * conv.kernel_size[0] * conv.kernel_size[1]
    n = x_list[0].shape[0]
    per_chunk = max(1, _CHUNK_ELEMENTS // (columns * _positions(x_list[0], conv)))
    for start in range(0, n, per_chunk):
        parts = [patches(x[start : start + per_chunk], *geometry) for x in x_list]
        b, oh, ow, d = parts[0].shape
        parts = [p.reshape(b, oh * ow, d) for p in parts]
        if positions_per_image is not None and positions_per_image < oh * ow:
            index = np.argsort(rng.random((b, oh * ow)), axis=1)[:, :positions_per_image]
            parts = [np.take_along_axis(p, index[:, :, None], axis=1) for p in parts]
        yield [p.reshape(-1, d).astype(np.float64) for p in parts]


def _positions(x, conv):
    h, w = x.shape[1], x.shape[2]
    out = [
        -(-length // s) if conv.padding == "same" else (length - (k - 1) * d - 1) // s + 1
        for length, k, s, d in zip((h, w), conv.kernel_size, conv.strides, conv.dilation_rate)
    ]
    return max(1, out[0] * out[1])


def kernel_matrix(kernel):
    """Keras kernel `(kh, kw, M, N)` as the `(M * kh * kw, N)` channel-major matrix."""
    kh, kw, m, n = kernel.shape
    return np.transpose(kernel, (2, 0, 1, 3)).reshape(m * kh * kw, n)


class Moments:
    """Running sums for a least-squares fit `target ~ inputs`.

    Keeps `sum x x^T`, `sum x y^T`, `sum x`, `sum y`, `sum |y|^2` and the
    count; nothing else, so memory is `O(D^2 + D N)` whatever the data size.
    """

    def __init__(self, d, n_out):
        self.xx = np.zeros((d, d))
        self.xy = np.zeros((d, n_out))
        self.sx = np.zeros(d)
        self.sy = np.zeros(n_out)
        self.yy = 0.0
        self.count = 0

    def add(self, x, y):
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.sx += x.sum(axis=0)
        self.sy += y.sum(axis=0)
        self.yy += float(np.sum(y * y))
        self.count += x.shape[0]

    def centered(self, center):
        """(Sigma, G, mean x, mean y), centered or raw second moments per sample."""
        n = max(self.count, 1)
        mx, my = self.sx / n, self.sy / n
        sigma, g = self.xx / n, self.xy / n
        if center:
            sigma = sigma - np.outer(mx, mx)
            g = g - np.outer(mx, my)
        return sigma, g, mx, my


def linear_output(layer, x):
    """Output of a Conv2D / DepthwiseConv2D without its activation, in float32."""
    # Mixed-precision models feed float16/bfloat16 inputs; errors are measured
    # against float32 math with the float32 weights.
    x = ops.cast(x, "float32")
    kwargs = dict(
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        y = ops.depthwise_conv(x, layer.kernel, **kwargs)
    else:
        y = ops.conv(x, layer.kernel, **kwargs)
    if layer.use_bias:
        shape = (1, 1, 1, -1) if layer.data_format == "channels_last" else (1, -1, 1, 1)
        y = y + ops.reshape(layer.bias, shape)
    return y


def chain_linear_output(chain, x):
    """Output of a replacement chain (convolutions without activations; BatchNormalization in inference)."""
    for layer in chain:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = ops.cast(layer(ops.cast(x, layer.compute_dtype), training=False), "float32")
        else:
            x = linear_output(layer, x)
    return x


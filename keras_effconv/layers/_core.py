"""Shared building blocks for the efficient convolution layers.

Everything here uses `keras.ops` only, so it runs on TensorFlow, JAX and
PyTorch. Where backends differ in which exact formulation is fastest (measured
in `benchmarks/layers.py`), the choice is made in ONE place: `_FAST_FORMS`.
Argument validation is not here: it lives in `keras_effconv._validation`.
"""

import contextlib
import contextvars
import math
import weakref

import numpy as np

import keras
from keras import ops

from keras_effconv._validation import normalize_tuple

# Measured on a 2-core x86 CPU (see benchmarks/results/): which exact form of
# a grouped / depthwise convolution each backend runs fastest.
#   grouped:   "native" = one ops.conv with a grouped kernel,
#              "tf_nn"  = one tf.nn.convolution with a grouped kernel (TensorFlow,
#                         channels_last): keras' ops.conv sends every grouped conv
#                         through a nested XLA function on TensorFlow, which runs
#                         2-3x slower on CPU than TensorFlow's own grouped kernel
#                         (correct since TF 2.x for forward and gradient,
#                         checked in tests/layers/test_core.py),
#              "split"  = one dense conv per group, concatenated.
#   depthwise: "native" = ops.depthwise_conv,
#              "shift"  = sum of k*k shifted, per-channel scaled inputs (XLA:CPU
#                         runs depthwise convolutions ~20x slower than this).
# (Layer-level forms, which depend on the shape and on training, are chosen by
# each layer's own rule: `choose_hetconv_execution`, `choose_igc_execution`.)
_FAST_FORMS = {
    "tensorflow": {
        "grouped": "tf_nn",
        "depthwise": "native",
    },
    "jax": {
        "grouped": "split",
        "depthwise": "shift",
    },
    "torch": {
        "grouped": "native",
        "depthwise": "native",
    },
}


_DEFAULT_FORMS = _FAST_FORMS["tensorflow"]


def fast_form(kind):
    forms = _FAST_FORMS.get(keras.backend.backend(), _DEFAULT_FORMS)
    return forms[kind]


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------


def batched_shape(input_shape):
    """Adds a `None` batch dimension to a per-sample `(H, W, C)` shape."""
    input_shape = tuple(input_shape)
    return (None,) + input_shape if len(input_shape) == 3 else input_shape


def conv_output_length(length, kernel, stride, padding, dilation=1):
    """Output length of a convolution along one axis (None stays None)."""
    if length is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-length // stride)
    return (length - effective) // stride + 1


def spatial_dims(shape, data_format):
    return tuple(shape[1:3]) if data_format == "channels_last" else tuple(shape[2:4])


def with_spatial_and_channels(shape, spatial, channels, data_format):
    if data_format == "channels_last":
        return (shape[0], spatial[0], spatial[1], channels)
    return (shape[0], channels, spatial[0], spatial[1])


def channel_axis(data_format):
    return -1 if data_format == "channels_last" else 1


# ----------------------------------------------------------------------------
# Channel permutations
# ----------------------------------------------------------------------------


def shuffle_channels(x, groups, data_format):
    """ShuffleNet channel shuffle written with 4-D tensors only.

    Output channel `j * groups + g` is input channel `g * (C // groups) + j`.
    Height and width are merged so that no tensor above rank 4 appears (a 5-D
    reshape/transpose is not accelerated by mobile GPU delegates).
    """
    if groups == 1:
        return x
    shape = ops.shape(x)
    if data_format == "channels_last":
        channels = x.shape[-1]
        y = ops.reshape(x, (-1, shape[1] * shape[2], groups, channels // groups))
        y = ops.transpose(y, (0, 1, 3, 2))
        return ops.reshape(y, (-1, shape[1], shape[2], channels))
    channels = x.shape[1]
    y = ops.reshape(x, (-1, groups, channels // groups, shape[2] * shape[3]))
    y = ops.transpose(y, (0, 2, 1, 3))
    return ops.reshape(y, (-1, channels, shape[2], shape[3]))


def take_channels(x, indices, data_format):
    return ops.take(x, np.asarray(indices, dtype="int32"), axis=channel_axis(data_format))


def slice_channels(x, start, stop, data_format):
    if data_format == "channels_last":
        return x[..., start:stop]
    return x[:, start:stop]


def concat_channels(tensors, data_format):
    if len(tensors) == 1:
        return tensors[0]
    return ops.concatenate(tensors, axis=channel_axis(data_format))


def channel_runs(order):
    """Splits a channel order into ascending contiguous runs `[(start, stop), ...]`.

    `x[..., order]` equals the concatenation of `x[..., start:stop]` over the
    runs: a few slices and one concatenation are plain copies on every runtime
    (LiteRT's XNNPACK runs them; its `GATHER` is a slow reference kernel).
    """
    runs = []
    for channel in np.asarray(order, dtype=np.int64).tolist():
        if runs and runs[-1][1] == channel:
            runs[-1][1] += 1
        else:
            runs.append([channel, channel + 1])
    return [tuple(r) for r in runs]


def roll_channel_grid(x, grid, shift, data_format):
    """Rolls the channels laid out on a `d1 x d2` torus of cells by `shift` cells.

    The result's cell `(p, q)` holds `x`'s cell `((p + a) % d1, (q + b) % d2)`
    for `shift = (a, b)`; cells are row-major groups of `C / (d1 d2)`
    consecutive channels. A shift along one axis of the row-major layout is one
    roll of the channel axis; a 2-D shift rolls a `(…, d1, d2, …)` view.
    """
    d1, d2 = grid
    a, b = shift[0] % d1, shift[1] % d2
    if a == 0 and b == 0:
        return x
    axis = channel_axis(data_format)
    channels = x.shape[axis]
    cell = channels // (d1 * d2)
    if b == 0 or d1 == 1:
        return ops.roll(x, -(a * d2 + b) * cell, axis=axis)
    shape = ops.shape(x)
    if data_format == "channels_last":
        view = ops.reshape(x, (-1, d1, d2, cell))
    else:
        view = ops.reshape(x, (shape[0], d1, d2, -1))
    view = ops.roll(ops.roll(view, -a, axis=1), -b, axis=2)
    return ops.reshape(view, shape)


class GatherIndex:
    """An index map for `gather_from_parts`, prepared once and reused by every call.

    A layer's maps are fixed once it is built, but eager backends (torch) run
    `call` in Python every time: re-deriving the flat indices and converting
    them to a tensor per call cost about as much as a small convolution.

    Args:
        index_map: int array; entry `k >= 0` picks element `k` of the
            concatenated flattened parts, `-1` gives zero.
    """

    def __init__(self, index_map):
        self.index_map = np.asarray(index_map)
        self.shape = self.index_map.shape
        self._flat = self.index_map.reshape(-1).astype(np.int32)
        self._safe = {}  # pool size -> flat indices with -1 sent to the appended zero
        self._tensors = {}  # (pool size, device) -> those indices as a torch tensor

    def flat_indices(self, pool):
        """Flat indices into the 1-D `pool` (its last element the zero), as a tensor where that pays."""
        total = int(pool.shape[0])
        if total not in self._safe:
            self._safe[total] = np.where(self._flat < 0, total - 1, self._flat).astype(np.int32)
        safe = self._safe[total]
        # Only an eager backend may keep a tensor across calls (a TF/JAX trace would leak it);
        # torch's symbolic build runs on the "meta" device, whose tensors hold no values.
        device = getattr(pool, "device", None)
        if keras.backend.backend() != "torch" or device is None or device.type == "meta" or _torch_tracing(pool):
            return safe
        key = (total, str(device))
        if key not in self._tensors:
            self._tensors[key] = ops.convert_to_tensor(safe).to(device)
        return self._tensors[key]


def gather_from_parts(parts, index_map):
    """Builds a tensor whose entries are picked from `parts` (-1 gives zero).

    Used to expand compactly stored weights (no masked duplicates) into dense
    kernels: `index_map` (an int array or a `GatherIndex`) indexes the
    concatenation of the flattened parts.
    """
    if not isinstance(index_map, GatherIndex):
        index_map = GatherIndex(index_map)

    def gather(tensors):
        flat = [ops.reshape(t, (-1,)) for t in tensors]
        flat.append(ops.zeros((1,), dtype=flat[0].dtype))
        pool = ops.concatenate(flat, axis=0)
        return ops.reshape(ops.take(pool, index_map.flat_indices(pool), axis=0), index_map.shape)

    return reuse_while_unchanged(index_map, parts, gather)


def reuse_while_unchanged(owner, parts, build, name=None):
    """`build(tensors of parts)`, reused on torch inference calls while the parts' values are unchanged.

    `owner` (the layer or index map the result belongs to) and `name` (which
    of the owner's results, when it has several) identify the result; it is
    kept beside the owner, not on it (a Keras layer tracks its attributes).
    Everywhere else (TensorFlow and JAX traces, torch with autograd) `build`
    runs every call.
    """
    tensors = [ops.convert_to_tensor(p) for p in parts]
    key = _unchanged_weights_key(parts, tensors)
    results = _REUSED_KERNELS.get(owner)
    cached = None if results is None else results.get(name)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    result = build(tensors)
    if key is not None:
        _REUSED_KERNELS.setdefault(owner, {})[name] = (key, result)
    return result


_REUSED_KERNELS = weakref.WeakKeyDictionary()  # owner -> {name: (weights key, last result)}


def _unchanged_weights_key(parts, tensors):
    """On torch without autograd: a key that changes whenever a part's values may have changed, else None.

    torch runs `call` eagerly, so inference would re-expand the same compact
    kernel on every call (about 0.3 ms of a 2.5 ms convolution at 28x28x16,
    batch 128). Each in-place write (assign, optimizer step) bumps a torch
    tensor's `_version`, so (storage, version) identifies the values; a part
    that was cast (mixed precision) is a fresh tensor every call and is never
    cached. With autograd on, the expansion must be recorded, so no cache.
    """
    if keras.backend.backend() != "torch":
        return None
    import torch

    if torch.is_grad_enabled():
        return None
    key = []
    for part, tensor in zip(parts, tensors):
        stored = getattr(part, "value", None)
        if not isinstance(stored, torch.Tensor) or tensor.device.type == "meta" or _torch_tracing(tensor):
            return None
        if tensor.data_ptr() != stored.data_ptr():
            return None
        key.append((id(stored), stored.data_ptr(), stored._version, tensor.dtype))
    return tuple(key)


def _torch_tracing(tensor):
    """True while torch traces (torch.export, torch.onnx, torch.compile) rather than runs eagerly.

    A trace hands the layers fake or functional tensor subclasses; keeping one
    across calls would make every later eager call fail on it.
    """
    import torch

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


# ----------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------


# Whether the layer being called runs a training step (its `call(training=True)`): set by the
# layers around their computation, read by the primitives whose fastest form differs there.
_TRAINING_STEP = contextvars.ContextVar("keras_effconv_training_step", default=False)


@contextlib.contextmanager
def training_step(training):
    """Marks the primitives called inside as part of a training step (`training=True`) or not."""
    token = _TRAINING_STEP.set(bool(training))
    try:
        yield
    finally:
        _TRAINING_STEP.reset(token)


def conv(x, kernel, strides=1, padding="same", dilation_rate=1, data_format="channels_last"):
    """`keras.ops.conv` (a grouped kernel `(kh, kw, C_in/g, C_out)` gives g groups), without layout copies on torch."""
    if _pointwise_as_matmul(x, kernel, data_format):
        return _pointwise_matmul(x, kernel, strides, data_format)
    if keras.backend.backend() == "torch":
        return _torch_conv(x, kernel, strides, padding, dilation_rate, data_format)
    return ops.conv(
        x,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        data_format=data_format,
    )


def _pointwise_as_matmul(x, kernel, data_format):
    """Whether `conv` runs this (ungrouped 1x1) convolution as a matrix product.

    JAX: always. XLA:CPU runs a 1x1 convolution, and above all its
    gradients, well below its matrix-product rate: at batch 8, 56x56,
    256 -> 64 channels the convolution took 12.0 ms forward and 101.7 ms
    forward + backward against 6.1 / 19.9 ms as a product (28x28,
    512 -> 128: 8.7 / 50.4 against 3.5 / 12.2; batch 128, 28x28, 16 -> 16:
    1.1 / 12.2 against 0.9 / 3.1).
    torch (channels_last): inference on maps smaller than 56x56. Its
    convolution is the faster one at 56x56 (256 -> 64, batch 8: 3.9 ms
    against 4.3), the product below (7x7, 2048 -> 512: 8.1 against 3.2 ms;
    14x14, 1024 -> 256: 3.5 against 3.1; batch 128, 28x28, 16 -> 16: 1.35
    against 0.55). Not in training: although one layer's forward + backward
    measured faster as a product (7x7, 2048 -> 512: 21.0 against 10.4 ms),
    EffResNet50's factorized training step did not (median 1576 ms with
    convolutions, 1870 with products, interleaved).
    TensorFlow: in training steps (`training_step(True)`) on maps smaller
    than 56x56. oneDNN's 1x1 weight gradient is slow (a two-unit
    FactorizedConv2D step at 14x14x32, batch 128: 3.6 of 10.8 ms in its
    two 1x1 filter gradients, against 3.5 ms for the 3x3 Conv2D's): forward
    + backward of the layers measured 1.06-1.33x faster with products
    (FactorizedConv2D, DepthwiseSeparableConv2D, 14x14 to 7x7), but 0.96x at
    56x56x64 (a 56x56 256 -> 64 product 0.86x); in inference the product
    loses where TensorFlow fuses the convolution with its bias, residual and
    ReLU (two-unit FactorizedConv2D forward 0.73-0.98x).
    """
    if tuple(kernel.shape[:2]) != (1, 1) or kernel.shape[2] != x.shape[channel_axis(data_format)]:
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if data_format != "channels_last":
        return False
    h, w = x.shape[1:3]
    small = h is not None and w is not None and h * w < 56 * 56
    if backend == "torch":
        import torch

        return not torch.is_grad_enabled() and small
    return backend == "tensorflow" and _TRAINING_STEP.get() and small


def _pointwise_matmul(x, kernel, strides, data_format):
    """A 1x1 convolution as one matrix product over the flattened pixels (see `_pointwise_as_matmul`).

    Padding never applies to a 1x1 kernel; strides subsample first.
    """
    x = subsample(x, strides, data_format)
    matrix = ops.reshape(kernel, kernel.shape[2:])
    if data_format == "channels_last":
        shape = ops.shape(x)
        y = ops.matmul(ops.reshape(x, (-1, shape[3])), matrix)
        return ops.reshape(y, (shape[0], shape[1], shape[2], matrix.shape[1]))
    return ops.einsum("bchw,cf->bfhw", x, matrix)


def subsample(x, strides, data_format):
    """`x[:, ::sh, ::sw]` on the spatial axes of `data_format` (`every_nth` where the sizes are known)."""
    sh, sw = normalize_tuple(strides, 2, "strides")
    if (sh, sw) == (1, 1):
        return x
    if data_format != "channels_last":
        return x[:, :, ::sh, ::sw]
    if None in x.shape[1:3]:
        return x[:, ::sh, ::sw, :]
    return every_nth(x, (0, 0), [ceil_div(n, s) for n, s in zip(x.shape[1:3], (sh, sw))], (sh, sw))


def _torch_conv(x, kernel, strides, padding, dilation_rate, data_format):
    """`keras.ops.conv` on torch, reading and writing channels_last tensors in place.

    Keras' torch backend copies a channels_last input to NCHW, back to
    channels_last memory order, and copies the output once more (three
    copies around every convolution: 46-51% of CompConv2D's and a
    two-unit FactorizedConv2D's forward time at 28x28x16, batch 128). A
    permuted NHWC tensor already is an NCHW tensor in torch's channels_last
    memory format, which its CPU convolutions take as it is; the result,
    permuted back, is NHWC without a copy.
    """
    import torch.nn.functional as F

    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    strides = normalize_tuple(strides, 2, "strides")
    dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
    kh, kw, in_per_group, _ = kernel.shape
    channels_last = data_format == "channels_last"
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    groups = x.shape[1] // in_per_group
    weight = kernel.permute(3, 2, 0, 1)
    pad = (0, 0)
    if padding == "same":
        ph = _same_pad_amounts(x.shape[2], kh, strides[0], dilation_rate[0])
        pw = _same_pad_amounts(x.shape[3], kw, strides[1], dilation_rate[1])
        if ph[0] == ph[1] and pw[0] == pw[1]:
            pad = (ph[0], pw[0])
        else:
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
    y = F.conv2d(x, weight, stride=strides, padding=pad, dilation=dilation_rate, groups=groups)
    return y.permute(0, 2, 3, 1) if channels_last else y


def in_tensorflow_xla():
    """Whether this call is being traced into a TensorFlow `jit_compile=True` function.

    TensorFlow exposes the XLA-context test only privately; without it the
    answer is False (the forms for TensorFlow without XLA run, which are
    exact there too, only slower under XLA).
    """
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _tensorflow_grouped_kernel_usable():
    """Whether the "tf_nn" grouped form may run: TensorFlow, outside XLA-compiled functions.

    XLA on CPU differentiates a grouped convolution about 15x slower than the
    per-group split (measured at 14x14x256, 4 groups), so inside
    `jit_compile=True` the form gives way to "split".
    """
    return keras.backend.backend() == "tensorflow" and not in_tensorflow_xla()


def grouped_conv(
    x,
    kernel,
    groups,
    strides=1,
    padding="same",
    dilation_rate=1,
    data_format="channels_last",
    form=None,
):
    """Grouped convolution with a Keras grouped kernel `(kh, kw, C_in/g, C_out)`.

    Output channels `[i * C_out/g, (i+1) * C_out/g)` see input channels
    `[i * C_in/g, (i+1) * C_in/g)`, exactly like `keras.layers.Conv2D(groups=g)`.
    """
    if groups == 1:
        return conv(x, kernel, strides, padding, dilation_rate, data_format)
    in_per_group = kernel.shape[2]
    out_channels = kernel.shape[3]
    if in_per_group == 1:
        # One input channel per group is a depthwise conv with a multiplier.
        multiplier = out_channels // groups
        dw_kernel = ops.reshape(kernel, tuple(kernel.shape[:2]) + (groups, multiplier))
        return depthwise_conv(x, dw_kernel, strides, padding, dilation_rate, data_format)
    form = form or fast_form("grouped")
    if form == "native":
        return conv(x, kernel, strides, padding, dilation_rate, data_format)
    if form == "tf_nn" and data_format == "channels_last" and _tensorflow_grouped_kernel_usable():
        import tensorflow as tf

        return tf.nn.convolution(
            x,
            kernel,
            strides=normalize_tuple(strides, 2, "strides"),
            padding=padding.upper(),
            dilations=normalize_tuple(dilation_rate, 2, "dilation_rate"),
            data_format="NHWC",
        )
    out_per_group = out_channels // groups
    outputs = []
    for g in range(groups):
        xg = slice_channels(x, g * in_per_group, (g + 1) * in_per_group, data_format)
        kg = kernel[:, :, :, g * out_per_group : (g + 1) * out_per_group]
        outputs.append(conv(xg, kg, strides, padding, dilation_rate, data_format))
    return concat_channels(outputs, data_format)


def _tap_patch(x, tap, span, strides):
    """The input window tap `tap` multiplies: `x[:, r0 : r0 + span_h : sh, c0 : c0 + span_w : sw, :]`."""
    r0, c0 = tap
    return x[:, r0 : r0 + span[0] : strides[0], c0 : c0 + span[1] : strides[1], :]


def _shift_sum(x, weights, taps, span, strides):
    """`sum_t patch_t(x) * weights[t]`: the shift-form depthwise convolution of a padded NHWC `x`."""
    acc = None
    for t, tap in enumerate(taps):
        term = _tap_patch(x, tap, span, strides) * weights[t]
        acc = term if acc is None else acc + term
    return acc


def _jax_shift_sum(taps, span, strides):
    """`_shift_sum` with a weight gradient XLA:CPU runs fast.

    Autodiff turns the per-tap weight gradients `sum(patch_t * g)` into
    sibling reductions that XLA:CPU compiles badly: at 28x28x16, batch 128,
    the nine of a 3x3 kernel take 20 ms together against 0.6 ms each alone,
    which made FactorizedConv2D's training step 6x slower than Conv2D's. A
    `lax.scan` over the taps runs them one at a time (2.2 ms). The input
    gradient stays autodiff's (pads of the output gradient, fused).
    """
    import jax

    @jax.custom_vjp
    def shift_sum(x, weights):
        return _shift_sum(x, weights, taps, span, strides)

    def forward(x, weights):
        return shift_sum(x, weights), (x, weights)

    def backward(residuals, grad):
        x, weights = residuals
        _, input_vjp = jax.vjp(lambda x: _shift_sum(x, weights, taps, span, strides), x)
        (grad_x,) = input_vjp(grad)
        size = (x.shape[0], span[0], span[1], x.shape[3])

        def tap_gradient(_, tap):
            window = jax.lax.dynamic_slice(x, (0, tap[0], tap[1], 0), size)
            patch = window[:, :: strides[0], :: strides[1], :]
            return None, jax.numpy.sum(patch * grad, axis=(0, 1, 2))

        _, grad_weights = jax.lax.scan(tap_gradient, None, jax.numpy.asarray(taps, dtype="int32"))
        return grad_x, grad_weights.astype(weights.dtype)

    shift_sum.defvjp(forward, backward)
    return shift_sum


def _tensorflow_shift_sum(taps, span, strides, kernel_size, dilation_rate):
    """`_shift_sum` for TensorFlow under XLA, with TensorFlow's own depthwise weight gradient.

    XLA:CPU runs TensorFlow's native depthwise convolution about 10x slower
    than the shift form (54.6 vs 4.1 ms at 28x28x16, batch 128; 26.0 vs
    2.6 ms at 28x28x128, batch 8). Autodiff's per-tap weight reductions of
    the shift form are sibling reductions XLA:CPU compiles badly (as on JAX):
    over five shapes of the benchmark grid they took 14-33 ms, a scan over
    the taps 12-64 ms, a scan of matmul reductions 3.7-21 ms, and the native
    weight gradient (what autodiff of the native convolution runs) a steady
    9.0-11.8 ms, so that one stays. The input gradient is autodiff's (pads
    of the output gradient, fused).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def shift_sum(x, weights):
        def backward(grad):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = _shift_sum(x, weights, taps, span, strides)
            grad_x = tape.gradient(y, x, output_gradients=grad)
            # `x` is already padded (and repeated per multiplier), so the kernel is (kh, kw, C, 1), "VALID".
            grad_kernel = tf.compat.v1.nn.depthwise_conv2d_native_backprop_filter(
                x,
                (kernel_size[0], kernel_size[1], x.shape[3], 1),
                grad,
                (1, strides[0], strides[1], 1),
                "VALID",
                dilations=(1, dilation_rate[0], dilation_rate[1], 1),
            )
            return grad_x, tf.cast(tf.reshape(grad_kernel, weights.shape), weights.dtype)

        return _shift_sum(x, weights, taps, span, strides), backward

    return shift_sum


def _same_pad_amounts(length, kernel, stride, dilation):
    effective = (kernel - 1) * dilation + 1
    out = -(-length // stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2


def depthwise_conv(
    x,
    kernel,
    strides=1,
    padding="same",
    dilation_rate=1,
    data_format="channels_last",
    form=None,
):
    """Depthwise convolution with a kernel `(kh, kw, C, multiplier)`."""
    strides = normalize_tuple(strides, 2, "strides")
    dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
    form = form or ("shift" if in_tensorflow_xla() else fast_form("depthwise"))
    spatial = spatial_dims(x.shape, data_format)
    if keras.backend.backend() == "torch" and form != "shift":
        kh, kw, channels, multiplier = kernel.shape
        grouped = ops.reshape(kernel, (kh, kw, 1, channels * multiplier))
        return _torch_conv(x, grouped, strides, padding, dilation_rate, data_format)
    if form != "shift" or any(s is None for s in spatial):
        return ops.depthwise_conv(
            x,
            kernel,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            data_format=data_format,
        )
    return _shift_depthwise(x, kernel, strides, padding, dilation_rate, data_format)


def _shift_depthwise(x, kernel, strides, padding, dilation_rate, data_format):
    # Exact depthwise conv as a sum of k*k shifted copies scaled per channel;
    # elementwise work fuses well in XLA, unlike XLA:CPU's grouped conv.
    kh, kw, channels, multiplier = kernel.shape
    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    if data_format == "channels_first":
        x = ops.transpose(x, (0, 2, 3, 1))
    height, width = x.shape[1], x.shape[2]
    if multiplier > 1:
        x = ops.repeat(x, multiplier, axis=-1)
    # Row t = i * kw + j: the weights of tap (i, j), one per output channel (channel-major with the multiplier).
    weights = ops.reshape(kernel, (kh * kw, channels * multiplier))
    out_h = conv_output_length(height, kh, strides[0], padding, dilation_rate[0])
    out_w = conv_output_length(width, kw, strides[1], padding, dilation_rate[1])
    if padding == "same":
        ph = _same_pad_amounts(height, kh, strides[0], dilation_rate[0])
        pw = _same_pad_amounts(width, kw, strides[1], dilation_rate[1])
        x = ops.pad(x, [(0, 0), ph, pw, (0, 0)])
    taps = tuple((i * dilation_rate[0], j * dilation_rate[1]) for i in range(kh) for j in range(kw))
    span = ((out_h - 1) * strides[0] + 1, (out_w - 1) * strides[1] + 1)
    if keras.backend.backend() == "jax":
        acc = _jax_shift_sum(taps, span, tuple(strides))(x, weights)
    elif in_tensorflow_xla():
        acc = _tensorflow_shift_sum(taps, span, tuple(strides), (kh, kw), tuple(dilation_rate))(x, weights)
    else:
        acc = _shift_sum(x, weights, taps, span, strides)
    if data_format == "channels_first":
        acc = ops.transpose(acc, (0, 3, 1, 2))
    return acc


def _centre_taps_are_input(kernel_size, strides, padding, dilation_rate):
    # Stride 1, "same" and an odd effective kernel: every window is centred on its own pixel.
    (kh, kw), (dh, dw) = kernel_size, dilation_rate
    return padding == "same" and tuple(strides) == (1, 1) and (kh - 1) * dh % 2 == 0 and (kw - 1) * dw % 2 == 0


def centre_tap_crop(spatial, kernel_size, strides, padding, dilation_rate):
    """Where the centre taps of a convolution's windows lie in its input.

    The centre tap of window `o` along an axis is input position
    `start + o * stride` (TensorFlow's "same" convention: extra padding goes
    after). Cropping `((top, bottom), (left, right))` from the input and then
    taking every stride-th position therefore yields exactly the centre taps.

    Args:
        spatial: `(height, width)` of the input; entries may be None only when
            the result is None.
        kernel_size, strides, dilation_rate: pairs of ints.
        padding: `"same"` or `"valid"`.

    Returns:
        None when the centre taps are the input itself (stride 1, "same",
        odd effective kernel), else the crop `((top, bottom), (left, right))`.

    Raises:
        ValueError: when a spatial size needed for the crop is unknown.
    """
    if _centre_taps_are_input(kernel_size, strides, padding, dilation_rate):
        return None
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation_rate
    crops = []
    for length, k, s, d in ((spatial[0], kh, sh, dh), (spatial[1], kw, sw, dw)):
        if length is None:
            raise ValueError("the centre taps of a strided or 'valid' convolution need a known spatial size")
        centre = ((k - 1) * d) // 2
        start = centre - _same_pad_amounts(length, k, s, d)[0] if padding == "same" else centre
        span = (conv_output_length(length, k, s, padding, d) - 1) * s + 1
        crops.append((start, length - start - span))
    return tuple(crops)


def sample_window_centres(x, kernel_size, strides, padding, dilation_rate, data_format):
    """The input value at the centre tap of every convolution window.

    This is exactly what a 1x1 kernel placed at the centre of a k x k kernel
    sees, with the padding convention of `keras.ops.conv` (TensorFlow's "same":
    extra padding goes after). Used for HetConv's 1x1 kernels and CompConv's
    identity channels when the convolution is strided or "valid".
    """
    if _centre_taps_are_input(kernel_size, strides, padding, dilation_rate):
        return x
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation_rate
    if data_format == "channels_first":
        x = ops.transpose(x, (0, 2, 3, 1))
    spatial = x.shape[1:3]
    if spatial[0] is not None and spatial[1] is not None:
        ((top, bottom), (left, right)) = centre_tap_crop(spatial, kernel_size, strides, padding, dilation_rate)
        counts = [
            conv_output_length(n, k, s, padding, d)
            for n, k, s, d in zip(spatial, kernel_size, strides, dilation_rate)
        ]
        y = every_nth(x, (top, left), counts, strides)
    else:
        # Only TensorFlow graphs with unknown spatial size come here.
        dynamic = ops.shape(x)
        starts, lengths = [], []
        for axis, (k, s, d) in zip((1, 2), ((kh, sh, dh), (kw, sw, dw))):
            length = dynamic[axis]
            centre = ((k - 1) * d) // 2
            effective = (k - 1) * d + 1
            if padding == "same":
                out = (length + s - 1) // s
                total = ops.maximum((out - 1) * s + effective - length, 0)
                start = centre - total // 2
            else:
                out = (length - effective) // s + 1
                start = centre
            starts.append(start)
            lengths.append(out)
        y = ops.slice(
            x,
            [0, starts[0], starts[1], 0],
            [dynamic[0], (lengths[0] - 1) * sh + 1, (lengths[1] - 1) * sw + 1, dynamic[3]],
        )
        y = y[:, ::sh, ::sw, :]
    if data_format == "channels_first":
        y = ops.transpose(y, (0, 3, 1, 2))
    return y


def every_nth(x, starts, counts, strides):
    """`x[:, h0::sh, w0::sw, :]` limited to `counts` rows and columns (channels_last, static sizes).

    TensorFlow's StridedSlice with spatial strides runs element by element:
    8.0 ms for every other row and column of an 8x28x28x512 map, against
    0.74 ms for the same values as a reshape into `(rows, sh, cols, sw * C)`
    blocks and a unit-stride slice of it (contiguous runs of `C` floats).
    That form needs `count * stride` positions from some start `start - j`,
    `0 <= j < stride`, inside the map; elsewhere (and on other backends,
    whose strided slices are views or fused) the plain strided slice runs.
    """
    (h0, w0), (nh, nw), (sh, sw) = starts, counts, strides
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    plain = x[:, h0 : h0 + (nh - 1) * sh + 1 : sh, w0 : w0 + (nw - 1) * sw + 1 : sw, :]
    if (sh, sw) == (1, 1) or keras.backend.backend() != "tensorflow" or in_tensorflow_xla():
        return plain
    if None in (height, width, channels):
        return plain
    offsets = []
    for start, count, stride, length in ((h0, nh, sh, height), (w0, nw, sw, width)):
        j = max(0, start + count * stride - length)
        if j > min(start, stride - 1):  # also when count * stride > length (then j > start)
            return plain
        offsets.append(j)
    (jh, jw) = offsets
    top, left = h0 - jh, w0 - jw
    block = x[:, top : top + nh * sh, left : left + nw * sw, :]
    block = ops.reshape(block, (-1, nh, sh, nw, sw * channels))
    return block[:, :, jh, :, jw * channels : (jw + 1) * channels]


def add_bias(x, bias, data_format):
    """`x` plus a per-channel `bias` on the channel axis of `data_format`.

    channels_first subtracts the negated bias: Keras' TensorFlow `ops.add`
    turns an add of a `(1, C, 1, 1)` tensor into `tf.nn.bias_add` and picks
    NHWC whenever the last axis (the width) happens to equal C, which puts the
    bias on the wrong axis (keras.layers.Conv2D has the same bug);
    `ops.subtract` has no such heuristic, and negation is exact.
    """
    if data_format == "channels_last":
        return ops.add(x, bias)
    return ops.subtract(x, ops.reshape(ops.negative(bias), (1, -1, 1, 1)))


def depth_to_space(x, block_size, data_format):
    """Moves channel blocks to space with ONE channel order on every backend.

    Input channel `(a * block_size + b) * C + c` becomes output channel `c` at
    row offset `a`, column offset `b`, for both data formats (Keras'
    channels_last order). Keras' own `ops.depth_to_space` uses another order
    for channels_first on TensorFlow than on JAX and torch, so channels_first
    goes through channels_last here.
    """
    if data_format == "channels_last":
        return ops.depth_to_space(x, block_size, data_format="channels_last")
    y = ops.depth_to_space(ops.transpose(x, (0, 2, 3, 1)), block_size, data_format="channels_last")
    return ops.transpose(y, (0, 3, 1, 2))


def ceil_div(a, b):
    return -(-a // b)


def log2_floor(value):
    return int(math.floor(math.log2(value)))

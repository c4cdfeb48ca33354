import numpy as np
import pytest

import keras

import reference
from conftest import BACKEND, assert_close
from keras_effconv.layers import CompConv2D, HetConv2D, InterleavedGroupConv2D
from keras_effconv.layers import _core


@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (2, "same", 1), (2, "valid", 1), (1, "same", 2), (1, "valid", 2)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_both_depthwise_forms_match_reference(rng, strides, padding, dilation, multiplier):
    x = rng.standard_normal((2, 9, 8, 6)).astype("float32")
    k = rng.standard_normal((3, 3, 6, multiplier)).astype("float32")
    ref = reference.depthwise2d(x, k, (strides,) * 2, padding, (dilation,) * 2)
    for form in ("native", "shift"):
        y = _core.depthwise_conv(x, k, strides, padding, dilation, "channels_last", form=form)
        assert_close(reference.to_numpy(y), ref)


def _grouped_as_dense(k, groups, in_channels):
    dense = np.zeros(k.shape[:2] + (in_channels, k.shape[3]))
    i, o = k.shape[2], k.shape[3] // groups
    for g in range(groups):
        dense[:, :, i * g : i * (g + 1), o * g : o * (g + 1)] = k[:, :, :, o * g : o * (g + 1)]
    return dense


# "tf_nn" is TensorFlow's own grouped kernel (elsewhere it falls back to "split").
@pytest.mark.parametrize("form", ["native", "split", "tf_nn"])
@pytest.mark.parametrize("strides, padding, dilation", [(2, "same", 1), (1, "valid", 2)])
def test_every_grouped_form_matches_reference(rng, form, strides, padding, dilation):
    x = rng.standard_normal((2, 9, 9, 8)).astype("float32")
    k = rng.standard_normal((3, 3, 2, 12)).astype("float32")
    y = _core.grouped_conv(x, k, 4, strides=strides, padding=padding, dilation_rate=dilation, form=form)
    expected = reference.conv2d(x, _grouped_as_dense(k, 4, 8), (strides,) * 2, padding, (dilation,) * 2)
    assert_close(reference.to_numpy(y), expected)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf_nn form is TensorFlow's grouped kernel")
def test_tf_grouped_kernel_gradient_matches_dense_equivalent(rng):
    import tensorflow as tf

    x = tf.constant(rng.standard_normal((2, 8, 8, 12)).astype("float32"))
    k = tf.Variable(rng.standard_normal((3, 3, 4, 6)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss = tf.reduce_sum(_core.grouped_conv(x, k, 3, form="tf_nn") ** 2)
    grad_k, grad_x = tape.gradient(loss, [k, x])
    # Independent reference: the dense kernel with structural zeros, differentiated through the gather.
    mask = _grouped_as_dense(np.ones((3, 3, 4, 6)), 3, 12)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        dense = tf.tile(k, (1, 1, 3, 1)) * mask
        loss_ref = tf.reduce_sum(tf.nn.conv2d(x, dense, 1, "SAME") ** 2)
    ref_k, ref_x = tape.gradient(loss_ref, [k, x])
    assert_close(grad_x.numpy(), ref_x.numpy())
    assert_close(grad_k.numpy(), ref_k.numpy())


def test_fast_forms_cover_every_backend():
    for backend in ("tensorflow", "jax", "torch"):
        assert set(_core._FAST_FORMS[backend]) == {"grouped", "depthwise"}


@pytest.mark.parametrize("size", [(8, 8), (9, 10), (7, 7)])
@pytest.mark.parametrize("strides", [(2, 2), (3, 2)])
def test_every_nth_matches_numpy_strided_slicing(rng, size, strides):
    # Every start/count the layers can ask for, including those whose last block leaves the map.
    x = rng.standard_normal((2,) + size + (3,)).astype("float32")
    for h0 in range(strides[0]):
        for w0 in range(strides[1]):
            rows = len(range(h0, size[0], strides[0]))
            cols = len(range(w0, size[1], strides[1]))
            for counts in [(rows, cols), (rows - 1, cols), (max(rows - 1, 1), max(cols - 1, 1))]:
                expected = x[:, h0 :: strides[0], w0 :: strides[1], :][:, : counts[0], : counts[1]]
                got = reference.to_numpy(_core.every_nth(keras.ops.convert_to_tensor(x), (h0, w0), counts, strides))
                assert_close(got, expected, atol=0)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TF graphs have unknown spatial sizes inside call()")
@pytest.mark.parametrize("factory", [lambda: HetConv2D(8, 3, strides=2, part=2), lambda: CompConv2D(12, 3, strides=2, depth=2)])
def test_dynamic_spatial_shapes_in_tf_graph(rng, factory):
    import tensorflow as tf

    layer = factory()
    layer.build((None, None, None, 8))
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 8))])
    for size in [(7, 9), (8, 8)]:
        x = rng.standard_normal((2,) + size + (8,)).astype("float32")
        assert_close(traced(x).numpy(), reference.to_numpy(layer(x)))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile is TensorFlow's XLA switch")
def test_tf_grouped_form_inside_xla_matches_reference(rng):
    import tensorflow as tf

    x = rng.standard_normal((2, 9, 9, 8)).astype("float32")
    k = rng.standard_normal((1, 1, 2, 12)).astype("float32")
    compiled = tf.function(lambda a: _core.grouped_conv(a, k, 4, form="tf_nn"), jit_compile=True)
    assert_close(compiled(x).numpy(), reference.conv2d(x, _grouped_as_dense(k, 4, 8)))


@pytest.mark.skipif(BACKEND != "torch", reason="only torch keeps an expanded kernel between eager calls")
def test_torch_inference_reuses_the_expanded_kernel_until_a_weight_changes(rng):
    import torch

    layer = HetConv2D(8, 3, part=4, execution="dense", use_bias=False)
    x = rng.standard_normal((1, 5, 5, 8)).astype("float32")
    layer.build(x.shape)
    with torch.no_grad():
        first = _core.gather_from_parts(layer._weights(), layer._dense_index)
        assert _core.gather_from_parts(layer._weights(), layer._dense_index) is first
        before = reference.to_numpy(layer(x))
        layer.kernel.assign(layer.kernel.numpy() + 1.0)  # an in-place write, as an optimizer step does
        after = reference.to_numpy(layer(x))
    assert not np.allclose(before, after)
    assert_close(after, reference.conv2d(x, reference.to_numpy(layer.dense_kernel())))
    # With autograd on, nothing is reused: the expansion is part of the graph.
    assert _core.gather_from_parts(layer._weights(), layer._dense_index).requires_grad
    igc = InterleavedGroupConv2D(8, 3, primary_groups=2, execution="dense", use_bias=False)
    igc.build(x.shape)
    with torch.no_grad():
        assert igc._composed_kernel() is igc._composed_kernel()
        igc.secondary_kernel.assign(igc.secondary_kernel.numpy() * 2.0)
        after = reference.to_numpy(igc(x))
    # Outside no_grad nothing is reused, so this reference kernel is freshly composed.
    assert_close(after, reference.conv2d(x, reference.to_numpy(igc.dense_kernel())))


@pytest.mark.skipif(BACKEND != "torch", reason="only torch keeps tensors between eager calls")
def test_torch_trace_first_leaves_no_fake_tensor_in_the_caches(rng):
    import torch

    # A model traced before its first eager call: the caches must not keep the trace's fake
    # tensors, or every later eager call fails on them.
    inputs = keras.Input((6, 6, 8), batch_size=1)
    outputs = HetConv2D(8, 3, part=4, execution="dense", use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)

    class Forward(torch.nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, x):
            return self.wrapped(x, training=False)

    x = rng.standard_normal((1, 6, 6, 8)).astype("float32")
    with torch.no_grad():
        torch.export.export(Forward(model).eval(), (torch.from_numpy(x),), strict=False)
        eager = reference.to_numpy(model(x))
    kernel = reference.to_numpy(model.layers[-1].dense_kernel())
    assert_close(eager, reference.conv2d(x, kernel))


class _KernelAsWeight(keras.layers.Layer):
    """`op(x, kernel)` for one `_core` primitive, with `kernel` as a trainable weight (so gradients reach it)."""

    def __init__(self, kernel, op):
        super().__init__()
        self.initial, self.op = kernel, op

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=self.initial.shape, initializer=keras.initializers.Constant(self.initial))

    def call(self, x, training=None):
        with _core.training_step(training):  # as the library's layers call their primitives
            return self.op(x, self.kernel)


@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (2, "same", 1), (2, "valid", 1), (1, "same", 2)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_shift_depthwise_gradients_match_reference(rng, strides, padding, dilation, multiplier):
    # On JAX the shift form has its own weight gradient (a scan over the taps); every backend
    # is checked against the NumPy kernel gradient of the equivalent diagonal dense kernel.
    from conftest import weight_gradients

    x = rng.standard_normal((2, 9, 8, 3)).astype("float32")
    k = rng.standard_normal((3, 3, 3, multiplier)).astype("float32")
    layer = _KernelAsWeight(
        k, lambda v, kernel: _core.depthwise_conv(v, kernel, strides, padding, dilation, "channels_last", form="shift")
    )
    y = reference.to_numpy(layer(x))
    cotangent = rng.standard_normal(y.shape).astype("float32")
    (grad,) = weight_gradients(layer, x, cotangent)
    assert_close(grad, _depthwise_kernel_gradient(x, cotangent, k.shape, strides, padding, dilation))
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        grad_x = jax.grad(lambda v: jnp.sum(layer(v) * cotangent))(jnp.asarray(x))
        assert_close(np.asarray(grad_x), _depthwise_input_gradient(x, k, cotangent, strides, padding, dilation))


def _depthwise_kernel_gradient(x, cotangent, kernel_shape, strides, padding, dilation):
    """NumPy: the depthwise kernel's gradient, read off the equivalent diagonal dense kernel's."""
    kh, kw, channels, multiplier = kernel_shape
    dense = reference.conv2d_kernel_gradient(x, cotangent, (kh, kw, channels, channels * multiplier),
                                             (strides,) * 2, padding, (dilation,) * 2)
    return np.stack([dense[:, :, c, c * multiplier : (c + 1) * multiplier] for c in range(channels)], axis=2)


def _depthwise_input_gradient(x, k, cotangent, strides, padding, dilation):
    """NumPy: y is linear in x, so its input gradient is A^T cotangent for the reference's matrix A."""
    basis = np.eye(x.size).reshape((x.size,) + x.shape)
    columns = np.stack([reference.depthwise2d(b, k, (strides,) * 2, padding, (dilation,) * 2).ravel()
                        for b in basis], axis=1)
    return (columns.T @ cotangent.ravel()).reshape(x.shape)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile is TensorFlow's XLA switch")
@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (2, "same", 1), (2, "valid", 1), (1, "same", 2)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_tf_depthwise_inside_xla_runs_the_shift_form_with_its_own_gradient(rng, strides, padding, dilation,
                                                                            multiplier):
    # Under jit_compile=True the default form is the shift form with its own gradient
    # (XLA:CPU's native depthwise conv is ~13x slower); output and both gradients against NumPy.
    import tensorflow as tf

    x = rng.standard_normal((2, 9, 8, 3)).astype("float32")
    k = rng.standard_normal((3, 3, 3, multiplier)).astype("float32")
    y_ref = reference.depthwise2d(x, k, (strides,) * 2, padding, (dilation,) * 2)
    cotangent = rng.standard_normal(y_ref.shape).astype("float32")
    kernel = tf.Variable(k)
    forms = []

    @tf.function(jit_compile=True)
    def forward_backward(v):
        forms.append(_core.in_tensorflow_xla())
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = _core.depthwise_conv(v, kernel, strides, padding, dilation, "channels_last")
            loss = tf.reduce_sum(y * cotangent)
        return (y,) + tuple(tape.gradient(loss, [kernel, v]))

    y, grad_k, grad_x = (t.numpy() for t in forward_backward(tf.constant(x)))
    assert forms == [True]
    assert_close(y, y_ref)
    assert_close(grad_k, _depthwise_kernel_gradient(x, cotangent, k.shape, strides, padding, dilation))
    assert_close(grad_x, _depthwise_input_gradient(x, k, cotangent, strides, padding, dilation))


@pytest.mark.parametrize("size", [(9, 10), (8, 8)])
@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "same"), (2, "valid"), ((1, 3), "valid")])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_pointwise_conv_and_its_kernel_gradient_match_reference(rng, size, strides, padding, data_format):
    # Whichever path runs (convolution, or the matrix product over the pixels), output and
    # kernel gradient equal the NumPy convolution's, strides and both layouts included.
    from conftest import weight_gradients

    x = rng.standard_normal((2,) + size + (6,)).astype("float32")
    k = rng.standard_normal((1, 1, 6, 5)).astype("float32")
    strides = strides if isinstance(strides, tuple) else (strides, strides)
    expected = reference.conv2d(x, k, strides, padding)
    cotangent = rng.standard_normal(expected.shape).astype("float32")
    grad_expected = reference.conv2d_kernel_gradient(x, cotangent, k.shape, strides, padding)
    if data_format == "channels_first":
        x, cotangent = x.transpose(0, 3, 1, 2), cotangent.transpose(0, 3, 1, 2)
        expected = expected.transpose(0, 3, 1, 2)
    # `_core.conv` with a 1x1 kernel: a matrix product on JAX, in torch inference and in TensorFlow
    # training steps (the gradient below) below 56x56.
    layer = _KernelAsWeight(
        k, lambda v, kernel: _core.conv(v, kernel, strides=strides, padding=padding, data_format=data_format)
    )
    assert_close(reference.to_numpy(layer(x)), expected)
    if BACKEND == "torch":
        import torch

        with torch.no_grad():  # torch takes the product path in inference only
            assert_close(reference.to_numpy(layer(x)), expected)
    (grad,) = weight_gradients(layer, x, cotangent)
    assert_close(grad, grad_expected)
    if BACKEND == "tensorflow":
        with _core.training_step(True):
            assert _core._pointwise_as_matmul(x, k, data_format) == (data_format == "channels_last")
        assert not _core._pointwise_as_matmul(x, k, data_format)

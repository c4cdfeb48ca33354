import numpy as np
import pytest

import keras
from keras import ops

import reference
from conftest import BACKEND, assert_close, randomize, weight_gradients
from keras_effconv.layers import HetConv2D


def paper_kernel(layer, c_in):
    """Dense HetConv kernel built from the paper's rule and the documented weight layout.

    Filter j: k x k kernel on channels i with (i - j) mod P == 0, a 1x1 kernel
    (at the window centre) on every other channel.
    """
    p, n = layer.part, layer.filters
    kh, kw = layer.kernel_size
    kxk = reference.to_numpy(layer.kernel)  # (kh, kw, c_in/P, n), class-ordered
    pw = reference.to_numpy(layer.pointwise_kernel)[0, 0] if p > 1 else None
    ng = n // p
    dense = np.zeros((kh, kw, c_in, n))
    for j in range(n):
        r, t = j % p, j // p
        column = r * ng + t
        free = [i for i in range(c_in) if (i - j) % p]
        for i in range(c_in):
            if (i - j) % p == 0:
                dense[:, :, i, j] = kxk[:, :, (i - r) // p, column]
            else:
                dense[kh // 2, kw // 2, i, j] = pw[free.index(i), j]
    return dense


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("part", [1, 2, 4])
def test_matches_dense_conv_and_paper_rule(rng, strides, padding, part):
    c_in, n = 8, 12
    layer = HetConv2D(n, 3, strides=strides, padding=padding, part=part, use_bias=False)
    x = rng.standard_normal((2, 9, 10, c_in)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    dense = reference.to_numpy(layer.dense_kernel())
    expected_kernel = paper_kernel(layer, c_in)
    assert_close(dense, expected_kernel, atol=0)
    # Zero pattern straight from the rule, independent of the weights.
    for i in range(c_in):
        for j in range(n):
            taps = np.count_nonzero(dense[:, :, i, j])
            assert taps == (9 if (i - j) % part == 0 else 1)
    y = reference.to_numpy(layer(x))
    ref = reference.conv2d(x, expected_kernel, (strides,) * 2, padding)
    assert_close(y, ref)
    keras_ref = reference.to_numpy(
        ops.conv(x, layer.dense_kernel(), strides=strides, padding=padding)
    )
    assert_close(y, keras_ref)


def blocked_orders(c_in, n, part):
    """Position r * (count / part) + u of a blocked side holds the paper's channel r + part * u."""
    def order(count):
        return np.array([r + part * u for r in range(part) for u in range(count // part)])

    return order(c_in), order(n)


def check_form_against_paper_kernel(rng, form, strides, padding, part, blocked_inputs=False, blocked_outputs=False):
    c_in, n = 12, 12
    layer = HetConv2D(n, 3, strides=strides, padding=padding, part=part, use_bias=False, execution=form,
                      blocked_inputs=blocked_inputs, blocked_outputs=blocked_outputs)
    x = rng.standard_normal((2, 9, 10, c_in)).astype("float32")
    layer.build(x.shape)
    assert layer.execution_form(x.shape, training=True) == form
    in_order, out_order = blocked_orders(c_in, n, part)

    def layer_kernel():
        # The paper's kernel with the blocked sides' channels relabelled.
        kernel = paper_kernel(layer, c_in)
        if blocked_inputs:
            kernel = kernel[:, :, in_order, :]
        if blocked_outputs:
            kernel = kernel[:, :, :, out_order]
        return kernel

    # Distinct ids as weights: the paper rule's kernel then says where each free weight sits.
    offset = 0
    for variable in layer.trainable_variables:
        variable.assign(np.arange(offset + 1, offset + 1 + np.prod(variable.shape)).reshape(variable.shape).astype("float32"))
        offset += int(np.prod(variable.shape))
    positions = layer_kernel()
    randomize(layer, rng)
    expected_kernel = layer_kernel()
    y = reference.to_numpy(layer(x))
    assert_close(y, reference.conv2d(x, expected_kernel, (strides,) * 2, padding))
    assert_close(reference.to_numpy(layer.dense_kernel()), expected_kernel, atol=0)
    cotangent = rng.standard_normal(y.shape).astype("float32")
    d_kernel = reference.conv2d_kernel_gradient(x, cotangent, expected_kernel.shape, (strides,) * 2, padding)
    # Each free weight's gradient: the dense-kernel gradient at its one position; masked positions reach none.
    expected = np.bincount(positions.astype(int).ravel(), weights=d_kernel.ravel(), minlength=offset + 1)[1:]
    got = np.concatenate([g.ravel() for g in weight_gradients(layer, x, cotangent)])
    assert_close(got, expected, rtol=1e-4)


@pytest.mark.parametrize("form", HetConv2D.EXECUTION_FORMS)
@pytest.mark.parametrize("strides, padding, part", [(1, "same", 4), (2, "valid", 4), (1, "same", 2), (1, "same", 3)])
def test_every_execution_form_matches_paper_kernel_and_its_gradient(rng, form, strides, padding, part):
    check_form_against_paper_kernel(rng, form, strides, padding, part)


@pytest.mark.parametrize("form", HetConv2D.EXECUTION_FORMS)
@pytest.mark.parametrize("blocked_inputs, blocked_outputs", [(True, False), (False, True), (True, True)])
def test_blocked_channel_orders_are_the_paper_layer_relabelled(rng, form, blocked_inputs, blocked_outputs):
    check_form_against_paper_kernel(rng, form, 2, "valid", 4, blocked_inputs, blocked_outputs)


def test_blocked_orders_skip_the_shuffles_and_say_so_in_their_inference_form():
    layer = HetConv2D(8, 3, part=4, blocked_inputs=True, blocked_outputs=True)
    layer.build((None, 6, 6, 16))
    form = layer.inference_form()
    assert np.array_equal(form.input_order, np.arange(16)) and np.array_equal(form.output_order, np.arange(8))
    natural = HetConv2D(8, 3, part=4)
    natural.build((None, 6, 6, 16))
    in_order, out_order = blocked_orders(16, 8, 4)
    assert np.array_equal(natural.inference_form().input_order, in_order)
    assert np.array_equal(natural.inference_form().output_order, out_order)
    restored = HetConv2D.from_config(layer.get_config())
    assert restored.blocked_inputs and restored.blocked_outputs
    with pytest.raises(TypeError, match="blocked_inputs.*bool"):
        HetConv2D(8, 3, blocked_inputs="yes")
    with pytest.raises(TypeError, match="blocked_outputs.*bool"):
        HetConv2D(8, 3, blocked_outputs=1)


def test_dilation_and_5x5(rng):
    layer = HetConv2D(8, 5, dilation_rate=2, part=2, use_bias=False)
    x = rng.standard_normal((1, 12, 11, 4)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    ref = reference.conv2d(x, paper_kernel(layer, 4), (1, 1), "same", (2, 2))
    assert_close(reference.to_numpy(layer(x)), ref)


@pytest.mark.parametrize("part", [1, 2, 4, 8])
def test_free_weight_count(part):
    c_in, n, k = 32, 16, 3
    layer = HetConv2D(n, k, part=part)
    layer.build((None, 8, 8, c_in))
    expected = k * k * c_in * n // part + c_in * n * (part - 1) // part + n
    assert layer.count_params() == expected


def test_macs_formula_and_paper_ratio():
    layer = HetConv2D(64, 3, part=4)
    macs = layer.compute_macs((32, 32, 64))
    assert macs == 32 * 32 * (9 * 64 * 64 // 4 + 64 * 64 * 3 // 4)
    standard = 32 * 32 * 9 * 64 * 64
    assert macs / standard == pytest.approx(1 / 4 + (1 - 1 / 4) / 9)
    strided = HetConv2D(64, 3, strides=2, padding="valid", part=4)
    assert strided.compute_macs((None, 32, 32, 64)) == 15 * 15 * (9 * 64 * 16 + 64 * 48)


def test_masked_positions_stay_zero_after_fit(rng):
    layer = HetConv2D(8, 3, part=4, kernel_regularizer="l2")
    model = keras.Sequential([keras.Input((8, 8, 8)), layer, keras.layers.GlobalAveragePooling2D()])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="mse")
    x = rng.standard_normal((16, 8, 8, 8)).astype("float32")
    y = rng.standard_normal((16, 8)).astype("float32")
    before = reference.to_numpy(layer.dense_kernel())
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = reference.to_numpy(layer.dense_kernel())
    masked = before == 0
    assert masked.sum() == 8 * (8 * 8 * 3 // 4)  # 8 off-centre taps on 3/4 of the pairs
    assert np.all(after[masked] == 0)
    assert np.any(after[~masked] != before[~masked])


def test_masked_positions_get_zero_gradient(rng):
    # The gradient w.r.t. the equivalent dense kernel, pulled back through the
    # layer's parametrisation, is zero exactly on the masked positions.
    layer = HetConv2D(8, 3, part=4, use_bias=False)
    x = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    dense = reference.to_numpy(layer.dense_kernel())
    # Perturbing one free weight moves only unmasked dense entries.
    for variable in layer.trainable_weights:
        value = reference.to_numpy(variable)
        bumped = value.copy()
        bumped.flat[3] += 1.0
        variable.assign(bumped.astype("float32"))
        delta = reference.to_numpy(layer.dense_kernel()) - dense
        variable.assign(value.astype("float32"))
        assert np.all(delta[dense == 0] == 0)
        assert np.count_nonzero(delta) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(filters=0), "filters"),
        (dict(filters=-3), "filters"),
        (dict(filters=8, part=0), "part"),
        (dict(filters=8, part=3), "part=3.*filters=8"),
        (dict(filters=8, kernel_size=2), "kernel_size.*odd"),
        (dict(filters=8, kernel_size=(3, 0)), "kernel_size"),
        (dict(filters=8, strides=0), "strides"),
        (dict(filters=8, padding="full"), "padding.*full"),
        (dict(filters=8, data_format="NHWC"), "data_format.*NHWC"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HetConv2D(**kwargs)


def test_part_must_divide_input_channels():
    with pytest.raises(ValueError, match=r"part=4.*input channels=6"):
        HetConv2D(8, 3, part=4).build((None, 8, 8, 6))


@pytest.mark.parametrize(
    "backend, channels, shape, training, expected",
    [
        ("tensorflow", 16, (128, 28, 28, 16), False, "dense"),  # 4 channels per group
        ("tensorflow", 64, (8, 56, 56, 64), False, "dense"),  # large map, inference
        ("tensorflow", 64, (8, 56, 56, 64), True, "grouped_dense"),
        ("tensorflow", 64, (128, 7, 7, 64), False, "dense"),  # 16 per group, both shuffles
        ("tensorflow", 256, (8, 14, 14, 256), False, "grouped_dense"),
        ("jax", 32, (128, 14, 14, 32), False, "dense"),
        ("jax", 32, (128, 14, 14, 32), True, "grouped_dense"),
        ("torch", 64, (128, 7, 7, 64), True, "dense"),
        ("torch", 128, (8, 28, 28, 128), False, "grouped_dense"),
        ("torch", 128, None, False, "grouped_dense"),
    ],
)
def test_auto_execution_rule(backend, channels, shape, training, expected):
    from keras_effconv.layers.hetconv import choose_hetconv_execution

    assert choose_hetconv_execution(4, channels, shape, "channels_last", training, backend, xla=False) == expected


def test_auto_execution_keeps_the_grouped_form_on_large_maps_without_shuffles():
    from keras_effconv.layers.hetconv import choose_hetconv_execution

    shape = (8, 56, 56, 64)
    assert choose_hetconv_execution(4, 64, shape, "channels_last", False, "tensorflow", xla=False, shuffles=0) == "grouped_dense"
    assert choose_hetconv_execution(4, 64, shape, "channels_last", False, "tensorflow", xla=False, shuffles=1) == "grouped_dense"
    # Fewer shuffles, fewer channels per group where the grouped form pays.
    small = (128, 14, 14, 32)
    assert choose_hetconv_execution(4, 32, small, "channels_last", True, "tensorflow", xla=False, shuffles=2) == "dense"
    assert choose_hetconv_execution(4, 32, small, "channels_last", True, "tensorflow", xla=False, shuffles=0) == "grouped_dense"
    # The layer tells the rule its shuffles: 16 channels per group at 56x56 take the grouped form on
    # every backend when blocked (in the paper's order TensorFlow and torch take the dense kernel).
    layer = HetConv2D(64, 3, part=4, blocked_inputs=True, blocked_outputs=True)
    layer.build((None, 56, 56, 64))
    assert layer.execution_form(shape) == "grouped_dense"


@pytest.mark.parametrize(
    "channels, shape, training, expected",
    [
        (64, (128, 7, 7, 64), False, "dense"),
        (128, (8, 28, 28, 128), True, "dense"),
        (256, (8, 14, 14, 256), False, "grouped_dense"),
        (256, (8, 14, 14, 256), True, "grouped_dense"),
    ],
)
def test_auto_execution_rule_under_tensorflow_xla(channels, shape, training, expected):
    from keras_effconv.layers.hetconv import choose_hetconv_execution

    assert choose_hetconv_execution(4, channels, shape, "channels_last", training, "tensorflow", xla=True) == expected
    # Other backends have no XLA switch of their own: the flag changes nothing there.
    assert choose_hetconv_execution(4, channels, shape, "channels_last", training, "torch", xla=True) == \
        choose_hetconv_execution(4, channels, shape, "channels_last", training, "torch", xla=False)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile is TensorFlow's XLA switch")
def test_auto_execution_inside_a_tensorflow_xla_trace_matches_reference(rng):
    import tensorflow as tf

    layer = HetConv2D(128, 3, part=4, use_bias=False)
    x = rng.standard_normal((2, 5, 5, 128)).astype("float32")
    layer.build(x.shape)
    traced = []

    @tf.function(jit_compile=True)
    def forward(v):
        traced.append(layer.execution_form(v.shape))
        return layer(v)

    y = forward(tf.constant(x)).numpy()
    assert traced == ["dense"] and layer.execution_form(x.shape) == "grouped_dense"
    assert_close(y, reference.conv2d(x, reference.to_numpy(layer.dense_kernel())))


def test_auto_execution_follows_the_call_and_rejects_unknown_forms(rng):
    layer = HetConv2D(8, 3, part=4)
    layer.build((None, 6, 6, 8))
    assert layer.execution_form((2, 6, 6, 8)) == "dense"  # 2 channels per group on every backend
    assert HetConv2D(8, 3, part=4, execution="per_class").execution_form((2, 6, 6, 8)) == "per_class"
    with pytest.raises(ValueError, match="execution.*'auto', 'grouped_dense', 'per_class', 'dense'.*sparse"):
        HetConv2D(8, 3, part=4, execution="sparse")
    config = HetConv2D(8, 3, part=4, execution="dense").get_config()
    assert HetConv2D.from_config(config).execution == "dense"

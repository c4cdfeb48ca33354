import numpy as np
import pytest

import keras

import reference
from conftest import assert_close
from decompose_helpers import analytic_macs
from decompose_helpers import relative_output_error
from decompose_helpers import trained_cnn
from decompose_helpers import weights_snapshot
from keras_effconv.decompose import channel_decompose
from keras_effconv.decompose import depthwise_decompose


def two_conv_model(data_format="channels_last"):
    shape = (12, 12, 8) if data_format == "channels_last" else (8, 12, 12)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", data_format=data_format, name="a")(inputs)
    x = keras.layers.Conv2D(24, 3, strides=2, padding="valid", data_format=data_format, name="b")(x)
    return keras.Model(inputs, x)


def dense_kernel(reduce, expand):
    first = reference.to_numpy(reduce.kernel)  # (kh, kw, M, d')
    second = reference.to_numpy(expand.kernel)[0, 0]  # (d', N)
    return np.einsum("abmd,dn->abmn", first, second)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_low_rank_kernel_is_exact(rng, data_format):
    model = two_conv_model(data_format)
    for layer in model.layers[1:]:
        kh, kw, m, n = layer.kernel.shape
        # Kernel of rank 3 as a (kh*kw*M, N) matrix: exactly representable with d' >= 3.
        low = rng.standard_normal((kh * kw * m, 3)) @ rng.standard_normal((3, n))
        layer.set_weights([low.reshape(kh, kw, m, n).astype("float32"), rng.standard_normal(n).astype("float32")])
    new_model, report = channel_decompose(model, ratio=0.3)
    assert all(r.rank >= 3 for r in report.layers)
    x = rng.standard_normal((2,) + tuple(model.input_shape[1:])).astype("float32")
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)
    reduce = new_model.get_layer("b_reduce")
    assert reduce.strides == (2, 2) and reduce.padding == "valid" and not reduce.use_bias
    assert new_model.get_layer("a_expand").activation is model.get_layer("a").activation


def test_kernel_error_is_eckart_young(rng):
    model = two_conv_model()
    new_model, report = channel_decompose(model, ratio=0.5)
    for r in report.layers:
        original = model.get_layer(r.name)
        kernel = reference.to_numpy(original.kernel)
        s = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)
        expected = np.sqrt(np.sum(s[r.rank :] ** 2) / np.sum(s**2))
        assert abs(r.kernel_error - expected) < 1e-6
        stored = dense_kernel(new_model.get_layer(f"{r.name}_reduce"), new_model.get_layer(f"{r.name}_expand"))
        assert abs(np.linalg.norm(stored - kernel) / np.linalg.norm(kernel) - expected) < 1e-5


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 1.0])
def test_ratio_bounds_every_layer(ratio):
    model = two_conv_model()
    _, report = channel_decompose(model, ratio=ratio)
    for r in report.layers:
        kh, kw = r.kernel_size
        unit = kh * kw * r.in_channels + r.out_channels
        assert r.macs_after <= ratio * r.macs_before or r.rank == 1
        expected = max(1, int(ratio * kh * kw * r.in_channels * r.out_channels // unit))
        assert r.rank == min(expected, r.out_channels)


def test_macs_budget_matches_depthwise_model():
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, (width, strides) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2)]):
        x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", activation="relu", name=f"c{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    before = weights_snapshot(model)
    depthwise, dw_report = depthwise_decompose(model, rank=2)
    target = dw_report.model_macs_after
    channel, report = channel_decompose(model, macs=target)
    assert report.model_macs_after == analytic_macs(channel)
    assert report.model_macs_after <= target
    # As close as a one-channel step allows.
    slack = max(
        (r.macs_before // (r.kernel_size[0] * r.kernel_size[1] * r.in_channels * r.out_channels))
        * (r.kernel_size[0] * r.kernel_size[1] * r.in_channels + r.out_channels)
        for r in report.layers
    )
    assert target - report.model_macs_after < slack
    assert analytic_macs(model) - analytic_macs(channel) == report.macs_before - report.macs_after
    assert channel.output_shape == model.output_shape
    for w0, w1 in zip(before, weights_snapshot(model)):
        np.testing.assert_array_equal(w0, w1)


def test_response_pca_with_data():
    model, x_fit, x_heldout = trained_cnn()
    plain, plain_report = channel_decompose(model, ratio=0.3)
    pca, pca_report = channel_decompose(model, ratio=0.3, data=x_fit)
    assert plain_report.method == "channel" and pca_report.method == "channel-pca"
    assert [r.rank for r in plain_report.layers] == [r.rank for r in pca_report.layers]
    assert all(r.output_error is not None for r in pca_report.layers)
    # Response PCA is the best affine d'-dim projection of the first layer's
    # outputs on the fitting data, so it beats the kernel SVD there.
    conv = model.layers[1]
    y = reference.conv2d(x_fit, reference.to_numpy(conv.kernel), conv.strides, "same")
    y += reference.to_numpy(conv.bias)

    def first_layer_error(new_model):
        reduce = new_model.get_layer(f"{conv.name}_reduce")
        expand = new_model.get_layer(f"{conv.name}_expand")
        y_hat = reference.conv2d(x_fit, dense_kernel(reduce, expand), conv.strides, "same")
        y_hat += reference.to_numpy(expand.bias)
        return np.linalg.norm(y - y_hat) / np.linalg.norm(y)

    assert first_layer_error(pca) <= first_layer_error(plain)
    assert abs(first_layer_error(pca) - pca_report.layers[0].output_error) < 1e-4
    # And the whole network's held-out outputs are closer.
    assert relative_output_error(model, pca, x_heldout) < relative_output_error(model, plain, x_heldout)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "exactly one of `ratio`"),
        (dict(ratio=0.5, macs=1000), "exactly one of `ratio`"),
        (dict(ratio=0.0), "ratio"),
        (dict(ratio=1.5), "ratio"),
        (dict(ratio="half"), "ratio"),
        (dict(macs=10), "d'=1"),
        (dict(macs=-5), "macs"),
        (dict(ratio=0.5, data=np.zeros((2, 12, 12, 3), "float32")), "Received: a batch of shape"),
        (dict(ratio=0.5, layers=["missing"]), "no layer 'missing'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        channel_decompose(two_conv_model(), **kwargs)


def test_macs_needs_known_spatial_size():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(8, 3)(inputs))
    with pytest.raises(ValueError, match="unknown spatial"):
        channel_decompose(model, macs=1000)
    _, report = channel_decompose(model, ratio=0.5)
    assert report.layers[0].macs_before is None and report.model_macs_after is None


def test_nan_weights_and_lambda_layers_are_named():
    model = two_conv_model()
    conv = model.get_layer("b")
    conv.set_weights([np.full(conv.kernel.shape, np.nan, "float32"), conv.get_weights()[1]])
    with pytest.raises(ValueError, match=r"weights of layer 'b' contain NaN or inf \(3456 of 3456 values"):
        channel_decompose(model, ratio=0.5)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Lambda(lambda t: t + 1, name="shift")(inputs)
    lambda_model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(x))
    with pytest.raises(ValueError, match=r"`channel_decompose`.*Lambda layer 'shift'.*Replace 'shift'"):
        channel_decompose(lambda_model, ratio=0.5)

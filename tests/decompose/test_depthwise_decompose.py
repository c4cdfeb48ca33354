import json

import numpy as np
import pytest

import keras

import reference
from conftest import assert_close
from decompose_helpers import analytic_macs
from decompose_helpers import dense_from_depthwise
from decompose_helpers import per_channel_singular_values
from decompose_helpers import relative_output_error
from decompose_helpers import trained_cnn
from decompose_helpers import weights_snapshot
from keras_effconv.decompose import depthwise_decompose


def single_conv_model(c_in, filters, kernel_size=3, data_format="channels_last", spatial=(9, 10), **conv_kwargs):
    shape = spatial + (c_in,) if data_format == "channels_last" else (c_in,) + spatial
    inputs = keras.Input(shape)
    conv = keras.layers.Conv2D(filters, kernel_size, data_format=data_format, **conv_kwargs)
    model = keras.Model(inputs, conv(inputs))
    return model, conv


def random_input(rng, model, batch=2):
    return rng.standard_normal((batch,) + tuple(model.input_shape[1:])).astype("float32")


def replacement(new_model):
    dw = [l for l in new_model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    pw = [l for l in new_model.layers if type(l) is keras.layers.Conv2D]
    assert len(dw) == 1 and len(pw) == 1
    return dw[0], pw[0]


@pytest.mark.parametrize(
    "conv_kwargs",
    [
        dict(padding="same"),
        dict(padding="valid", strides=2),
        dict(padding="same", dilation_rate=2, use_bias=False),
        dict(padding="same", strides=(1, 2), activation="relu"),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_separable_kernel_is_reconstructed_exactly(rng, conv_kwargs, data_format):
    c_in, n = 5, 7
    model, conv = single_conv_model(c_in, n, data_format=data_format, **conv_kwargs)
    # Every input channel's (k*k, N) block has rank 1: exactly depthwise separable.
    spatial_part = rng.standard_normal((3, 3, c_in))
    channel_part = rng.standard_normal((c_in, n))
    kernel = spatial_part[:, :, :, None] * channel_part[None, None, :, :]
    weights = [kernel.astype("float32")]
    if conv.use_bias:
        weights.append(rng.standard_normal(n).astype("float32"))
    conv.set_weights(weights)
    new_model, report = depthwise_decompose(model, rank=1)
    dw, pw = replacement(new_model)
    assert dw.depth_multiplier == 1 and dw.strides == conv.strides
    assert dw.padding == conv.padding and dw.dilation_rate == conv.dilation_rate
    assert not dw.use_bias and pw.use_bias == conv.use_bias
    assert pw.activation is conv.activation
    x = random_input(rng, model)
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)
    dense = dense_from_depthwise(reference.to_numpy(dw.kernel), reference.to_numpy(pw.kernel))
    assert_close(dense, kernel, rtol=1e-5)
    assert report.layers[0].kernel_error < 1e-6


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_random_kernel_error_is_sum_of_discarded_singular_values(rng, rank):
    model, conv = single_conv_model(6, 12)
    kernel = reference.to_numpy(conv.kernel)
    sigma = per_channel_singular_values(kernel)
    discarded = float(np.sum(sigma[:, rank:] ** 2))
    total = float(np.sum(kernel**2))
    new_model, report = depthwise_decompose(model, rank=rank)
    # From the report (float64 factors): 1e-6 relative.
    reported = report.layers[0].kernel_error ** 2 * total
    assert abs(reported - discarded) <= 1e-6 * discarded
    # From the float32 weights actually stored in the new layers.
    dw, pw = replacement(new_model)
    assert dw.depth_multiplier == rank
    dense = dense_from_depthwise(reference.to_numpy(dw.kernel), reference.to_numpy(pw.kernel))
    stored = float(np.sum((dense - kernel) ** 2))
    assert abs(stored - discarded) <= 1e-6 * total
    # Layer outputs match the dense conv with the truncated kernel.
    x = random_input(rng, model)
    expected = reference.conv2d(x, dense, padding="valid") + reference.to_numpy(conv.bias)
    assert_close(reference.to_numpy(new_model(x)), expected, rtol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_full_rank_is_exact(rng, data_format):
    model, conv = single_conv_model(4, 16, padding="same", data_format=data_format)
    conv.set_weights([rng.standard_normal((3, 3, 4, 16)).astype("float32"), rng.standard_normal(16).astype("float32")])
    new_model, report = depthwise_decompose(model, rank=9)
    x = random_input(rng, model)
    assert report.layers[0].rank == 9
    assert report.layers[0].kernel_error < 1e-6
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)
    # A rank above k*k is capped at k*k (already exact).
    _, capped = depthwise_decompose(model, rank=20)
    assert capped.layers[0].rank == 9


def test_rank_capped_at_filters_when_fewer_than_taps(rng):
    model, _ = single_conv_model(3, 4, kernel_size=5, padding="same")
    new_model, report = depthwise_decompose(model, rank=25)
    assert report.layers[0].rank == 4  # min(k*k, N)
    x = random_input(rng, model)
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)


@pytest.mark.parametrize("energy", [0.3, 0.8, 0.95, 0.999, 1.0])
def test_energy_picks_smallest_rank_keeping_share(energy):
    model, conv = single_conv_model(8, 16)
    sigma2 = per_channel_singular_values(reference.to_numpy(conv.kernel)) ** 2
    kept = np.cumsum(sigma2.sum(axis=0)) / sigma2.sum()
    _, report = depthwise_decompose(model, energy=energy, rank=3)  # energy wins
    r = report.layers[0].rank
    assert kept[r - 1] >= energy - 1e-9
    if r > 1:
        assert kept[r - 2] < energy
    assert 1 - report.layers[0].kernel_error ** 2 >= energy - 1e-9


def test_per_layer_energy_rank_differs(rng):
    inputs = keras.Input((8, 8, 4))
    first = keras.layers.Conv2D(8, 3, padding="same")
    second = keras.layers.Conv2D(8, 3, padding="same")
    model = keras.Model(inputs, second(first(inputs)))
    # First kernel: rank 1 per channel; second: random (needs more).
    a = rng.standard_normal((3, 3, 4))[:, :, :, None] * rng.standard_normal((4, 8))[None, None]
    first.set_weights([a.astype("float32"), np.zeros(8, "float32")])
    _, report = depthwise_decompose(model, energy=0.99)
    assert report.layers[0].rank == 1
    assert report.layers[1].rank > 1


def test_resnet50_decomposes_and_macs_drop_as_reported(rng):
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    before = weights_snapshot(model)
    n_layers = len(model.layers)
    new_model, report = depthwise_decompose(model, rank=1)
    eligible = [
        l.name for l in model.layers if type(l) is keras.layers.Conv2D and l.kernel_size != (1, 1)
    ]
    assert [r.name for r in report.layers] == eligible  # conv1 (7x7) + 16 3x3 convs
    assert len(eligible) == 17
    assert new_model.output_shape == model.output_shape
    macs_old, macs_new = analytic_macs(model), analytic_macs(new_model)
    assert macs_old - macs_new == report.macs_before - report.macs_after
    assert (report.model_macs_before, report.model_macs_after) == (macs_old, macs_new)
    assert report.model_params_after == new_model.count_params()
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    assert tuple(new_model(x).shape) == (1, 10)
    # The input model is untouched.
    assert len(model.layers) == n_layers
    for w0, w1 in zip(before, weights_snapshot(model)):
        np.testing.assert_array_equal(w0, w1)
    # Every layer that was not decomposed kept its weights exactly.
    replaced = set(eligible)
    for layer in model.layers:
        if layer.name not in replaced and layer.weights:
            new_layer = new_model.get_layer(layer.name)
            assert new_layer is not layer
            for a, b in zip(layer.get_weights(), new_layer.get_weights()):
                np.testing.assert_array_equal(a, b)


def test_vgg16_decomposes_and_macs_drop_as_reported():
    model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)
    new_model, report = depthwise_decompose(model, rank=2)
    assert len(report.layers) == 13
    assert new_model.output_shape == model.output_shape
    assert analytic_macs(model) - analytic_macs(new_model) == report.macs_before - report.macs_after
    for r in report.layers:
        kh, kw = r.kernel_size
        pixels = r.macs_before // (kh * kw * r.in_channels * r.out_channels)
        assert r.macs_after == pixels * r.in_channels * 2 * (kh * kw + r.out_channels)


def test_profiler_agrees_when_available():
    profiling = pytest.importorskip("keras_effconv.profiling")
    model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), include_top=False)
    new_model, report = depthwise_decompose(model, rank=1)
    before = profiling.profile(model).total_macs
    after = profiling.profile(new_model).total_macs
    assert before - after == report.macs_before - report.macs_after
    assert (before, after) == (report.model_macs_before, report.model_macs_after)


def nested_model():
    """Branches, a shared conv, a nested Functional and a nested Sequential."""
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(
        inner_in,
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="inner_conv")(inner_in),
        name="inner",
    )
    block = keras.Sequential(
        [
            keras.Input((8, 8, 6)),
            keras.layers.Conv2D(6, 3, padding="same", name="seq_conv"),
            keras.layers.BatchNormalization(name="seq_bn"),
        ],
        name="block",
    )
    shared = keras.layers.Conv2D(6, 3, padding="same", name="shared_conv")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    a = inner(x)
    b = block(shared(x))
    c = shared(a)
    x = keras.layers.Add(name="add")([a, b, c])
    x = keras.layers.Conv2D(4, 1, name="head_1x1")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs, name="outer")
    # Non-trivial BatchNormalization statistics, to see they are copied.
    bn = block.get_layer("seq_bn")
    bn.set_weights([np.linspace(0.5, 2, 6), np.linspace(-1, 1, 6), np.linspace(-0.2, 0.3, 6), np.linspace(1, 3, 6)])
    return model


def test_nested_models_branches_and_shared_layers(rng):
    model = nested_model()
    before = weights_snapshot(model)
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    new_model, report = depthwise_decompose(model, rank=9)  # exact: compares the whole graph
    assert sorted(r.name for r in report.layers) == ["inner_conv", "seq_conv", "shared_conv", "stem"]
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)
    inner = new_model.get_layer("inner")
    block = new_model.get_layer("block")
    assert isinstance(inner, keras.Model) and inner is not model.get_layer("inner")
    assert isinstance(block, keras.Sequential)
    assert [l.name for l in block.layers] == ["seq_conv_dw", "seq_conv_pw", "seq_bn"]
    np.testing.assert_array_equal(
        block.get_layer("seq_bn").get_weights()[3], model.get_layer("block").get_layer("seq_bn").get_weights()[3]
    )
    # The shared conv is replaced once and its replacement is shared too.
    assert new_model.get_layer("shared_conv_dw") is not None
    # MACs of the shared conv count both calls.
    shared = next(r for r in report.layers if r.name == "shared_conv")
    assert shared.macs_before == 2 * 64 * 9 * 6 * 6
    assert report.model_macs_before - report.model_macs_after == report.macs_before - report.macs_after
    for w0, w1 in zip(before, weights_snapshot(model)):
        np.testing.assert_array_equal(w0, w1)
    # Low rank works on the same graph, and with data (multi-layer compensation).
    _, low = depthwise_decompose(model, rank=1, method="data", data=rng.standard_normal((16, 8, 8, 3)).astype("float32"))
    assert all(r.rank == 1 and r.output_error is not None for r in low.layers)


def test_layers_selection_and_sequential_model(rng):
    model = keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(4, 3, name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    new_model, report = depthwise_decompose(model, rank=2, layers=["c2"])
    assert isinstance(new_model, keras.Sequential)
    assert [r.name for r in report.layers] == ["c2"]
    assert [type(l).__name__ for l in new_model.layers] == [
        "Conv2D", "ReLU", "DepthwiseConv2D", "Conv2D", "Flatten", "Dense"
    ]
    assert [new_model.layers[i].name for i in (0, 2, 3)] == ["c1", "c2_dw", "c2_pw"]
    np.testing.assert_array_equal(new_model.get_layer("c1").get_weights()[0], model.get_layer("c1").get_weights()[0])
    _, by_object = depthwise_decompose(model, layers=[model.get_layer("c1")])
    assert [r.name for r in by_object.layers] == ["c1"]


def test_new_model_trains_saves_and_reloads(rng, tmp_path):
    model, _ = single_conv_model(3, 4, padding="same", activation="relu")
    new_model, _ = depthwise_decompose(model, rank=1)
    new_model.compile("sgd", "mse")
    x = random_input(rng, model, batch=4)
    new_model.fit(x, np.zeros((4,) + tuple(new_model.output_shape[1:]), "float32"), verbose=0)
    path = str(tmp_path / "decomposed.keras")
    new_model.save(path)
    loaded = keras.models.load_model(path)
    assert_close(reference.to_numpy(loaded(x)), reference.to_numpy(new_model(x)))


def test_report_formats():
    model, _ = single_conv_model(4, 8, padding="same")
    _, report = depthwise_decompose(model, rank=2)
    as_dict = report.to_dict()
    json.dumps(as_dict)
    layer = as_dict["layers"][0]
    assert layer["rank"] == 2 and layer["output_error"] is None
    assert as_dict["macs_before"] == 9 * 10 * 9 * 4 * 8
    text = report.to_markdown()
    assert layer["name"] in text and "| rank |" in text
    assert str(report) == text
    assert report.params_before == 9 * 4 * 8 + 8
    assert report.params_after == 9 * 4 * 2 + 8 * 8 + 8


# ----------------------------------------------------------------------------
# Data-driven decomposition
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2])
def test_data_method_beats_svd_on_heldout_inputs(rank):
    model, x_fit, x_heldout = trained_cnn()
    svd_model, svd_report = depthwise_decompose(model, rank=rank, method="svd", data=x_fit)
    data_model, data_report = depthwise_decompose(model, rank=rank, method="data", data=x_fit)
    svd_error = relative_output_error(model, svd_model, x_heldout)
    data_error = relative_output_error(model, data_model, x_heldout)
    assert data_error < 0.5 * svd_error, (data_error, svd_error)
    # On the fitting data every layer's output error is lower too.
    for s, d in zip(svd_report.layers, data_report.layers):
        assert d.output_error <= s.output_error + 1e-6, (s.name, s.output_error, d.output_error)
    assert [r.rank for r in data_report.layers] == [rank] * 3


def test_data_method_exact_when_full_rank(rng):
    model, conv = single_conv_model(3, 6, padding="same", activation="relu")
    x = rng.standard_normal((8, 9, 10, 3)).astype("float32")
    new_model, report = depthwise_decompose(model, rank=9, method="data", data=x)
    assert report.layers[0].output_error < 1e-5
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)


def test_data_method_single_channel_is_whitened_svd(rng):
    # One input channel: the fit is the closed-form generalised SVD (one block).
    model, conv = single_conv_model(1, 5, padding="valid", use_bias=False)
    x = rng.standard_normal((64, 9, 10, 1)).astype("float32")
    x = x + 2 * np.roll(x, 1, axis=1)  # correlated neighbouring pixels
    _, report = depthwise_decompose(model, rank=1, method="data", data=x)
    patches = np.stack(
        [x[:, a : a + 7, b : b + 8, 0] for a in range(3) for b in range(3)], axis=-1
    ).reshape(-1, 9).astype(np.float64)
    w = reference.to_numpy(conv.kernel).reshape(9, 5)
    sigma = patches.T @ patches / len(patches)
    lam = 1e-2 * np.trace(sigma) / 9
    chol = np.linalg.cholesky(sigma + lam * np.eye(9))
    u, s, vt = np.linalg.svd(np.linalg.solve(chol, (sigma + lam * np.eye(9)) @ w))
    w_hat = np.linalg.solve(chol.T, s[0] * np.outer(u[:, 0], vt[0]))
    y = patches @ w
    expected = np.linalg.norm(y - patches @ w_hat) / np.linalg.norm(y)
    assert abs(report.layers[0].output_error - expected) < 1e-4


def test_data_accepts_arrays_tuples_iterables_and_generators(rng):
    model, _ = single_conv_model(2, 4, padding="same")
    x = rng.standard_normal((12, 9, 10, 2)).astype("float32")
    y = np.zeros(12)
    batches = [x[i : i + 4] for i in range(0, 12, 4)]
    forms = {
        "array": dict(data=x, batch_size=4),
        "tuple": dict(data=(x, y), batch_size=4),
        "list of batches": dict(data=batches),
        "list of (x, y)": dict(data=[(b, y[:4]) for b in batches]),
        "torch-style [x, y]": dict(data=[[b, y[:4]] for b in batches]),
        "generator": dict(data=(b for b in batches)),
    }
    errors = {}
    for name, kwargs in forms.items():
        _, report = depthwise_decompose(model, rank=1, method="data", **kwargs)
        errors[name] = report.layers[0].output_error
    assert max(errors.values()) - min(errors.values()) < 1e-6, errors
    _, few = depthwise_decompose(model, rank=1, method="data", data=x, batch_size=4, steps=1)
    assert few.layers[0].output_error != errors["array"]


def test_data_accepts_tf_data(rng):
    tf = pytest.importorskip("tensorflow")
    model, _ = single_conv_model(2, 4, padding="same")
    x = rng.standard_normal((8, 9, 10, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(8))).batch(4)
    _, from_tf = depthwise_decompose(model, rank=1, method="data", data=dataset)
    _, from_np = depthwise_decompose(model, rank=1, method="data", data=x, batch_size=4)
    assert abs(from_tf.layers[0].output_error - from_np.layers[0].output_error) < 1e-6


def test_positions_per_image_subsamples(rng):
    model, _ = single_conv_model(2, 4, padding="same")
    x = rng.standard_normal((8, 9, 10, 2)).astype("float32")
    new_model, report = depthwise_decompose(model, rank=1, method="data", data=x, positions_per_image=20)
    assert report.layers[0].output_error < 1.0


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


def test_rejects_models_without_eligible_conv():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.Conv2D(4, 3, groups=2)(x)
    x = keras.layers.DepthwiseConv2D(3)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="no layer that can be decomposed"):
        depthwise_decompose(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rank=0), "rank"),
        (dict(rank=-2), "rank"),
        (dict(rank=1.5), "rank"),
        (dict(energy=0.0), "energy"),
        (dict(energy=1.5), "energy"),
        (dict(energy=-0.1), "energy"),
        (dict(energy="all"), "energy"),
        (dict(method="pca"), "method"),
        (dict(method="data"), "data"),
        (dict(layers=["nope"]), "no layer 'nope'"),
        (dict(layers=["pointwise"]), "1x1"),
        (dict(layers=[]), "layers"),
        (dict(method="data", data=np.zeros((4, 8, 8), "float32")), r"shape \('batch', 8, 8, 3\)"),
        (dict(method="data", data=np.zeros((4, 8, 8, 2), "float32")), "Received: a batch of shape"),
        (dict(data=[np.zeros((2, 7, 8, 3), "float32")]), "Received: a batch of shape"),
        (dict(data=3), "data"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="spatial")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="pointwise")(x))
    with pytest.raises(ValueError, match=match):
        depthwise_decompose(model, **kwargs)


def test_rejects_subclassed_and_unbuilt_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="Functional or Sequential"):
        depthwise_decompose(net)
    with pytest.raises(ValueError, match="built"):
        depthwise_decompose(keras.Sequential([keras.layers.Conv2D(2, 3)]))


def test_mixed_precision_model(rng):
    def build(dtype):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(6, 3, padding="same", dtype=dtype, name="conv")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, dtype=dtype, name="head")(x))

    model, reference_model = build("mixed_bfloat16"), build("float32")
    data = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    new_model, report = depthwise_decompose(model, rank=2, method="data", data=data)
    _, expected = depthwise_decompose(reference_model, rank=2, method="data", data=data)
    dw = new_model.get_layer("conv_dw")
    assert dw.dtype_policy.name == "mixed_bfloat16" and dw.kernel.dtype == "float32"
    # bfloat16 activations only add rounding noise to the float32 fit.
    for r, e in zip(report.layers, expected.layers):
        assert abs(r.output_error - e.output_error) < 0.05, (r.output_error, e.output_error)
    assert tuple(new_model(data).shape) == (8, 6, 6, 4)


def test_nan_or_inf_weights_name_the_layer(rng):
    # Issue 17, finding 8: used to fail inside NumPy with "SVD did not converge".
    model, conv = single_conv_model(4, 8, name="spatial")
    kernel, bias = conv.get_weights()
    kernel[0, 0, 0, 0], kernel[1, 2, 3, 4] = np.nan, np.inf
    conv.set_weights([kernel, bias])
    for method, data in (("svd", None), ("data", random_input(rng, model, 4))):
        with pytest.raises(
            ValueError, match=r"weights of layer 'spatial' contain NaN or inf \(2 of 288 values of 'kernel'"
        ):
            depthwise_decompose(model, method=method, data=data)


def test_nan_in_data_or_earlier_layers_is_named(rng):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="spatial")(x))
    data = rng.standard_normal((4, 8, 8, 3)).astype("float32")
    bad = data.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"finite values.*Received: a batch of shape \(4, 8, 8, 3\) with 1 NaN/inf"):
        depthwise_decompose(model, method="data", data=bad)
    norm = model.get_layer("norm")
    norm.set_weights([np.full(3, np.nan, "float32")] + norm.get_weights()[1:])
    with pytest.raises(ValueError, match=r"inputs and outputs of layer 'spatial' on the data.*NaN or inf"):
        depthwise_decompose(model, method="data", data=data)


def test_lambda_layer_is_named_with_what_to_do():
    # Keras' own message advised `safe_mode=False` "to the loading function", which does not apply.
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, name="spatial")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: 2 * t, name="double")(x), name="net")
    with pytest.raises(ValueError, match=r"`depthwise_decompose`.*model 'net'.*Lambda layer 'double'") as error:
        depthwise_decompose(model)
    assert "Replace 'double' by a built-in Keras layer" in str(error.value)
    assert "loading function" not in str(error.value)

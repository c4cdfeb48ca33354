"""expand_separable, and depthwise_decompose(insert_batchnorm=...) back to the separable structure."""

import numpy as np
import pytest

import keras

import reference
from decompose_helpers import dense_from_depthwise
from decompose_helpers import weights_snapshot
from keras_effconv.applications import ShuffleNetV2
from keras_effconv.decompose import depthwise_decompose
from keras_effconv.decompose import expand_separable
from keras_effconv.profiling import profile


def randomize(model, rng):
    """Non-trivial BN statistics and biases, so that folding mistakes show."""
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif "moving_mean" in v.path or "beta" in v.path or v.path.endswith("bias"):
            v.assign((0.2 * rng.standard_normal(v.shape)).astype("float32"))
        elif "gamma" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def shufflenet(rng):
    return randomize(ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar",
                                  classifier_activation=None), rng)


def outputs(model, x):
    return reference.to_numpy(model(x, training=False)).astype(np.float64)


def relative(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def rows(model):
    return [(r.type, tuple(r.output_shape), r.params, r.macs) for r in profile(model).rows]


def graph_signature(model):
    return [(l.name, len(l._inbound_nodes)) for l in model.layers]


def test_shufflenet_expands_to_the_same_function_and_is_left_untouched(rng):
    model = shufflenet(rng)
    before, signature = weights_snapshot(model), graph_signature(model)
    x = rng.standard_normal((3, 28, 28, 1)).astype("float32")
    expanded, pairs = expand_separable(model)
    # 3 stride-2 units with two pairs, 13 stride-1 units with one.
    assert len(pairs) == 3 * 2 + 13
    assert relative(outputs(expanded, x), outputs(model, x)) <= 1e-4
    conv = expanded.get_layer(pairs[0].expanded)
    assert type(conv) is keras.layers.Conv2D and conv.kernel_size == (3, 3) and not conv.use_bias
    assert pairs[0].folded_into == pairs[0].pointwise + "_bn"
    assert not any(isinstance(l, keras.layers.DepthwiseConv2D) for l in expanded.layers)
    for pair in pairs:
        for name in (pair.depthwise, pair.batchnorm, pair.pointwise):
            with pytest.raises(ValueError):
                expanded.get_layer(name)
    assert profile(expanded).total_macs > 2 * profile(model).total_macs
    for old, new in zip(before, weights_snapshot(model)):
        np.testing.assert_array_equal(old, new)
    assert graph_signature(model) == signature


@pytest.mark.parametrize("method", ["svd", "data"])
def test_decomposing_the_expanded_shufflenet_gives_it_back(rng, method):
    model = shufflenet(rng)
    x = rng.standard_normal((4, 28, 28, 1)).astype("float32")
    expanded, pairs = expand_separable(model)
    kwargs = dict(method="data", data=x, positions_per_image=40) if method == "data" else {}
    decomposed, report = depthwise_decompose(
        expanded, rank=1, layers=[p.expanded for p in pairs], insert_batchnorm={"momentum": 0.9}, **kwargs
    )
    # The expanded kernels are exactly separable: the original function comes back.
    assert relative(outputs(decomposed, x), outputs(model, x)) <= 1e-4
    assert rows(decomposed) == rows(model)
    middle = decomposed.get_layer(f"{pairs[0].expanded}_bn")
    assert isinstance(middle, keras.layers.BatchNormalization) and middle.momentum == 0.9
    assert report.model_macs_after == profile(model).total_macs


def test_a_trained_expanded_shufflenet_decomposes_to_shufflenets_rows(rng):
    model = ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar")
    expanded, pairs = expand_separable(model)
    expanded = keras.models.clone_model(expanded)  # fresh weights, as for training from scratch
    x = rng.standard_normal((16, 28, 28, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, 16), 10)
    expanded.compile("adam", "categorical_crossentropy")
    expanded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    decomposed, report = depthwise_decompose(
        expanded, layers=[p.expanded for p in pairs], method="data", data=x, insert_batchnorm=True,
        positions_per_image=20,
    )
    assert rows(decomposed) == rows(model)
    assert [type(l) for l in decomposed.layers] == [type(l) for l in model.layers]
    # The middle BatchNormalization holds the depthwise outputs' statistics and is the identity.
    name = pairs[0].expanded
    dw, bn = decomposed.get_layer(f"{name}_dw"), decomposed.get_layer(f"{name}_bn")
    probe = keras.Model(decomposed.inputs, [dw.output, bn.output])
    before_bn, after_bn = (reference.to_numpy(t) for t in probe([x], training=False))
    np.testing.assert_allclose(after_bn, before_bn, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reference.to_numpy(bn.moving_mean), before_bn.mean(axis=(0, 1, 2)), rtol=1e-3,
                               atol=1e-4)
    np.testing.assert_allclose(reference.to_numpy(bn.moving_variance), before_bn.var(axis=(0, 1, 2)), rtol=1e-3,
                               atol=1e-4)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_pair_with_biases_and_multiplier_matches_the_composed_kernel(rng, data_format):
    """Depth multiplier 2, biases on both convs, an activation after, no BN after: the bias stays in the conv."""
    shape = (9, 9, 4) if data_format == "channels_last" else (4, 9, 9)
    axis = -1 if data_format == "channels_last" else 1
    inputs = keras.Input(shape)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, data_format=data_format,
                                     name="dw")(inputs)
    x = keras.layers.BatchNormalization(axis=axis, name="mid")(x)
    outputs_ = keras.layers.Conv2D(6, 1, activation="relu", data_format=data_format, name="pw")(x)
    model = randomize(keras.Model(inputs, outputs_), rng)
    expanded, pairs = expand_separable(model)
    conv = expanded.get_layer("dw_expanded")
    assert conv.use_bias and conv.strides == (2, 2) and conv.activation.__name__ == "relu"
    assert pairs[0].folded_into is None
    # Independent reference: BN's affine map folded by hand, then Keras' documented channel order.
    dw, mid, pw = (model.get_layer(n) for n in ("dw", "mid", "pw"))
    gamma, beta, mean, var = (reference.to_numpy(w).astype(np.float64) for w in mid.weights)
    scale = gamma / np.sqrt(var + mid.epsilon)
    dw_kernel = reference.to_numpy(dw.kernel).astype(np.float64)
    pw_kernel = reference.to_numpy(pw.kernel).astype(np.float64)
    expected = dense_from_depthwise(dw_kernel, pw_kernel * scale[None, None, :, None])
    np.testing.assert_allclose(reference.to_numpy(conv.kernel), expected, rtol=1e-5, atol=1e-6)
    shift = scale * reference.to_numpy(dw.bias) + beta - mean * scale
    np.testing.assert_allclose(reference.to_numpy(conv.bias), shift @ pw_kernel[0, 0] + reference.to_numpy(pw.bias),
                               rtol=1e-5, atol=1e-5)
    x = rng.standard_normal((2,) + shape).astype("float32")
    assert relative(outputs(expanded, x), outputs(model, x)) <= 1e-5


def test_sequential_model(rng):
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.DepthwiseConv2D(3, padding="same"),
        keras.layers.Conv2D(5, 1, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ])
    randomize(model, rng)
    expanded, pairs = expand_separable(model)
    assert [type(l).__name__ for l in expanded.layers] == ["Conv2D", "BatchNormalization", "ReLU"]
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    assert relative(outputs(expanded, x), outputs(model, x)) <= 1e-5


def _relu_between():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw_relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(name="the_relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))


def _activation_on_dw():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw_act")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))


def _no_pairs():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw_add")(x)
    return keras.Model(inputs, keras.layers.Add()([x, inputs]))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dw = keras.layers.DepthwiseConv2D(3)
        self.pw = keras.layers.Conv2D(4, 1)

    def call(self, x):
        return self.pw(self.dw(x))


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (_relu_between, {}, r"model.*layer 'dw_relu'.*'the_relu' \(ReLU\) sits between"),
        (_activation_on_dw, {}, r"layer 'dw_act'.*activation 'relu6'"),
        (_no_pairs, {}, r"model.*at least one DepthwiseConv2D feeding a 1x1 Conv2D.*'dw_add'"),
        (_no_pairs, {"layers": ["dw_add"]}, r"layer 'dw_add'.*not a 1x1 Conv2D"),
        (_relu_between, {"layers": ["nope"]}, r"layers.*DepthwiseConv2D layers.*\['dw_relu'\].*nope"),
    ],
)
def test_bad_input_names_the_layer_and_leaves_the_model(make, kwargs, match):
    model = make()
    signature, before = graph_signature(model), weights_snapshot(model)
    with pytest.raises(ValueError, match=match):
        expand_separable(model, **kwargs)
    assert graph_signature(model) == signature
    for old, new in zip(before, weights_snapshot(model)):
        np.testing.assert_array_equal(old, new)


def test_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 4), "float32"))
    with pytest.raises(ValueError, match=r"model.*subclassed models have no graph"):
        expand_separable(model)


@pytest.mark.parametrize("value", ["yes", {"axis": 1}, 3])
def test_bad_insert_batchnorm(value):
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="insert_batchnorm"):
        depthwise_decompose(model, insert_batchnorm=value)

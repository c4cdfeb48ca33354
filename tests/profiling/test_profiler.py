"""profile(): MAC/param counts against closed forms and XLA's cost_analysis()."""

import json

import numpy as np
import pytest

import keras

from conftest import BACKEND
from keras_effconv import applications
from keras_effconv import layers
from keras_effconv import profile
from keras_effconv.profiling import measure_latency
from keras_effconv.profiling import measure_training_speed
from papers import HETCONV_VGG16_CIFAR10_MMACS
from keras_effconv.conv_methods import conv_method_names


def single_layer_macs(layer, input_shape):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    result = profile(model)
    assert result.rows[0].params == layer.count_params()
    return result.total_macs


@pytest.mark.parametrize(
    "make_layer, input_shape, expected",
    [
        (lambda: keras.layers.Conv2D(16, 3, padding="same"), (10, 12, 8), 10 * 12 * 9 * 8 * 16),
        (lambda: keras.layers.Conv2D(16, 3, strides=2), (11, 11, 8), 5 * 5 * 9 * 8 * 16),
        (lambda: keras.layers.Conv2D(16, 3, groups=4, padding="same"), (8, 8, 8), 8 * 8 * 9 * 2 * 16),
        (lambda: keras.layers.Conv1D(6, 5), (20, 4), 16 * 5 * 4 * 6),
        (lambda: keras.layers.Conv3D(2, 3), (5, 5, 5, 3), 27 * 27 * 3 * 2),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (8, 8, 5), 64 * 9 * 5 * 2),
        (lambda: keras.layers.SeparableConv2D(7, 3), (8, 8, 5), 36 * (9 * 5 + 5 * 7)),
        (lambda: keras.layers.Conv2DTranspose(4, 3, strides=2), (6, 6, 5), 36 * 9 * 5 * 4),
        (lambda: keras.layers.Dense(7), (5,), 35),
        (lambda: keras.layers.Dense(7), (3, 5), 3 * 35),
        (lambda: keras.layers.EinsumDense("abc,cd->abd", output_shape=(3, 7)), (3, 5), 3 * 5 * 7),
        (lambda: keras.layers.BatchNormalization(), (4, 4, 3), 0),
        (lambda: keras.layers.MaxPooling2D(), (4, 4, 3), 0),
        (lambda: keras.layers.GlobalAveragePooling2D(), (4, 4, 3), 0),
        (lambda: layers.HetConv2D(16, 3, part=4), (8, 8, 16), 64 * (9 * 16 * 16 // 4 + 16 * 16 * 3 // 4)),
        (lambda: layers.ChannelShuffle(4), (8, 8, 16), 0),
    ],
)
def test_layer_rules(make_layer, input_shape, expected):
    assert single_layer_macs(make_layer(), input_shape) == expected


def test_channels_first_conv():
    layer = keras.layers.Conv2D(16, 3, data_format="channels_first")
    assert single_layer_macs(layer, (8, 10, 12)) == 8 * 10 * 9 * 8 * 16


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: layers.InterleavedGroupConv2D(32, 3, primary_groups=4),
        lambda: layers.CompConv2D(48, 3),
        lambda: layers.FactorizedConv2D(32, 3, num_units=2),
        lambda: layers.SqueezeExcite(),
    ],
)
def test_effconv_layers_use_their_compute_macs(make_layer):
    layer = make_layer()
    assert single_layer_macs(layer, (16, 16, 32)) == layer.compute_macs((16, 16, 32))


def test_keras_resnet50_and_vgg16_match_the_published_counts():
    resnet = profile(keras.applications.ResNet50(weights=None))
    assert round(resnet.total_macs / 1e9, 2) in (3.86, 3.87)
    assert resnet.total_params == 25_636_712 and resnet.total_flops == 2 * resnet.total_macs
    vgg = profile(keras.applications.VGG16(weights=None))
    assert round(vgg.total_macs / 1e9, 2) == 15.47
    assert vgg.total_params == 138_357_544


def test_nested_models_shared_layers_and_input_shape_override():
    inner = keras.Sequential([keras.Input((None, None, 4)), keras.layers.Conv2D(8, 3, padding="same", name="c")], name="inner")
    shared = keras.layers.Conv2D(4, 1, name="shared")
    inputs = keras.Input((None, None, 4))
    x = shared(inputs)
    x = shared(x)
    outputs = inner(x)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="input_shape"):
        profile(model)
    result = profile(model, input_shape=(6, 6, 4))
    names = [row.name for row in result.rows]
    assert names == ["shared", "shared", "inner/c"]
    assert [row.params for row in result.rows] == [20, 0, 296]
    assert result.total_params == model.count_params() == 316
    assert result.total_macs == 2 * 36 * 16 + 36 * 9 * 4 * 8
    assert result.rows[-1].output_shape == (None, 6, 6, 8)


def test_uncounted_layers_are_reported_not_hidden():
    inputs = keras.Input((4, 8))
    outputs = keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
    result = profile(keras.Model(inputs, outputs))
    assert result.uncounted == ["multi_head_attention"] or len(result.uncounted) == 1
    assert "?" in result.to_markdown() and "not counted" in result.summary()


def test_to_dict_and_markdown():
    model = applications.EffResNet20(conv="hetconv")
    result = profile(model)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["total_macs"] == result.total_macs == sum(row["macs"] for row in data["layers"])
    assert data["total_params"] == model.count_params()
    assert data["trainable_params"] < data["total_params"]  # BN moving statistics
    table = result.to_markdown(only_costly=True)
    assert "HetConv2D" in table and "Activation" not in table and "FLOPs" in table


def test_bad_input():
    with pytest.raises(TypeError):
        profile("resnet50")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        profile(Subclassed())
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="input_shape"):
        profile(model, input_shape=[(8, 8, 3), (8, 8, 3)])


def test_measure_latency_runs_models_interleaved():
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    result = measure_latency({"a": small, "b": small}, (8, 8, 3), batch_size=2, repeats=3, warmup=1)
    assert set(result) == {"a", "b"} and all(len(r["times_ms"]) == 3 for r in result.values())
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(small, (8, 8, 3), repeats=0)


def test_measure_training_speed_trains_every_model_interleaved():
    def dense():
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        return model

    models = {"a": dense(), "b": dense()}
    before = {label: np.array(m.layers[-1].kernel) for label, m in models.items()}
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 8, 8, 3)), rng.standard_normal((4, 2))
    result = measure_training_speed(models, x, y, repeats=3, warmup=1)
    assert set(result) == {"a", "b"}
    for label, r in result.items():
        assert len(r["times_ms"]) == 3 and r["min_ms"] <= r["median_ms"]
        assert r["images_per_second"] == pytest.approx(4000.0 / r["median_ms"])
        assert int(models[label].optimizer.iterations) == 4  # warmup + timed steps
        assert not np.allclose(np.array(models[label].layers[-1].kernel), before[label])
    uncompiled = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not compiled"):
        measure_training_speed({"u": uncompiled}, x, y)
    with pytest.raises(ValueError, match="warmup"):
        measure_training_speed(models, x, y, warmup=-1)


# --- independent reference: XLA's own count (JAX) ---------------------------


def xla_macs(model, input_shape):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    x = np.ones((1,) + tuple(input_shape), "float32")
    analysis = jax.jit(forward).lower(trainable, x).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return analysis["flops"] / 2  # XLA counts FLOPs; 1 MAC = 2 FLOPs


@pytest.mark.skipif(BACKEND != "jax", reason="XLA cost_analysis() is read on JAX")
@pytest.mark.parametrize("conv", conv_method_names())
def test_eff_resnet50_totals_agree_with_xla(conv):
    # XLA skips taps on "same" padding (-2.8% for the standard ResNet50 at
    # 224 px) and counts elementwise work (BN, ReLU, adds): within 3% overall.
    model = applications.EffResNet50(conv=conv, include_top=False, pooling="avg", input_shape=(224, 224, 3))
    ours = profile(model).total_macs
    assert xla_macs(model, (224, 224, 3)) == pytest.approx(ours, rel=0.03)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA cost_analysis() is read on JAX")
def test_builtin_layers_agree_with_xla():
    inputs = keras.Input((32, 32, 16))
    x = keras.layers.Conv2D(32, 3, padding="valid", use_bias=False)(inputs)
    x = keras.layers.Conv2D(32, 3, groups=4, padding="valid", use_bias=False)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)(x)
    x = keras.layers.SeparableConv2D(32, 3, use_bias=False)(x)
    x = keras.layers.Conv2DTranspose(16, 2, strides=2, use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, use_bias=False)(x)
    model = keras.Model(inputs, outputs)
    assert xla_macs(model, (32, 32, 16)) == pytest.approx(profile(model).total_macs, rel=0.01)


@pytest.mark.parametrize("part", sorted(HETCONV_VGG16_CIFAR10_MMACS))
def test_hetconv_vgg16_cifar10_matches_the_paper_within_one_percent(part):
    model = applications.EffVGG16(
        input_shape=(32, 32, 3), classes=10, style="cifar", conv="hetconv", conv_config={"part": part}
    )
    assert profile(model).total_macs / 1e6 == pytest.approx(HETCONV_VGG16_CIFAR10_MMACS[part], rel=0.01)


def test_input_shape_that_does_not_fit_the_model_is_refused():
    # Issue 17, finding 8: 3 channels for a model built for 16 gave a MAC count.
    inputs = keras.Input((None, None, 16))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="sixteen")
    with pytest.raises(
        ValueError,
        match=r"`input_shape`: model 'sixteen' has the per-sample input shape \(None, None, 16\).*"
        r"layer 'conv' \(Conv2D\) expects axis -1 of its input to be 16.*Received: input_shape=\(8, 8, 3\)",
    ):
        profile(model, input_shape=(8, 8, 3))
    # A wrong rank used to surface as Keras' "Kernel shape must have the same length as input".
    with pytest.raises(
        ValueError, match=r"\(None, None, 16\).*same rank \(3, .*not 2.*Received: input_shape=\(16, 16\)"
    ) as error:
        profile(model, input_shape=(16, 16))
    assert "Kernel shape" not in str(error.value)
    # Inside nested models too, named by their path.
    outer_inputs = keras.Input((None, None, 16))
    outer = keras.Model(outer_inputs, keras.layers.ReLU()(model(outer_inputs)), name="outer")
    with pytest.raises(ValueError, match=r"layer 'sixteen/conv'.*input_shape=\(8, 8, 8\)"):
        profile(outer, input_shape=(8, 8, 8))
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match=r"\(8,\).*'fc'.*input_shape=\(5,\)"):
        profile(dense, input_shape=(5,))
    # Other spatial sizes are fine: the convolutions take any.
    assert profile(model, input_shape=(8, 8, 16)).total_macs == 6 * 6 * 9 * 16 * 4
    fixed = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    assert profile(fixed, input_shape=(16, 16, 3)).total_macs == 14 * 14 * 9 * 3 * 4


def test_time_interleaved_runs_round_robin_and_checks_its_counts():
    from keras_effconv.profiling import time_interleaved

    calls = []
    result = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds, never two of one in a row
    assert all(len(r["times_ms"]) == 3 and r["min_ms"] <= r["median_ms"] for r in result.values())
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_interleaved({"a": lambda: None}, warmup=-1)

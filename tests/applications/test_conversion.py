"""convert(): rebuild any Functional/Sequential model with efficient convolutions."""

import numpy as np
import pytest

import keras

import reference
from keras_effconv import applications
from keras_effconv import layers
from keras_effconv import profile


def hetconv_saving(height, width, channels_in, filters, part=4, k=3):
    """MACs a 3x3 HetConv saves against the dense conv (paper's formula)."""
    dense = height * width * k * k * channels_in * filters
    het = height * width * (k * k * channels_in * filters // part + channels_in * filters * (part - 1) // part)
    return dense - het


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(weights=None)


@pytest.fixture(scope="module")
def converted(resnet50):
    return applications.convert(resnet50, conv="hetconv")


def test_resnet50_hetconv_macs_drop_by_the_analytic_amount(resnet50, converted):
    new_model, report = converted
    expected_saving = 0
    for layer in resnet50.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3):
            _, h, w, c_out = layer.output.shape
            expected_saving += hetconv_saving(h, w, layer.input.shape[-1], c_out)
    assert len(report.replaced) == 16
    assert profile(resnet50).total_macs - profile(new_model).total_macs == expected_saving


def test_untouched_layers_keep_bit_identical_weights(resnet50, converted):
    new_model, report = converted
    replaced = {row["name"] for row in report.replaced}
    checked = 0
    for layer in resnet50.layers[1:]:
        new_layer = new_model.get_layer(layer.name)
        if layer.name in replaced:
            assert isinstance(new_layer, layers.HetConv2D)
            continue
        assert type(new_layer) is type(layer) and new_layer is not layer
        for a, b in zip(layer.get_weights(), new_layer.get_weights()):
            np.testing.assert_array_equal(a, b)
            checked += 1
    assert checked > 200


def test_report_says_why_layers_were_kept(converted):
    _, report = converted
    reasons = {row["name"]: row["reason"] for row in report.skipped}
    assert "image stem" in reasons["conv1_conv"]
    assert "1x1" in reasons["conv2_block1_1_conv"]
    assert report.to_dict()["conv"] == "hetconv"
    assert "conv2_block1_2_conv | replaced by HetConv2D" in report.to_markdown()


def test_input_model_is_not_modified(rng):
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    before = [w.copy() for w in base.get_weights()]
    x = rng.standard_normal((1, 32, 32, 3)).astype("float32")
    y_before = reference.to_numpy(base(x))
    new_model, report = applications.convert(base, conv="igc")
    assert len(report.replaced) == 12
    assert all(isinstance(l, (keras.layers.Conv2D, keras.layers.InputLayer, keras.layers.MaxPooling2D)) for l in base.layers)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(reference.to_numpy(base(x)), y_before)
    assert not {id(w) for w in new_model.weights} & {id(w) for w in base.weights}


def test_densenet121_converts():
    base = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=(64, 64, 3))
    new_model, report = applications.convert(base, conv="depthwise_separable")
    assert len(report.replaced) == 58
    assert new_model.output.shape == base.output.shape
    assert profile(new_model).total_macs < profile(base).total_macs


def test_nested_and_sequential_models(rng):
    inner = keras.Sequential(
        [keras.Input((16, 16, 32)), keras.layers.Conv2D(32, 3, padding="same", name="inner_conv"), keras.layers.ReLU()],
        name="inner",
    )
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    a = inner(x)
    b = keras.layers.Conv2D(32, 3, padding="same", name="branch")(x)
    outputs = keras.layers.Add()([a, b])
    model = keras.Model(inputs, outputs)
    new_model, report = applications.convert(model, conv="hetconv", conv_config={"part": 2})
    assert sorted(row["name"] for row in report.replaced) == ["branch", "inner_conv"]
    assert isinstance(new_model.get_layer("inner").get_layer("inner_conv"), layers.HetConv2D)
    np.testing.assert_array_equal(new_model.get_layer("stem").get_weights()[0], model.get_layer("stem").get_weights()[0])
    x = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    assert reference.to_numpy(new_model(x)).shape == (2, 16, 16, 32)

    sequential = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(16, 3, name="c")])
    new_sequential, report = applications.convert(sequential, conv="factorized")
    assert isinstance(new_sequential.layers[0], layers.FactorizedConv2D) and report.replaced[0]["name"] == "c"


def test_layers_argument_selects_and_validates():
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    _, report = applications.convert(model, conv="hetconv", layers=["block3_conv1", "block1_conv1"])
    assert [row["name"] for row in report.replaced] == ["block3_conv1"]
    assert any(row["name"] == "block1_conv1" and "stem" in row["reason"] for row in report.skipped)
    with pytest.raises(ValueError, match="not Conv2D"):
        applications.convert(model, conv="hetconv", layers=["block1_pool"])
    with pytest.raises(ValueError, match="not Conv2D"):
        applications.convert(model, conv="hetconv", layers=["no_such_layer"])


def test_conversion_matches_the_applications():
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    new_model, _ = applications.convert(base, conv="compconv")
    built = applications.EffResNet50(include_top=False, input_shape=(64, 64, 3), conv="compconv")
    assert new_model.count_params() == built.count_params()
    assert profile(new_model).total_macs == profile(built).total_macs


def test_bad_input():
    with pytest.raises(TypeError, match="keras.Model"):
        applications.convert(keras.layers.Conv2D(3, 3))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        applications.convert(Subclassed())
    model = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(16, 3)])
    with pytest.raises(ValueError, match="conv"):
        applications.convert(model, conv="winograd")
    with pytest.raises(ValueError, match="min_input_channels"):
        applications.convert(model, conv="hetconv", conv_config={"min_input_channels": 0})


def test_a_recipe_that_replaces_nothing_is_an_error():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3)])
    with pytest.raises(ValueError, match="replaces no convolution"):
        applications.convert(model, conv="hetconv")
    with pytest.raises(ValueError, match="replaces no convolution"):
        applications.EffResNet50(conv="hetconv", conv_config={"part": 3})
    _, report = applications.convert(model, conv="standard")
    assert report.replaced == []


def test_lambda_layer_is_named_with_what_to_do():
    # Keras' own message advised `safe_mode=False` "to the loading function", which does not apply.
    inputs = keras.Input((8, 8, 16))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2, name="double")(x), name="net")
    with pytest.raises(ValueError, match=r"`convert` rebuilds model 'net'.*Lambda layer 'double'") as error:
        applications.convert(model, conv="hetconv")
    assert "Replace 'double' by a built-in Keras layer" in str(error.value)
    assert "loading function" not in str(error.value)


def _hetconv_orders(model):
    return {
        layer.name: (layer.blocked_inputs, layer.blocked_outputs)
        for layer in model.layers
        if isinstance(layer, layers.HetConv2D)
    }


def test_networks_run_hetconv_blocked_only_where_a_learned_convolution_absorbs_the_relabelling(converted):
    # Bottleneck 3x3s sit between two 1x1s: both sides free.
    bottleneck = _hetconv_orders(applications.EffResNet50(include_top=False, input_shape=(64, 64, 3), conv="hetconv"))
    assert len(bottleneck) == 16 and set(bottleneck.values()) == {(True, True)}
    # Basic blocks: the block input and the residual sum keep the paper's order.
    basic = _hetconv_orders(applications.EffResNet20(input_shape=(28, 28, 1), conv="hetconv"))
    assert {name: order for name, order in basic.items() if name.endswith("_1_conv")} == {
        name: (False, True) for name in basic if name.endswith("_1_conv")
    }
    assert {order for name, order in basic.items() if name.endswith("_2_conv")} == {(True, False)}
    # VGG: free between two convolutions; the network's output without the classifier keeps its order.
    vgg = _hetconv_orders(applications.EffVGG16(include_top=False, style="cifar", input_shape=(32, 32, 3)))
    assert vgg.pop("block5_conv3") == (True, False) and set(vgg.values()) == {(True, True)}
    vgg_top = _hetconv_orders(applications.EffVGG16(style="cifar", input_shape=(32, 32, 3), classes=10))
    assert vgg_top["block5_conv3"] == (True, True)
    # convert() cannot see the neighbours: the paper's order everywhere.
    assert set(_hetconv_orders(converted[0]).values()) == {(False, False)}
    # conv_config overrides the hint.
    natural = applications.EffResNet50(include_top=False, input_shape=(64, 64, 3), conv="hetconv",
                                       conv_config={"blocked_outputs": False})
    assert set(_hetconv_orders(natural).values()) == {(True, False)}


def test_relabelled_channels_must_name_the_layer_s_arguments():
    from keras_effconv.conv_methods import register_conv_method

    with pytest.raises(ValueError, match="relabelled_channels"):
        register_conv_method("bad_orders", layers.HetConv2D, relabelled_channels={"inputs": "no_such_argument"})
    with pytest.raises(ValueError, match="relabelled_channels"):
        register_conv_method("bad_orders", layers.HetConv2D, relabelled_channels={"middle": "blocked_inputs"})

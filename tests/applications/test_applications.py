"""The applications behave like keras.applications (Keras' own test cases)."""

import inspect

import numpy as np
import pytest

import keras

import reference
from conftest import BACKEND
from keras_effconv import applications
from keras_effconv.conv_methods import conv_method_names

# (constructor, channels of the last feature map, keras counterpart or None)
NETWORKS = {
    "EffResNet18": (applications.EffResNet18, 512, None),
    "EffResNet34": (applications.EffResNet34, 512, None),
    "EffResNet50": (applications.EffResNet50, 2048, keras.applications.ResNet50),
    "EffResNet101": (applications.EffResNet101, 2048, keras.applications.ResNet101),
    "EffResNet152": (applications.EffResNet152, 2048, keras.applications.ResNet152),
    "EffVGG16": (applications.EffVGG16, 512, keras.applications.VGG16),
    "EffResNet20": (applications.EffResNet20, 64, None),
    "EffResNet56": (applications.EffResNet56, 64, None),
}
# Keras' application test cases run for every conv type on these; the deeper
# variants share their code and run the same cases with -m slow.
FAST_NETWORKS = ("EffResNet18", "EffResNet50", "EffVGG16", "EffResNet20")
SLOW_NETWORKS = ("EffResNet34", "EffResNet101", "EffResNet152", "EffResNet56")
FORMATS = ("channels_last", "channels_first")

network_params = [pytest.param(n, id=n) for n in FAST_NETWORKS] + [
    pytest.param(n, id=n, marks=pytest.mark.slow) for n in SLOW_NETWORKS
]


@pytest.fixture
def image_data_format(request):
    original = keras.config.image_data_format()
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format(original)


def channels_shape(data_format, channels, size=None):
    return (channels, size, size) if data_format == "channels_first" else (size, size, channels)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_signature_starts_with_keras_parameters(name):
    constructor, _, keras_app = NETWORKS[name]
    ours = list(inspect.signature(constructor).parameters)
    reference_names = list(inspect.signature(keras_app or keras.applications.ResNet50).parameters)
    assert ours[: len(reference_names)] == reference_names
    assert ours[len(reference_names) : len(reference_names) + 2] == ["conv", "conv_config"]
    defaults = inspect.signature(constructor).parameters
    assert defaults["weights"].default is None


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("name", network_params)
@pytest.mark.parametrize("image_data_format", FORMATS, indirect=True)
def test_notop_variable_input_channels(name, conv, image_data_format):
    constructor, last_dim, _ = NETWORKS[name]
    expected = [None, last_dim, None, None] if image_data_format == "channels_first" else [None, None, None, last_dim]
    for channels in (1, 4):
        model = constructor(
            weights=None, include_top=False, input_shape=channels_shape(image_data_format, channels), conv=conv
        )
        assert list(model.outputs[0].shape) == expected


@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("name", network_params)
@pytest.mark.parametrize("image_data_format", FORMATS, indirect=True)
def test_notop_custom_input_shape(name, conv, image_data_format):
    constructor, last_dim, _ = NETWORKS[name]
    model = constructor(
        weights=None, include_top=False, input_shape=channels_shape(image_data_format, 3, 123), conv=conv
    )
    axis = 1 if image_data_format == "channels_first" else -1
    assert model.outputs[0].shape[axis] == last_dim


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("name", network_params)
@pytest.mark.parametrize("image_data_format", FORMATS, indirect=True)
def test_notop_custom_input_tensor(name, conv, image_data_format):
    constructor, last_dim, _ = NETWORKS[name]
    inputs = keras.Input(shape=channels_shape(image_data_format, 4, 200), name="custom_input")
    inputs = keras.layers.Conv2D(3, (2, 2), padding="valid", strides=(2, 2))(inputs)
    model = constructor(weights=None, include_top=False, input_tensor=inputs, conv=conv)
    axis = 1 if image_data_format == "channels_first" else -1
    assert model.outputs[0].shape[axis] == last_dim
    assert model.inputs[0].name == "custom_input"


@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("pooling", ("max", "avg"))
@pytest.mark.parametrize("name", network_params)
def test_pooling(name, conv, pooling):
    constructor, last_dim, _ = NETWORKS[name]
    model = constructor(weights=None, include_top=False, pooling=pooling, conv=conv)
    assert list(model.outputs[0].shape) == [None, last_dim]


@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("name", network_params)
def test_classifier_activation(name, conv):
    constructor, _, _ = NETWORKS[name]
    model = constructor(weights=None, include_top=True, classifier_activation="softmax", conv=conv, classes=7)
    assert model.layers[-1].activation.__name__ == "softmax"
    assert list(model.outputs[0].shape) == [None, 7]


def test_classifier_without_activation_gives_logits():
    model = applications.EffResNet20(classifier_activation=None)
    assert model.layers[-1].activation.__name__ == "linear"


@pytest.mark.parametrize("conv", conv_method_names())
@pytest.mark.parametrize("name", FAST_NETWORKS)
def test_serialization_round_trip(name, conv):
    constructor, _, _ = NETWORKS[name]
    model = constructor(weights=None, include_top=False, input_shape=(32, 32, 3), conv=conv)
    config = keras.saving.serialize_keras_object(model)
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert len(rebuilt.weights) == len(model.weights)
    assert [type(layer).__name__ for layer in rebuilt.layers] == [type(layer).__name__ for layer in model.layers]


def test_standard_resnet50_is_keras_resnet50():
    ours = applications.EffResNet50(conv="standard")
    theirs = keras.applications.ResNet50(weights=None)
    assert ours.count_params() == 25_636_712
    assert [(type(l).__name__, l.name) for l in ours.layers[1:]] == [
        (type(l).__name__, l.name) for l in theirs.layers[1:]
    ]
    for layer in theirs.layers[1:]:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    x = applications.preprocess_input(x)
    np.testing.assert_array_equal(
        reference.to_numpy(ours(x, training=False)), reference.to_numpy(theirs(x, training=False))
    )


@pytest.mark.parametrize("name", ("EffVGG16", "EffResNet101"))
def test_standard_matches_keras_layer_for_layer(name):
    constructor, _, keras_app = NETWORKS[name]
    ours = constructor(conv="standard", include_top=False, input_shape=(64, 64, 3))
    theirs = keras_app(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert ours.count_params() == theirs.count_params()
    strip = lambda config: {k: v for k, v in config.items() if k != "name"}  # noqa: E731
    for a, b in zip(ours.layers[1:], theirs.layers[1:]):
        assert a.name == b.name
        assert strip(a.get_config()) == strip(b.get_config())


@pytest.mark.parametrize("name", ["EffResNet50", "EffResNet18"])
@pytest.mark.parametrize("conv", [c for c in conv_method_names() if c != "standard"])
def test_recipe_replaces_every_3x3_except_the_stem(conv, name):
    model = NETWORKS[name][0](conv=conv, include_top=False, input_shape=(64, 64, 3))
    by_kernel = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D)) or hasattr(layer, "compute_macs"):
            by_kernel.setdefault(tuple(layer.kernel_size), set()).add(type(layer).__name__)
    assert by_kernel[(1, 1)] == {"Conv2D"}
    assert by_kernel[(7, 7)] == {"Conv2D"}
    assert "Conv2D" not in by_kernel[(3, 3)] and len(by_kernel[(3, 3)]) == 1


@pytest.mark.parametrize(
    "name, params, macs",
    [
        ("EffResNet18", 11_689_512, 1.82e9),
        pytest.param("EffResNet34", 21_797_672, 3.67e9, marks=pytest.mark.slow),
    ],
)
def test_basic_block_resnets_have_torchvisions_size(name, params, macs):
    from keras_effconv.profiling import profile

    model = NETWORKS[name][0](conv="standard")
    cost = profile(model)
    # torchvision counts parameters without BN's moving statistics: keras' trainable ones.
    assert cost.trainable_params == params
    assert abs(cost.total_macs / macs - 1) <= 0.01
    blocks = {l.name.split("_")[0] for l in model.layers if l.name.endswith("_add")}
    assert blocks == {"conv2", "conv3", "conv4", "conv5"}


def test_basic_block_matches_numpy(rng):
    """The first strided block of the standard ResNet-18 against NumPy convolutions and BN."""
    model = applications.EffResNet18(conv="standard", include_top=False, input_shape=(32, 32, 3))
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif "moving_mean" in v.path or "beta" in v.path:
            v.assign(0.1 * rng.standard_normal(v.shape).astype("float32"))
    block_in = model.get_layer("conv2_block2_out").output
    probe = keras.Model(model.inputs, [block_in, model.get_layer("conv3_block1_out").output])
    x_in, y = (reference.to_numpy(t).astype(np.float64) for t in probe([rng.standard_normal((1, 32, 32, 3))
                                                                          .astype("float32")], training=False))

    def bn(z, name):
        layer = model.get_layer(name)
        gamma, beta, mean, var = (reference.to_numpy(w).astype(np.float64) for w in layer.weights)
        return (z - mean) / np.sqrt(var + layer.epsilon) * gamma + beta

    def kernel(name):
        return reference.to_numpy(model.get_layer(name).kernel).astype(np.float64)

    z = np.maximum(bn(reference.conv2d(x_in, kernel("conv3_block1_1_conv"), strides=(2, 2)), "conv3_block1_1_bn"), 0)
    z = bn(reference.conv2d(z, kernel("conv3_block1_2_conv")), "conv3_block1_2_bn")
    shortcut = bn(reference.conv2d(x_in, kernel("conv3_block1_0_conv"), strides=(2, 2)), "conv3_block1_0_bn")
    np.testing.assert_allclose(y, np.maximum(z + shortcut, 0), rtol=1e-4, atol=1e-4)


def test_weights_path_round_trip(tmp_path, rng):
    model = applications.EffResNet20(input_shape=(28, 28, 1), conv="hetconv")
    path = str(tmp_path / "resnet20.weights.h5")
    model.save_weights(path)
    loaded = applications.EffResNet20(input_shape=(28, 28, 1), conv="hetconv", weights=path)
    x = rng.standard_normal((2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(reference.to_numpy(loaded(x)), reference.to_numpy(model(x)))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_imagenet_weights_are_refused_without_download(name, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    with pytest.raises(ValueError, match="No pretrained ImageNet weights exist"):
        NETWORKS[name][0](weights="imagenet")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "/no/such/file.weights.h5"}, "weights"),
        ({"conv": "hetconv2"}, "conv"),
        ({"conv_config": {"parts": 4}}, "unknown argument"),
        ({"conv_config": [4]}, "conv_config"),
        ({"include_top": True, "input_shape": (None, None, 3)}, "static"),
        ({"include_top": False, "input_shape": (16, 16, 3)}, "at least 32"),
        ({"classifier_activation": "no_such_activation"}, "activation"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        applications.EffResNet50(**kwargs)


def test_bad_style_raises():
    with pytest.raises(ValueError, match="style"):
        applications.EffVGG16(style="mnist")


@pytest.mark.parametrize("name", FAST_NETWORKS)
def test_pyramid_outputs_are_multiscale_features(name):
    constructor = NETWORKS[name][0]
    model = constructor(include_top=False, input_shape=(64, 64, 3), conv="hetconv")
    extractor = keras.Model(model.input, model.pyramid_outputs)
    features = extractor(np.zeros((1, 64, 64, 3), "float32"))
    for level, tensor in features.items():
        assert tensor.shape[1] == 64 // 2 ** int(level[1:])


def test_cifar_style_vgg16_and_resnets_on_28px_grayscale(rng):
    x = rng.uniform(0, 1, (2, 28, 28, 1)).astype("float32")
    for model in (
        applications.EffVGG16(input_shape=(28, 28, 1), classes=10, style="cifar", conv="igc"),
        applications.EffResNet20(input_shape=(28, 28, 1), conv="compconv"),
        applications.EffResNet56(input_shape=(28, 28, 1), conv="factorized"),
    ):
        y = reference.to_numpy(model(x))
        assert y.shape == (2, 10)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_cifar_resnet_depths_follow_6n_plus_2():
    for depth, constructor in ((20, applications.EffResNet20), (56, applications.EffResNet56)):
        model = constructor(conv="standard")
        weighted = [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
        shortcuts = [l for l in weighted if l.name.endswith("_0_conv")]
        assert len(weighted) - len(shortcuts) == depth


def test_preprocess_input_matches_keras(rng):
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(
        applications.preprocess_input(x.copy()), keras.applications.resnet50.preprocess_input(x.copy())
    )


def test_decode_predictions_uses_shipped_index():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [1, 386, 999]] = [0.2, 0.7, 0.1]
    preds[1, 0] = 1.0
    decoded = applications.decode_predictions(preds, top=3)
    assert [d[1] for d in decoded[0]] == ["African_elephant", "goldfish", "toilet_tissue"]
    assert decoded[1][0][:2] == ("n01440764", "tench")
    index = applications.imagenet.class_index()
    assert len(index) == 1000 and len({v[0] for v in index.values()}) == 1000
    with pytest.raises(ValueError, match="1000"):
        applications.decode_predictions(np.zeros((2, 10)))


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF-CPU Conv2D has no channels_first kernels (as in Keras' tests)")
def test_channels_first_forward_matches_channels_last(rng):
    original = keras.config.image_data_format()
    try:
        last = applications.EffResNet20(input_shape=(16, 16, 3), conv="hetconv")
        keras.config.set_image_data_format("channels_first")
        first = applications.EffResNet20(input_shape=(3, 16, 16), conv="hetconv")
    finally:
        keras.config.set_image_data_format(original)
    first.set_weights(last.get_weights())
    x = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        reference.to_numpy(first(np.transpose(x, (0, 3, 1, 2)))), reference.to_numpy(last(x)), rtol=1e-4, atol=1e-5
    )

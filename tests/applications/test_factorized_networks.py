"""The SIC paper's networks: keras.applications' behaviour, the MAC budgets, the layers they are made of.

Built small (64 px ImageNet networks, 28-32 px CIFAR ones) by default; the
224 px budgets of ResNet-101 and VGG-16 and the ResNet-101/56 variants of
keras' cases run with `-m slow`. ResNet-50's 224 px budget runs by default.
"""

import inspect

import numpy as np
import pytest

import keras

import reference
from conftest import BACKEND
from keras_effconv import applications
from keras_effconv.applications import factorized
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import TopologicalProjection
from keras_effconv.profiling import profile

# constructor, channels of the last feature map, keras counterpart (None: the CIFAR ResNet), small input size
NETWORKS = {
    "FactorizedResNet50": (applications.FactorizedResNet50, 2048, keras.applications.ResNet50, 64),
    "FactorizedResNet101": (applications.FactorizedResNet101, 2048, keras.applications.ResNet101, 64),
    "FactorizedVGG16": (applications.FactorizedVGG16, 512, keras.applications.VGG16, 64),
    "FactorizedResNet20": (applications.FactorizedResNet20, 64, None, 28),
    "FactorizedResNet56": (applications.FactorizedResNet56, 64, None, 28),
}
FAST = ("FactorizedResNet50", "FactorizedVGG16", "FactorizedResNet20")
SLOW = ("FactorizedResNet101", "FactorizedResNet56")
network_params = [pytest.param(n, id=n) for n in FAST] + [pytest.param(n, id=n, marks=pytest.mark.slow) for n in SLOW]
FORMATS = ("channels_last", "channels_first")
KNOBS = {
    "FactorizedResNet50": ["grid", "window", "sic_units", "spatial_bottleneck_stages", "factorize_shortcuts",
                           "projection_execution"],
    "FactorizedVGG16": ["grid", "window", "sic_units", "spatial_bottleneck_stages", "style"],
}
KNOBS["FactorizedResNet101"] = KNOBS["FactorizedResNet20"] = KNOBS["FactorizedResNet56"] = KNOBS["FactorizedResNet50"]


@pytest.fixture
def image_data_format(request):
    original = keras.config.image_data_format()
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format(original)


def channels_shape(data_format, channels, size=None):
    return (channels, size, size) if data_format == "channels_first" else (size, size, channels)


def small(name, channels=3, **kwargs):
    constructor, _, _, size = NETWORKS[name]
    return constructor(input_shape=(size, size, channels), **kwargs)


# --------------------------------------------------------------------------- keras.applications' cases


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_signature_is_keras_then_the_knobs(name):
    constructor, _, keras_app, _ = NETWORKS[name]
    parameters = inspect.signature(constructor).parameters
    reference_names = list(inspect.signature(keras_app or keras.applications.ResNet50).parameters)
    assert list(parameters) == reference_names + KNOBS[name]
    assert parameters["weights"].default is None
    assert parameters["name"].default == name.replace("Factorized", "factorized_").lower()
    assert parameters["sic_units"].default == 1
    for section in ("Args:", "Returns:", "Raises:", "Example:"):
        assert section in constructor.__doc__
    for argument in parameters:
        assert f"{argument}:" in constructor.__doc__, argument


def test_registered_for_the_command_line():
    for name in NETWORKS:
        key = name.replace("Factorized", "factorized_").lower()
        assert applications.MODELS[key] is NETWORKS[name][0]
        assert getattr(applications, name) is NETWORKS[name][0]


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("name", network_params)
@pytest.mark.parametrize("image_data_format", FORMATS, indirect=True)
def test_notop_variable_input_channels(name, image_data_format):
    constructor, last_dim, _, _ = NETWORKS[name]
    expected = [None, last_dim, None, None] if image_data_format == "channels_first" else [None, None, None, last_dim]
    for channels in (1, 4):
        model = constructor(weights=None, include_top=False, input_shape=channels_shape(image_data_format, channels))
        assert list(model.outputs[0].shape) == expected


@pytest.mark.parametrize("name", network_params)
def test_notop_custom_input_shape(name):
    constructor, last_dim, _, _ = NETWORKS[name]
    model = constructor(weights=None, include_top=False, input_shape=(123, 123, 3))
    assert model.outputs[0].shape[-1] == last_dim


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("name", network_params)
def test_notop_custom_input_tensor(name):
    constructor, last_dim, _, _ = NETWORKS[name]
    inputs = keras.Input(shape=(200, 200, 4), name="custom_input")
    inputs = keras.layers.Conv2D(3, (2, 2), padding="valid", strides=(2, 2))(inputs)
    model = constructor(weights=None, include_top=False, input_tensor=inputs)
    assert model.outputs[0].shape[-1] == last_dim
    assert model.inputs[0].name == "custom_input"


@pytest.mark.parametrize("pooling", ("max", "avg"))
@pytest.mark.parametrize("name", network_params)
def test_pooling(name, pooling):
    constructor, last_dim, _, _ = NETWORKS[name]
    model = constructor(weights=None, include_top=False, pooling=pooling)
    assert list(model.outputs[0].shape) == [None, last_dim]


@pytest.mark.parametrize("name", network_params)
def test_classifier_activation(name):
    model = small(name, classes=7, classifier_activation="softmax")
    assert model.layers[-1].name == "predictions"
    assert model.layers[-1].activation.__name__ == "softmax"
    assert list(model.outputs[0].shape) == [None, 7]
    logits = small(name, classes=7, classifier_activation=None)
    assert logits.layers[-1].activation.__name__ == "linear"


@pytest.mark.parametrize("name", FAST)
def test_serialization_round_trip(name):
    model = small(name, include_top=False)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert len(rebuilt.weights) == len(model.weights)
    assert [(type(l).__name__, l.name) for l in rebuilt.layers] == [(type(l).__name__, l.name) for l in model.layers]
    assert sorted(rebuilt.pyramid_outputs) == sorted(model.pyramid_outputs)


@pytest.mark.parametrize("name", FAST)
def test_pyramid_outputs_are_multiscale_features(name):
    """Level Pi has stride 2**i (the forward pass runs in the .keras round-trip test)."""
    constructor, _, _, size = NETWORKS[name]
    size = 32 if name == "FactorizedResNet20" else size
    model = constructor(include_top=False, input_shape=(size, size, 3))
    expected = {"FactorizedResNet50": ["P2", "P3", "P4", "P5"], "FactorizedVGG16": ["P1", "P2", "P3", "P4", "P5"],
                "FactorizedResNet20": ["P0", "P1", "P2"]}[name]
    assert sorted(model.pyramid_outputs) == expected
    extractor = keras.Model(model.input, model.pyramid_outputs)
    for level, tensor in extractor.output.items():
        assert tuple(tensor.shape[1:3]) == (size // 2 ** int(level[1:]),) * 2


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_imagenet_weights_are_refused_without_download(name, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    with pytest.raises(ValueError, match=f"No pretrained ImageNet weights exist for {name}"):
        NETWORKS[name][0](weights="imagenet")


def test_weights_path_round_trip(tmp_path, rng):
    model = applications.FactorizedResNet20(input_shape=(16, 16, 1), grid=(1, 8), window=(1, 2))
    path = str(tmp_path / "resnet20.weights.h5")
    model.save_weights(path)
    loaded = applications.FactorizedResNet20(input_shape=(16, 16, 1), grid=(1, 8), window=(1, 2), weights=path)
    x = rng.standard_normal((2, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(reference.to_numpy(loaded(x)), reference.to_numpy(model(x)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "/no/such/file.weights.h5"}, "weights"),
        ({"include_top": True, "input_shape": (None, None, 3)}, "static"),
        ({"include_top": False, "input_shape": (16, 16, 3)}, "at least 32"),
        ({"classifier_activation": "no_such_activation"}, "activation"),
    ],
)
def test_keras_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        applications.FactorizedResNet50(**kwargs)


# --------------------------------------------------------------------------- .keras files


def _randomize_bn_statistics(model, rng):
    """Non-trivial BN statistics, so that a load that lost them shows in the outputs."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(0.1 * rng.standard_normal(layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("FactorizedResNet50", {"input_shape": (32, 32, 3), "include_top": False, "pooling": "avg",
                                "spatial_bottleneck_stages": ("conv4",)}),
        ("FactorizedVGG16", {"input_shape": (16, 16, 3), "classes": 10, "style": "cifar"}),
        ("FactorizedResNet20", {"input_shape": (28, 28, 1)}),
        ("FactorizedResNet20", {"input_shape": (28, 28, 1), "grid": (2, 4), "window": (2, 2), "sic_units": 2,
                                "spatial_bottleneck_stages": (1, "stack3"), "projection_execution": "masked_dense"}),
    ],
    ids=["resnet50", "vgg16-cifar", "resnet20", "resnet20-knobs"],
)
def test_keras_file_round_trip_gives_identical_outputs(name, kwargs, tmp_path, rng):
    model = NETWORKS[name][0](**kwargs)
    _randomize_bn_statistics(model, rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, applications.EffConvModel)
    assert sorted(loaded.pyramid_outputs) == sorted(model.pyramid_outputs)
    assert [l.get_config() for l in loaded.layers[1:]] == [l.get_config() for l in model.layers[1:]]
    shape = (2,) + tuple(model.input.shape[1:])
    x = rng.standard_normal(shape).astype("float32")
    expected = reference.to_numpy(model(x, training=False))
    assert np.all(np.isfinite(expected))
    np.testing.assert_array_equal(reference.to_numpy(loaded(x, training=False)), expected)


# --------------------------------------------------------------------------- MAC budgets


def _macs_params(model):
    result = profile(model)
    assert result.uncounted == []
    return result.total_macs, result.total_params


def test_resnet50_budget():
    """The paper: 845 M MACs at 224 px (4.5x less than ResNet-50's 3.86 G); the module docstring's numbers."""
    macs, params = _macs_params(applications.FactorizedResNet50())
    assert (macs, params) == (655_916_544, 5_571_624)
    assert macs <= 0.89e9
    assert 3_857_973_248 / macs > 4.5  # keras' ResNet50, pinned by test_slow_budgets_against_standard


@pytest.mark.slow
@pytest.mark.parametrize(
    "constructor, macs, params, budget",
    [
        (applications.FactorizedResNet101, 1_154_916_864, 8_248_104, 1.23e9),
        (applications.FactorizedVGG16, 346_741_248, 124_107_432, 0.39e9),
    ],
    ids=["resnet101", "vgg16"],
)
def test_imagenet_budgets(constructor, macs, params, budget):
    assert _macs_params(constructor()) == (macs, params)
    assert macs <= budget


@pytest.mark.slow
@pytest.mark.parametrize(
    "standard, macs, params",
    [
        (lambda: applications.EffResNet50(conv="standard"), 3_857_973_248, 25_636_712),
        (lambda: applications.EffResNet101(conv="standard"), 7_570_194_432, 44_707_176),
        (lambda: applications.EffVGG16(conv="standard"), 15_470_264_320, 138_357_544),
    ],
    ids=["resnet50", "resnet101", "vgg16"],
)
def test_slow_budgets_against_standard(standard, macs, params):
    """The standard networks' numbers the module docstring and the ratios use."""
    assert _macs_params(standard()) == (macs, params)


@pytest.mark.parametrize(
    "factorized_net, standard_net, macs, params, low, high",
    [
        (lambda: applications.FactorizedResNet20(), lambda: applications.EffResNet20(conv="standard"),
         6_654_592, 42_090, 4.5, 6.5),
        (lambda: applications.FactorizedResNet56(), lambda: applications.EffResNet56(conv="standard"),
         19_188_352, 124_074, 4.5, 7.0),
        (lambda: applications.FactorizedVGG16(input_shape=(32, 32, 3), classes=10, style="cifar"),
         lambda: applications.EffVGG16(input_shape=(32, 32, 3), classes=10, style="cifar", conv="standard"),
         7_525_376, 739_018, 38, 46),
    ],
    ids=["resnet20", "resnet56", "vgg16-cifar"],
)
def test_cifar_budgets(factorized_net, standard_net, macs, params, low, high):
    """32 px, 10 classes: about the ImageNet networks' reduction (~6x ResNets, ~42x VGG-16)."""
    ours = _macs_params(factorized_net())
    assert ours == (macs, params)
    standard_macs, _ = _macs_params(standard_net())
    assert low <= standard_macs / macs <= high


# --------------------------------------------------------------------------- the layers the docstrings promise


def _convs(model):
    return {
        layer.name: layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, FactorizedConv2D, TopologicalProjection))
    }


def test_resnet50_blocks_are_sic_layers():
    model = applications.FactorizedResNet50(include_top=False, input_shape=(64, 64, 3))
    convs = _convs(model)
    assert type(convs.pop("conv1_conv")) is keras.layers.Conv2D
    for name, layer in convs.items():
        kind = name.split("_")[-2]
        stride = 2 if name in ("conv3_block1_0_conv", "conv4_block1_0_conv", "conv5_block1_0_conv",
                               "conv3_block1_1_conv", "conv4_block1_1_conv", "conv5_block1_1_conv") else 1
        if kind == "2":
            assert type(layer) is FactorizedConv2D, name
            assert layer.num_units == 1 and not layer.spatial_bottleneck
            assert layer.topology == {"grid": (1, 8), "window": (1, 2)}
            assert layer.kernel_size == (3, 3) and layer.strides == (1, 1) and layer.activation.__name__ == "linear"
        else:
            assert type(layer) is TopologicalProjection, name
            assert (layer.grid, layer.window, layer.use_bias) == ((1, 8), (1, 2), True)
            assert layer.strides == (stride, stride), name
    # ResNet v1: the stride sits in the 1x1, the 3x3 runs at the stage's resolution.
    assert model.get_layer("conv3_block1_2_conv").input.shape[1] == 8
    names = [l.name for l in model.layers]
    assert names.index("conv2_block1_2_conv") < names.index("conv2_block1_2_bn") < names.index("conv2_block1_2_relu")


def test_resnet_knobs_change_the_layers():
    model = applications.FactorizedResNet50(
        include_top=False, input_shape=(32, 32, 3), grid=(4, 4), window=(3, 3), sic_units=2,
        spatial_bottleneck_stages=(3, "conv4"), factorize_shortcuts=False, projection_execution="masked_dense",
    )
    convs = _convs(model)
    assert type(convs["conv3_block1_0_conv"]) is keras.layers.Conv2D
    assert convs["conv3_block1_0_conv"].strides == (2, 2)
    assert convs["conv3_block1_1_conv"].execution == "masked_dense"
    bottlenecks = {
        name for name, layer in convs.items() if isinstance(layer, FactorizedConv2D) and layer.spatial_bottleneck
    }
    assert bottlenecks == {f"conv{s}_block{b}_2_conv" for s, n in ((3, 4), (4, 6)) for b in range(1, n + 1)}
    assert convs["conv2_block1_2_conv"].num_units == 2
    assert convs["conv2_block1_2_conv"].topology == {"grid": (4, 4), "window": (3, 3)}
    dense = applications.FactorizedResNet50(include_top=False, input_shape=(32, 32, 3), grid=None, window=None)
    kinds = {type(layer).__name__ for name, layer in _convs(dense).items() if not name.endswith("_2_conv")}
    assert kinds == {"Conv2D"}


def test_resnet_defaults_have_no_bottleneck():
    for constructor in (applications.FactorizedResNet50, applications.FactorizedResNet101,
                        applications.FactorizedResNet20, applications.FactorizedResNet56):
        assert inspect.signature(constructor).parameters["spatial_bottleneck_stages"].default == ()


@pytest.mark.slow
def test_resnet101_blocks():
    model = applications.FactorizedResNet101(include_top=False, input_shape=(32, 32, 3))
    kinds = {}
    for name, layer in _convs(model).items():
        kinds.setdefault(type(layer).__name__, []).append(name)
    assert kinds["Conv2D"] == ["conv1_conv"]
    assert len(kinds["FactorizedConv2D"]) == 33 and len(kinds["TopologicalProjection"]) == 2 * 33 + 4
    assert not any(model.get_layer(name).spatial_bottleneck for name in kinds["FactorizedConv2D"])


@pytest.mark.parametrize("style", ("imagenet", "cifar"))
def test_vgg16_blocks_are_sic_layers(style):
    size = 32
    model = applications.FactorizedVGG16(include_top=False, input_shape=(size, size, 3), style=style)
    convs = _convs(model)
    first = convs.pop("block1_conv1")
    assert type(first) is keras.layers.Conv2D
    assert first.activation.__name__ == ("relu" if style == "imagenet" else "linear")
    assert len(convs) == 12
    for name, layer in convs.items():
        assert type(layer) is FactorizedConv2D, name
        assert layer.num_units == 1 and layer.topology == {"grid": (1, 8), "window": (1, 2)}
        assert layer.activation.__name__ == ("relu" if style == "imagenet" else "linear")
        block = int(name[5])
        assert layer.spatial_bottleneck == (style == "imagenet" or block <= 3), name
    names = [l.name for l in model.layers]
    assert ("block2_bn1" in names) == (style == "cifar")


def test_vgg16_imagenet_top_is_keras():
    model = applications.FactorizedVGG16(input_shape=(32, 32, 3), classes=5)
    assert [l.name for l in model.layers[-4:]] == ["flatten", "fc1", "fc2", "predictions"]
    assert [model.get_layer(n).units for n in ("fc1", "fc2", "predictions")] == [4096, 4096, 5]


def test_cifar_resnet_blocks_are_sic_layers():
    model = applications.FactorizedResNet20(include_top=False, input_shape=(32, 32, 3))
    convs = _convs(model)
    assert type(convs.pop("conv1_conv")) is keras.layers.Conv2D
    shortcuts = {name: convs.pop(name) for name in list(convs) if name.endswith("_0_conv")}
    assert sorted(shortcuts) == ["stack2_block1_0_conv", "stack3_block1_0_conv"]
    assert {type(layer) for layer in shortcuts.values()} == {keras.layers.Conv2D}
    assert len(convs) == 18
    for name, layer in convs.items():
        assert type(layer) is FactorizedConv2D, name
        assert layer.topology is None and layer.num_units == 1 and not layer.use_bias
    assert convs["stack2_block1_1_conv"].strides == (2, 2)
    ring = applications.FactorizedResNet20(include_top=False, input_shape=(32, 32, 3), grid=(1, 8), window=(1, 2))
    assert type(ring.get_layer("stack2_block1_0_conv")) is TopologicalProjection
    assert ring.get_layer("stack2_block1_0_conv").strides == (2, 2)
    assert not ring.get_layer("stack2_block1_0_conv").use_bias


@pytest.mark.parametrize("name", ("FactorizedResNet50", "FactorizedVGG16"))
def test_layer_names_are_keras(name):
    constructor, _, keras_app, _ = NETWORKS[name]
    ours = constructor(include_top=False, input_shape=(64, 64, 3))
    theirs = keras_app(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert [l.name for l in ours.layers[1:]] == [l.name for l in theirs.layers[1:]]


def test_cifar_layer_names_are_eff_resnet20s():
    ours = applications.FactorizedResNet20(input_shape=(32, 32, 3))
    theirs = applications.EffResNet20(input_shape=(32, 32, 3), conv="standard")
    assert [l.name for l in ours.layers[1:]] == [l.name for l in theirs.layers[1:]]


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TF-CPU Conv2D has no channels_first kernels (as in Keras' tests)")
def test_channels_first_forward_matches_channels_last(rng):
    kwargs = dict(grid=(1, 8), window=(1, 2), spatial_bottleneck_stages=(1,))
    original = keras.config.image_data_format()
    try:
        last = applications.FactorizedResNet20(input_shape=(16, 16, 3), **kwargs)
        keras.config.set_image_data_format("channels_first")
        first = applications.FactorizedResNet20(input_shape=(3, 16, 16), **kwargs)
    finally:
        keras.config.set_image_data_format(original)
    first.set_weights(last.get_weights())
    x = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        reference.to_numpy(first(np.transpose(x, (0, 3, 1, 2)))), reference.to_numpy(last(x)), rtol=1e-4, atol=1e-5
    )


# --------------------------------------------------------------------------- bad knobs


@pytest.mark.parametrize(
    "constructor, kwargs, argument, match",
    [
        (applications.FactorizedResNet50, {"grid": (1, 3)}, "grid", "divisor of 64"),
        (applications.FactorizedResNet50, {"grid": (1, 128), "window": (1, 2)}, "grid", "divisor of 64"),
        (applications.FactorizedResNet20, {"grid": (1, 32), "window": (1, 2)}, "grid", "divisor of 16"),
        (applications.FactorizedVGG16, {"grid": (3, 3), "window": (1, 1)}, "grid", "divisor of 64"),
        (applications.FactorizedResNet50, {"grid": (0, 8)}, "grid", "positive"),
        (applications.FactorizedResNet50, {"window": (2, 2)}, "window", "at most the grid"),
        (applications.FactorizedResNet50, {"grid": None}, "window", "both None"),
        (applications.FactorizedResNet20, {"grid": (1, 8)}, "grid", "both None"),
        (applications.FactorizedResNet20, {"window": (1, 2)}, "window", "both None"),
        (applications.FactorizedResNet50, {"sic_units": 0}, "sic_units", "positive integer"),
        (applications.FactorizedVGG16, {"sic_units": 1.5}, "sic_units", "positive integer"),
        (applications.FactorizedResNet50, {"spatial_bottleneck_stages": ("conv6",)}, "spatial_bottleneck_stages",
         "unknown stage 'conv6'"),
        (applications.FactorizedResNet50, {"spatial_bottleneck_stages": (1,)}, "spatial_bottleneck_stages",
         "unknown stage 1"),
        (applications.FactorizedResNet50, {"spatial_bottleneck_stages": "conv4"}, "spatial_bottleneck_stages",
         "list or tuple"),
        (applications.FactorizedResNet20, {"spatial_bottleneck_stages": ("conv2",)}, "spatial_bottleneck_stages",
         "stack1"),
        (applications.FactorizedVGG16, {"spatial_bottleneck_stages": (True,)}, "spatial_bottleneck_stages",
         "unknown stage True"),
        (applications.FactorizedVGG16, {"spatial_bottleneck_stages": "all"}, "spatial_bottleneck_stages",
         "block1"),
        (applications.FactorizedResNet50, {"factorize_shortcuts": "yes"}, "factorize_shortcuts", "True, False"),
        (applications.FactorizedResNet56, {"projection_execution": "fast"}, "projection_execution", "rolled_groups"),
        (applications.FactorizedVGG16, {"style": "mnist"}, "style", "imagenet"),
    ],
)
def test_bad_knobs_raise_before_anything_is_built(constructor, kwargs, argument, match, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a layer was built before the knobs were validated")

    for layer_class in ("FactorizedConv2D", "TopologicalProjection"):
        monkeypatch.setattr(factorized, layer_class, refuse)
    monkeypatch.setattr(keras.layers, "Conv2D", refuse)
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`") as error:
        constructor(**kwargs)
    assert match in str(error.value)


@pytest.mark.parametrize(
    "constructor, kwargs, size",
    [
        (applications.FactorizedResNet50, {"input_shape": (32, 32, 3), "spatial_bottleneck_stages": ("conv5",)},
         "'conv5' is 1x1"),
        (applications.FactorizedResNet101, {"input_shape": (48, 32, 3), "spatial_bottleneck_stages": (5,)},
         "'conv5' is 2x1"),
        (applications.FactorizedVGG16, {"input_shape": (8, 8, 3), "style": "cifar", "spatial_bottleneck_stages": (4,)},
         "'block4' is 1x1"),
    ],
    ids=["resnet50-conv5-at-32", "resnet101-width-32", "vgg16-cifar-block4-at-8"],
)
def test_bottleneck_on_a_feature_map_under_2x2_is_refused(constructor, kwargs, size, monkeypatch):
    monkeypatch.setattr(factorized, "FactorizedConv2D", None)  # nothing may be built
    with pytest.raises(ValueError, match="Invalid value for argument `spatial_bottleneck_stages`") as error:
        constructor(include_top=False, **kwargs)
    assert "at least 2x2" in str(error.value) and size in str(error.value)


def test_default_bottlenecks_fit_the_smallest_inputs():
    applications.FactorizedVGG16(include_top=False, input_shape=(32, 32, 3))  # block5 at 2x2
    # keras' "valid" pools halve down: 40 -> 20 -> 10 -> 5 -> 2, block5 at 2x2.
    applications.FactorizedVGG16(include_top=False, input_shape=(40, 40, 3))
    applications.FactorizedVGG16(include_top=False, input_shape=(8, 8, 3), style="cifar")  # block3 at 2x2
    applications.FactorizedResNet50(include_top=False, input_shape=(32, 32, 3), spatial_bottleneck_stages=(4,))


def test_create_builds_by_name_with_knobs_and_standard_counterparts():
    model = applications.create("factorized_resnet20", conv_config={"sic_units": 2}, input_shape=(28, 28, 1))
    assert model.get_layer("stack1_block1_1_conv").num_units == 2
    standard = applications.create("factorized_resnet20", "standard", input_shape=(28, 28, 1))
    assert type(standard.get_layer("stack1_block1_1_conv")) is keras.layers.Conv2D
    assert applications.default_conv("factorized_vgg16") == "factorized"
    assert applications.default_conv("eff_resnet20") == "hetconv"
    with pytest.raises(ValueError, match="`conv`.*built from SIC layers"):
        applications.create("factorized_resnet20", "igc")
    with pytest.raises(ValueError, match="`name`"):
        applications.create("resnet18")

"""ShuffleNet V2: keras.applications' behaviour, the paper's costs, the unit structure.

The ImageNet network is built at 1.0x for keras' cases and the costs of all
four widths are checked at 224 px by default; keras' cases for the other
widths run with `-m slow`.
"""

import inspect

import numpy as np
import pytest

import keras

from keras_effconv import applications
from keras_effconv.applications import ShuffleNetV2
from keras_effconv.applications import shufflenet
from keras_effconv.layers import ChannelShuffle
from keras_effconv.layers import ChannelSplit
from keras_effconv.profiling import profile

# (style, width) -> channels of the last feature map
CASES = {
    ("imagenet", 1.0): 1024,
    ("cifar", 1.0): 1024,
    ("imagenet", 0.5): 1024,
    ("imagenet", 2.0): 2048,
    ("cifar", 1.5): 1024,
}
FAST = [("imagenet", 1.0), ("cifar", 1.0)]
case_params = [pytest.param(c, id=f"{c[0]}-{c[1]}") for c in FAST] + [
    pytest.param(c, id=f"{c[0]}-{c[1]}", marks=pytest.mark.slow) for c in CASES if c not in FAST
]
FORMATS = ("channels_last", "channels_first")
# The paper's Table (MACs, params) at 224 px, 1000 classes.
PUBLISHED = {0.5: (41e6, 1.4e6), 1.0: (146e6, 2.3e6), 1.5: (299e6, 3.5e6), 2.0: (591e6, 7.4e6)}


@pytest.fixture
def image_data_format(request):
    original = keras.config.image_data_format()
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format(original)


def build(case, **kwargs):
    style, width = case
    return ShuffleNetV2(width, style=style, **kwargs)


def channels_shape(data_format, channels, size=None):
    return (channels, size, size) if data_format == "channels_first" else (size, size, channels)


def test_signature_is_width_then_keras_then_style():
    parameters = inspect.signature(ShuffleNetV2).parameters
    keras_names = list(inspect.signature(keras.applications.ResNet50).parameters)
    assert list(parameters) == ["width_multiplier", *keras_names, "style"]
    assert parameters["weights"].default is None
    assert parameters["width_multiplier"].default == 1.0
    for section in ("Args:", "Returns:", "Raises:", "Example:"):
        assert section in ShuffleNetV2.__doc__
    for argument in parameters:
        assert f"{argument}:" in ShuffleNetV2.__doc__, argument


def test_registered_and_created_by_name():
    assert applications.MODELS["shufflenet_v2"] is ShuffleNetV2
    assert applications.default_conv("shufflenet_v2_cifar") == "standard"
    model = applications.create("shufflenet_v2_cifar", conv_config={"width_multiplier": 0.5}, input_shape=(28, 28, 1))
    assert model.name == "shufflenet_v2_x0_5_cifar"
    assert model.output.shape[-1] == 10
    same = applications.create("shufflenet_v2_cifar", "standard", input_shape=(28, 28, 1))
    assert same.get_layer("stage2_unit1_branch2_pw1").filters == 58
    with pytest.raises(ValueError, match=r"conv.*fixed design.*'hetconv'"):
        applications.create("shufflenet_v2", "hetconv")


@pytest.mark.parametrize("width", sorted(PUBLISHED))
def test_costs_within_3_percent_of_the_paper(width):
    model = ShuffleNetV2(width)
    cost = profile(model)
    macs, params = PUBLISHED[width]
    assert abs(cost.total_macs / macs - 1) <= 0.03, cost.total_macs
    assert abs(cost.total_params / params - 1) <= 0.03, cost.total_params


def test_stage_layout_is_the_papers():
    model = ShuffleNetV2(1.0)
    units = {}
    for layer in model.layers:
        if isinstance(layer, ChannelShuffle):
            stage = layer.name.split("_")[0]
            units[stage] = units.get(stage, 0) + 1
    assert units == {"stage2": 4, "stage3": 8, "stage4": 4}
    assert [model.get_layer(f"stage{s}_unit1_concat").output.shape[-1] for s in (2, 3, 4)] == [116, 232, 464]
    assert model.get_layer("stage3_unit1_concat").output.shape[1:3] == (14, 14)
    # A stride-1 unit splits, a stride-2 unit has the depthwise left branch.
    assert isinstance(model.get_layer("stage3_unit2_split"), ChannelSplit)
    assert model.get_layer("stage3_unit1_branch1_dw").strides == (2, 2)
    # No nonlinearity between a depthwise conv (+ BN) and the 1x1 conv after it.
    dw_bn = model.get_layer("stage3_unit2_branch2_dw_bn")
    consumers = [l for l in model.layers if any(n.input_tensors[0] is dw_bn.output for n in _calls(l))]
    assert [type(l) for l in consumers] == [keras.layers.Conv2D]


def _calls(layer):
    from keras_effconv import _model_graph

    return [n for n in _model_graph.inbound_nodes(layer) if n.input_tensors]


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("case", case_params)
@pytest.mark.parametrize("image_data_format", FORMATS, indirect=True)
def test_notop_variable_input_channels(case, image_data_format):
    last = CASES[case]
    expected = [None, last, None, None] if image_data_format == "channels_first" else [None, None, None, last]
    for channels in (1, 4):
        model = build(case, weights=None, include_top=False, input_shape=channels_shape(image_data_format, channels))
        assert list(model.outputs[0].shape) == expected


@pytest.mark.parametrize("case", case_params)
def test_notop_custom_input_shape(case):
    model = build(case, weights=None, include_top=False, input_shape=(123, 123, 3))
    assert model.outputs[0].shape[-1] == CASES[case]


@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("case", case_params)
def test_notop_custom_input_tensor(case):
    inputs = keras.Input(shape=(200, 200, 4), name="custom_input")
    inputs = keras.layers.Conv2D(3, (2, 2), padding="valid", strides=(2, 2))(inputs)
    model = build(case, weights=None, include_top=False, input_tensor=inputs)
    assert model.outputs[0].shape[-1] == CASES[case]
    assert model.inputs[0].name == "custom_input"


@pytest.mark.parametrize("pooling", ("max", "avg"))
@pytest.mark.parametrize("case", case_params)
def test_pooling(case, pooling):
    model = build(case, weights=None, include_top=False, pooling=pooling)
    assert list(model.outputs[0].shape) == [None, CASES[case]]


@pytest.mark.parametrize("case", case_params)
def test_classifier_activation(case):
    model = build(case, classes=7, classifier_activation="softmax")
    assert model.layers[-1].name == "predictions"
    assert model.layers[-1].activation.__name__ == "softmax"
    assert list(model.outputs[0].shape) == [None, 7]
    logits = build(case, classes=7, classifier_activation=None)
    assert logits.layers[-1].activation.__name__ == "linear"


def test_pyramid_outputs():
    model = ShuffleNetV2(0.5, input_shape=(64, 64, 3), include_top=False)
    shapes = {level: tuple(t.shape[1:]) for level, t in model.pyramid_outputs.items()}
    assert shapes == {"P1": (32, 32, 24), "P2": (16, 16, 24), "P3": (8, 8, 48), "P4": (4, 4, 96), "P5": (2, 2, 1024)}
    small = ShuffleNetV2(0.5, input_shape=(28, 28, 1), include_top=False, style="cifar")
    shapes = {level: tuple(t.shape[1:]) for level, t in small.pyramid_outputs.items()}
    assert shapes == {"P0": (28, 28, 24), "P1": (14, 14, 48), "P2": (7, 7, 96), "P3": (4, 4, 1024)}
    features = keras.Model(small.inputs, small.pyramid_outputs)
    out = features([np.zeros((1, 28, 28, 1), "float32")])
    assert sorted(out) == ["P0", "P1", "P2", "P3"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width_multiplier": 0.75}, r"width_multiplier.*\[0\.5, 1\.0, 1\.5, 2\.0\].*0\.75"),
        ({"width_multiplier": True}, r"width_multiplier"),
        ({"style": "mobile"}, r"style.*'imagenet', 'cifar'"),
        ({"weights": "imagenet"}, r"No pretrained ImageNet weights exist for ShuffleNetV2"),
        ({"weights": "/no/such/file.weights.h5"}, r"`weights` argument should be either `None`"),
        ({"input_shape": (16, 16, 3), "include_top": False}, r"Input size must be at least 32x32"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShuffleNetV2(**kwargs)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    model = ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar")
    x = rng.standard_normal((2, 28, 28, 1)).astype("float32")
    path = tmp_path / "s.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    assert sorted(loaded.pyramid_outputs) == sorted(model.pyramid_outputs)


def test_channels_first_matches_channels_last(rng):
    model = ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar")
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif "moving_mean" in v.path or "beta" in v.path:
            v.assign(0.1 * rng.standard_normal(v.shape).astype("float32"))
    original = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        first = ShuffleNetV2(0.5, input_shape=(1, 28, 28), classes=10, style="cifar")
    finally:
        keras.config.set_image_data_format(original)
    first.set_weights(model.get_weights())
    x = rng.standard_normal((2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2)))),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )


def test_unit_matches_numpy(rng):
    """A stride-1 unit against NumPy: split, branch (1x1, depthwise 3x3, 1x1), concat, shuffle."""
    inputs = keras.Input((5, 5, 8))
    outputs = shufflenet._unit(shufflenet._Layers("imagenet"), inputs, 8, 1, "u")
    model = keras.Model(inputs, outputs)
    x = rng.standard_normal((1, 5, 5, 8)).astype("float32")
    w = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}

    def bn(y, name):
        return (y - w[f"{name}/moving_mean"]) / np.sqrt(w[f"{name}/moving_variance"] + 1e-3) * w[
            f"{name}/gamma"
        ] + w[f"{name}/beta"]

    left, right = x[..., :4], x[..., 4:]
    y = np.maximum(bn(right @ w["u_branch2_pw1/kernel"][0, 0], "u_branch2_pw1_bn"), 0)
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = w["u_branch2_dw/kernel"][..., 0]
    z = sum(padded[:, i : i + 5, j : j + 5, :] * dw[i, j] for i in range(3) for j in range(3))
    z = bn(z, "u_branch2_dw_bn")
    z = np.maximum(bn(z @ w["u_branch2_pw2/kernel"][0, 0], "u_branch2_pw2_bn"), 0)
    concat = np.concatenate([left, z], axis=-1)
    expected = concat[..., [c for j in range(4) for c in (j, 4 + j)]]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=1e-5)

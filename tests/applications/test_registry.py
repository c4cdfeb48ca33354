"""`list_models` / `create_model`: the timm-style registry over `applications.MODELS`."""

import numpy as np
import pytest

import keras

from keras_effconv import applications
from keras_effconv.applications import EffConvModel
from keras_effconv.applications import create_model
from keras_effconv.applications import list_models
from keras_effconv.layers import HetConv2D

# The smallest input each network accepts: 32x32 for the ImageNet designs, 8x8 for the CIFAR ones.
CIFAR = {
    "eff_resnet20",
    "eff_resnet56",
    "eff_vgg16_cifar",
    "factorized_resnet20",
    "factorized_resnet56",
    "factorized_vgg16_cifar",
    "igc_resnet_cifar",
    "shufflenet_v2_cifar",
}
SMALLEST_INPUT = {name: (8, 8, 3) if name in CIFAR else (32, 32, 3) for name in applications.MODELS}
# Deep networks whose graph alone takes seconds to build on the test machine.
DEEP = {"eff_resnet101", "eff_resnet152", "factorized_resnet101"}


def test_list_models_is_sorted_and_complete():
    assert list_models() == sorted(applications.MODELS)


def test_list_models_pattern():
    names = list_models("*resnet*")
    assert names == sorted(n for n in applications.MODELS if "resnet" in n)
    assert list_models("EFF_VGG16*") == ["eff_vgg16", "eff_vgg16_cifar"]
    assert list_models(["eff_resnet20", "igc_*"]) == ["eff_resnet20", "igc_resnet18", "igc_resnet_cifar"]
    assert list_models("no_such_net*") == []


@pytest.mark.parametrize("pattern", [3, ["*resnet*", None], {"a": 1}])
def test_list_models_bad_pattern(pattern):
    with pytest.raises(ValueError, match="argument `pattern`"):
        list_models(pattern)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in list_models()]
)
def test_every_listed_name_creates_a_model(name):
    model = create_model(name, input_shape=SMALLEST_INPUT[name], num_classes=3)
    assert isinstance(model, EffConvModel)
    assert model.output_shape == (None, 3)


def test_conv_and_conv_config_pass_through():
    model = create_model("eff_resnet20", conv="hetconv", conv_config={"part": 4}, input_shape=(8, 8, 3))
    hetconvs = [layer for layer in model.layers if isinstance(layer, HetConv2D)]
    assert hetconvs and all(layer.part == 4 for layer in hetconvs)
    with pytest.raises(ValueError, match="argument `conv`"):
        create_model("factorized_resnet20", conv="hetconv", input_shape=(8, 8, 3))


def test_fixed_design_knobs_as_keywords():
    model = create_model("shufflenet_v2_cifar", width_multiplier=0.5, input_shape=(8, 8, 3))
    assert model.get_layer("stage2_unit1_concat").output.shape[-1] == 48  # 116 at width 1.0


def test_num_classes_is_classes():
    model = create_model("eff_resnet20", conv="standard", num_classes=7, input_shape=(8, 8, 3))
    assert model.output_shape == (None, 7)
    model = create_model("eff_resnet20", conv="standard", classes=7, num_classes=7, input_shape=(8, 8, 3))
    assert model.output_shape == (None, 7)
    with pytest.raises(ValueError, match="argument `num_classes`.*classes=5"):
        create_model("eff_resnet20", num_classes=7, classes=5)
    with pytest.raises(ValueError, match="argument `num_classes`"):
        create_model("eff_resnet20", num_classes=-1)


def test_num_classes_zero_returns_pooled_features():
    model = create_model("eff_resnet20", conv="standard", num_classes=0, input_shape=(8, 8, 3))
    assert model.output_shape == (None, 64)
    with pytest.raises(ValueError, match="argument `num_classes`.*include_top=True"):
        create_model("eff_resnet20", num_classes=0, include_top=True)


def test_features_only():
    features = create_model("eff_resnet20", conv="standard", features_only=True, input_shape=(16, 16, 3))
    assert list(features.output) == ["P0", "P1", "P2"]
    out = features.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0)
    assert {level: value.shape for level, value in out.items()} == {
        "P0": (1, 16, 16, 16),
        "P1": (1, 8, 8, 32),
        "P2": (1, 4, 4, 64),
    }
    features = create_model("eff_vgg16_cifar", features_only=True, feature_levels=("P3", "P5"), input_shape=(8, 8, 3))
    assert list(features.output) == ["P3", "P5"]


def test_features_only_keeps_a_classifier_s_weights(tmp_path):
    model = create_model("eff_resnet20", conv="standard", input_shape=(8, 8, 3))
    path = str(tmp_path / "classifier.weights.h5")
    model.save_weights(path)
    features = create_model(
        "eff_resnet20", conv="standard", input_shape=(8, 8, 3), include_top=True, weights=path, features_only=True
    )
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype("float32")
    expected = keras.Model(model.input, model.pyramid_outputs["P2"])(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(features(x)["P2"]), keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("levels", [("P9",), (), "P2", 2])
def test_bad_feature_levels(levels):
    with pytest.raises(ValueError, match=r"argument `feature_levels`.*\['P0', 'P1', 'P2'\]"):
        create_model("eff_resnet20", conv="standard", features_only=True, feature_levels=levels, input_shape=(8, 8, 3))


def test_feature_levels_need_features_only():
    with pytest.raises(ValueError, match="argument `feature_levels`.*features_only=True"):
        create_model("eff_resnet20", feature_levels=("P1",))
    with pytest.raises(ValueError, match="argument `features_only`"):
        create_model("eff_resnet20", features_only="yes")


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(ValueError, match=r"argument `name`.*'eff_resnet50'.*closest: .*'eff_resnet50'"):
        create_model("eff_resnet5O")
    with pytest.raises(ValueError, match=r"argument `name`.*list_models\(\)"):
        create_model(50)


@pytest.mark.parametrize("pretrained", [True, "imagenet"])
def test_pretrained_is_refused(pretrained):
    with pytest.raises(ValueError, match="argument `pretrained`.*never downloads"):
        create_model("eff_resnet20", pretrained)


def test_imagenet_weights_refused_by_the_network():
    with pytest.raises(ValueError, match="No pretrained ImageNet weights"):
        create_model("eff_resnet20", weights="imagenet")


def test_unknown_argument_names_it_and_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"argument `in_chans`.*'input_shape'.*keras' `input_shape`"):
        create_model("eff_resnet50", in_chans=1)
    with pytest.raises(ValueError, match=r"argument `width_multiplier`.*'classes'"):
        create_model("eff_resnet20", width_multiplier=0.5)

"""Fine-tuning (a user's .keras model, keras.applications with local weights), precise BN in the recipe, checkpoints."""

import json
import os

import numpy as np
import pytest

import keras

from keras_effconv import applications
from keras_effconv._model_graph import all_layers
from keras_effconv.datasets import load_dataset
from keras_effconv.training import TrainConfig
from keras_effconv.training import train
from keras_effconv.training.finetune import KERAS_APPLICATIONS
from keras_effconv.training.finetune import freeze_layers
from keras_effconv.training.finetune import keras_application
from keras_effconv.training.finetune import replace_classifier
from keras_effconv.training.recipe import _near_chance_warnings
from keras_effconv.training.recipe import build_model
from keras_effconv.training.recipe import config_differences
from keras_effconv.training.recipe import prune_checkpoints

from recipe_helpers import TINY
from recipe_helpers import TINY_MODEL
from recipe_helpers import assert_consistent
from recipe_helpers import checkpoint_epochs
from recipe_helpers import tiny_net

channels_last_only = pytest.mark.skipif(
    keras.config.image_data_format() != "channels_last", reason="keras.applications' weights are channels_last"
)


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setitem(applications.MODELS, TINY_MODEL, tiny_net)


def _write_history(path, accuracies):
    with open(path, "w", encoding="utf-8") as f:
        f.write("epoch,accuracy,val_accuracy,seconds\n")
        for epoch, accuracy in enumerate(accuracies):
            f.write(f"{epoch},0.5,{accuracy},1.0\n")


def test_prune_checkpoints_keeps_the_newest_and_the_best(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for epoch in range(1, 7):
        (checkpoints / f"epoch_{epoch:03d}.keras").write_bytes(b"x")
    (checkpoints / "notes.txt").write_text("mine")
    _write_history(tmp_path / "history.csv", [0.1, 0.9, 0.3, 0.4, 0.5, 0.2])
    deleted = prune_checkpoints(str(checkpoints), str(tmp_path / "history.csv"), keep=2)
    assert sorted(os.listdir(checkpoints)) == ["epoch_002.keras", "epoch_005.keras", "epoch_006.keras", "notes.txt"]
    assert len(deleted) == 3


def test_a_long_run_keeps_two_checkpoints_plus_the_best(tmp_path):
    out = str(tmp_path / "run")
    config = TrainConfig(epochs=4, keep_checkpoints=1, **TINY)
    train(config, out, verbose=0)
    assert 1 <= len(checkpoint_epochs(out)) <= 2 and checkpoint_epochs(out)[-1] == 4
    assert_consistent(out, config)


def test_the_saved_model_carries_precise_statistics(tmp_path):
    # subset == precise_bn_images: the statistics cover every training image, so NumPy can recompute them.
    config = TrainConfig(epochs=1, **dict(TINY, subset=48), precise_bn_images=48)
    out = str(tmp_path / "run")
    metrics = train(config, out, verbose=0)
    model = keras.saving.load_model(os.path.join(out, "model.keras"), compile=False)
    images = np.stack([x for x, _ in load_dataset("fashion_mnist", subset=48, seed=0).train.as_numpy_iterator()])
    stem = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("conv1_conv").output)(images))
    axis = 1 if keras.config.image_data_format() == "channels_first" else -1
    stem = np.moveaxis(stem, axis, -1).reshape(-1, stem.shape[axis]).astype("float64")
    bn = model.get_layer("conv1_bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), stem.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), stem.var(0), rtol=1e-3, atol=1e-6)
    assert metrics["precise_bn_images"] == 48 and metrics["warnings"] == []


def test_near_chance_test_accuracy_is_a_warning():
    rows = [{"accuracy": "0.62"}]
    (warning,) = _near_chance_warnings(0.11, rows, 10)
    assert "near chance" in warning and "0.620" in warning
    assert _near_chance_warnings(0.55, rows, 10) == []
    assert _near_chance_warnings(0.11, [{"accuracy": "0.12"}], 10) == []  # nothing learnt at all: no contrast


def test_an_earlier_config_without_the_new_fields_resumes(tmp_path):
    config = TrainConfig(**TINY)
    saved = {k: v for k, v in json.loads(json.dumps(vars(config))).items()
             if k not in ("precise_bn_images", "keep_checkpoints", "init", "weights", "image_size", "freeze")}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert config_differences(config, str(tmp_path)) == []
    assert config_differences(TrainConfig(**dict(TINY, freeze="backbone")), str(tmp_path)) == ["freeze"]


@pytest.mark.parametrize(
    "field, value",
    [("init", "model.h5"), ("freeze", "everything"), ("image_size", 0), ("image_size", [32]),
     ("precise_bn_images", -1), ("keep_checkpoints", 0), ("model", "keras:NoSuchNet")],
)
def test_bad_fine_tuning_config_raises_before_touching_out(tmp_path, field, value):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=field.split("_")[0] if field != "model" else "keras:"):
        train(TrainConfig(**dict(TINY, **{field: value})), str(out), verbose=0)
    assert not out.exists()


def test_init_starts_from_the_users_model(tmp_path):
    first = str(tmp_path / "first")
    train(TrainConfig(epochs=1, **TINY), first, verbose=0)
    saved = keras.saving.load_model(os.path.join(first, "model.keras"), compile=False)

    class FirstWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [np.array(w) for w in self.model.get_weights()]

    record = FirstWeights()
    config = TrainConfig(epochs=1, init=os.path.join(first, "model.keras"), **dict(TINY, conv="standard"))
    metrics = train(config, str(tmp_path / "second"), callbacks=[record], verbose=0)
    # Weights equal the user's, but the BatchNormalization statistics (recomputed before each evaluation).
    bn_statistics = {id(v) for layer in all_layers(saved) if isinstance(layer, keras.layers.BatchNormalization)
                     for v in layer.non_trainable_weights}
    for variable, start in zip(saved.weights, record.weights):
        if id(variable) not in bn_statistics:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), start)
    assert metrics["init"] == config.init and metrics["macs"] == metrics["standard_macs"]


def test_init_with_another_input_size_names_image_size(tmp_path):
    first = str(tmp_path / "first")
    train(TrainConfig(epochs=1, **TINY), first, verbose=0)
    config = TrainConfig(epochs=1, init=os.path.join(first, "model.keras"), image_size=20, **dict(TINY, conv="standard"))
    with pytest.raises(ValueError, match="image_size"):
        train(config, str(tmp_path / "second"), verbose=0)
    assert not (tmp_path / "second").exists()


def test_replace_classifier_and_freeze():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="predictions")(x))
    assert replace_classifier(model, 5) is model
    new = replace_classifier(model, 3)
    assert new.output.shape[-1] == 3 and new.get_layer("conv") is model.get_layer("conv")
    assert freeze_layers(new, "untouched", ["conv"]) == ["bn"]
    assert new.get_layer("conv").trainable and new.get_layer("predictions").trainable
    with pytest.raises(ValueError, match="freeze"):
        freeze_layers(new, "all", [])
    with pytest.raises(ValueError, match="not a Dense"):
        replace_classifier(keras.Model(inputs, x), 3)


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    """`(source model, path of its saved weights)`: a random keras ResNet50 at 32 px, saved once per module."""
    keras.utils.set_random_seed(0)
    source = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    source.save_weights(path)
    return source, path


@channels_last_only
def test_converted_keras_resnet50_starts_from_the_local_weights(resnet50_weights):
    source, path = resnet50_weights
    config = TrainConfig(model="keras:ResNet50", weights=path, conv="hetconv", dataset="fashion_mnist",
                         freeze="untouched")
    model = build_model(config, (32, 32, 1), 10)
    replaced = {layer.name for layer in model.layers if type(layer).__name__ == "HetConv2D"}
    assert len(replaced) == 16
    checked = 0
    for layer in source.layers:
        if not layer.weights or layer.name in replaced or layer.name == "predictions":
            continue
        expected = layer.get_weights()
        if layer.name == "conv1_conv":  # takes RGB: keras' BGR kernel with its input channels reversed
            expected[0] = expected[0][:, :, ::-1, :]
        for a, b in zip(expected, model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
        assert not model.get_layer(layer.name).trainable
        checked += 1
    assert checked == 53 + 53 - 16  # every conv and BN of ResNet50 but the replaced 3x3 convolutions
    assert model.output.shape[-1] == 10 and model.get_layer("predictions").trainable


@channels_last_only
def test_keras_application_preprocessing_equals_preprocess_input(resnet50_weights):
    source, path = resnet50_weights
    model = keras_application("ResNet50", path, (32, 32, 3), 1000)
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    expected = source.predict(keras.applications.resnet50.preprocess_input(images * 255.0), verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-6)


def test_keras_applications_table_names_real_constructors():
    for name in KERAS_APPLICATIONS:
        assert callable(getattr(keras.applications, name))


@pytest.mark.slow
def test_a_short_hetconv_run_reports_honest_accuracy(tmp_path):
    # Issue 16's run: 1 epoch on 5,000 images reported 0.20 with Keras' moving averages.
    config = TrainConfig(model="eff_resnet20", conv="hetconv", epochs=1, subset=5000)
    metrics = train(config, str(tmp_path / "run"), verbose=0)
    assert metrics["test_accuracy"] >= 0.6 and metrics["warnings"] == []

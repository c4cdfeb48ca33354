"""The training recipe: files written, resume after an interruption, safety of --out."""

import json
import os

import numpy as np
import pytest

import keras

from keras_effconv import applications
from keras_effconv.training import TrainConfig
from keras_effconv.training import train

from recipe_helpers import TINY
from recipe_helpers import Interrupt
from recipe_helpers import TINY_MODEL
from recipe_helpers import assert_consistent
from recipe_helpers import checkpoint_epochs
from recipe_helpers import tiny_net

# The one test on a real network (with augmentation); the others use the tiny one.
RESNET = dict(model="eff_resnet20", conv="hetconv", subset=128, batch_size=64, max_test_images=64, augment=True)


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    monkeypatch.setitem(applications.MODELS, TINY_MODEL, tiny_net)


def stamps(directory):
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)}


def state(model):
    return [np.array(w) for w in model.get_weights()], [np.array(v) for v in model.optimizer.variables]


class RecordEpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_end(self, epoch, logs=None):
        self.states[epoch] = state(self.model)


class RecordFirstEpochBegin(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.first = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first is None:
            self.first = (epoch, state(self.model))


def test_interrupted_run_resumes_from_last_completed_epoch(tmp_path):
    out = str(tmp_path / "run")
    config = TrainConfig(epochs=3, **TINY)
    before = RecordEpochEnds()
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train(config, out, callbacks=[before, Interrupt(at_epoch=2)], verbose=0)
    assert checkpoint_epochs(out) == [1, 2] and not os.path.exists(os.path.join(out, "metrics.json"))

    after = RecordFirstEpochBegin()
    metrics = train(config, out, callbacks=[after], verbose=0)
    epoch, (weights, optimizer_state) = after.first
    assert epoch == 2
    saved_weights, saved_optimizer = before.states[1]
    for a, b in zip(weights, saved_weights):
        np.testing.assert_array_equal(a, b)
    assert len(optimizer_state) == len(saved_optimizer)
    for a, b in zip(optimizer_state, saved_optimizer):
        np.testing.assert_array_equal(a, b)  # includes the iteration counter

    with open(os.path.join(out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().split()[1:]] == ["0", "1", "2"]
    assert metrics["epochs"] == 3
    assert_consistent(out, config)


def test_unfinished_run_of_another_config_is_not_resumed(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train(TrainConfig(epochs=3, **TINY), out, callbacks=[Interrupt(at_epoch=2)], verbose=0)
    checkpoints = stamps(os.path.join(out, "checkpoints"))
    with pytest.raises(ValueError, match="another configuration.*epochs"):
        train(TrainConfig(epochs=2, **TINY), out, verbose=0)
    assert stamps(os.path.join(out, "checkpoints")) == checkpoints  # untouched

    # --overwrite starts afresh: the old checkpoints are not restored, the log restarts.
    first = RecordFirstEpochBegin()
    metrics = train(TrainConfig(epochs=1, **TINY), out, callbacks=[first], overwrite=True, verbose=0)
    assert first.first[0] == 0 and metrics["epochs"] == 1
    with open(os.path.join(out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().split()[1:]] == ["0"]
    assert os.listdir(os.path.join(out, "checkpoints")) == ["epoch_001.keras"]  # epoch 2's is gone


def test_run_writes_metrics_model_curves_and_logs(tmp_path):
    out = str(tmp_path / "run")
    metrics = train(TrainConfig(epochs=1, **RESNET), out, verbose=0)
    for name in ("metrics.json", "model.keras", "curves.png", "history.csv", "config.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert os.listdir(os.path.join(out, "checkpoints")) == ["epoch_001.keras"]
    assert os.listdir(os.path.join(out, "tensorboard"))
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == metrics
    for key in ("test_accuracy", "test_loss", "macs", "params", "epochs", "train_seconds", "backend"):
        assert key in saved
    assert saved["backend"] == keras.backend.backend() and 0 <= saved["test_accuracy"] <= 1
    assert saved["macs"] < saved["standard_macs"]
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert model.count_params() == saved["params"]

    stamp = os.path.getmtime(os.path.join(out, "metrics.json"))
    with pytest.raises(ValueError, match="finished run"):
        train(TrainConfig(epochs=1, **RESNET), out, verbose=0)
    assert os.path.getmtime(os.path.join(out, "metrics.json")) == stamp


@pytest.mark.parametrize(
    "field, value",
    [("model", "resnet9"), ("conv", "winograd"), ("dataset", "mnist"), ("epochs", 0), ("batch_size", -1), ("subset", 0)],
)
def test_bad_config_raises_before_touching_out(tmp_path, field, value):
    out = tmp_path / "run"
    config = TrainConfig(**dict(TINY, **{field: value}))
    with pytest.raises(ValueError, match=field.split("_")[0]):
        train(config, str(out), verbose=0)
    assert not out.exists()


def test_mixed_precision_trains_in_bfloat16_with_float32_predictions(tmp_path):
    out = str(tmp_path / "run")
    policy = keras.config.dtype_policy().name
    metrics = train(TrainConfig(epochs=1, mixed_precision=True, **TINY), out, verbose=0)
    assert keras.config.dtype_policy().name == policy  # the global policy is restored
    assert metrics["mixed_precision"] and np.isfinite(metrics["test_loss"])

    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    conv = next(layer for layer in model.layers if layer.name == "conv1_conv")
    assert conv.dtype_policy.name == "mixed_bfloat16"
    assert all(v.dtype == "float32" for v in conv.weights)  # float32 master weights
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    assert model.count_params() == metrics["params"]

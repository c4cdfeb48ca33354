"""What the training tests share: a tiny network for the recipe and a check that a run directory agrees with itself.

The recipe's logic (resume, checkpoints, history, metrics) does not depend on
the network, and tracing EffResNet-20's train step costs most of a test's
time, so most training tests register `tiny_net` (one stem convolution and one
replaceable 3x3 convolution) under `TINY_MODEL` in `applications.MODELS`.
"""

import csv
import json
import os
import re

import numpy as np

import keras

TINY_MODEL = "tiny_test_net"
TINY = dict(model=TINY_MODEL, conv="hetconv", subset=32, batch_size=16, max_test_images=16, augment=False)


class Interrupt(keras.callbacks.Callback):
    """Raises at the start of epoch `at_epoch`, as a crash would."""

    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated interruption")


def tiny_net(input_shape, classes, conv, conv_config, weights=None):
    """Stem conv (16 filters, stride 2) -> one replaceable 3x3 conv -> classifier."""
    from keras_effconv.applications import _common
    from keras_effconv.applications.conv_types import ConvReplacer

    replace = ConvReplacer(conv, conv_config)
    inputs = keras.Input(input_shape)
    axis = _common.channel_axis()
    x = keras.layers.Conv2D(16, 3, strides=4, padding="same", use_bias=False, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(axis=axis, name="conv1_bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = replace(keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2_conv"), x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    replace.require_replacements(f"model '{TINY_MODEL}'")
    return keras.Model(inputs, outputs, name=TINY_MODEL)


def register_tiny_net():
    """Adds `tiny_net` to `applications.MODELS` (for subprocesses; tests use the fixture)."""
    from keras_effconv import applications

    applications.MODELS[TINY_MODEL] = tiny_net


def history_rows(out):
    with open(os.path.join(out, "history.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def checkpoint_epochs(out):
    names = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert all(re.fullmatch(r"epoch_\d{3}\.keras", n) for n in names), names  # no temporary or foreign files
    return [int(n[6:9]) for n in names]


def assert_consistent(out, config):
    """`out` holds one finished run of `config`: config, checkpoints, history, metrics and model agree."""
    import dataclasses

    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(dataclasses.asdict(config)))
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    epochs = list(range(1, config.epochs + 1))
    rows = history_rows(out)
    assert [int(r["epoch"]) for r in rows] == [e - 1 for e in epochs]  # no epoch skipped or repeated
    # The newest keep_checkpoints epochs and the best one are kept.
    best = max(epochs, key=lambda e: (float(rows[e - 1]["val_accuracy"]), e))
    kept = sorted(set(epochs[-config.keep_checkpoints:]) | {best})
    assert checkpoint_epochs(out) == kept
    epochs = kept
    assert metrics["epochs"] == config.epochs
    assert metrics["train_seconds"] == round(sum(float(r["seconds"]) for r in rows), 1)
    assert not [n for n in os.listdir(out) if n.startswith(".") or n == "backup"]  # no temporary files left
    # The saved model is the last checkpoint's network; every checkpoint loads.
    final = keras.saving.load_model(os.path.join(out, "model.keras"), compile=False)
    assert final.count_params() == metrics["params"]
    for epoch in epochs:
        checkpoint = keras.saving.load_model(os.path.join(out, "checkpoints", f"epoch_{epoch:03d}.keras"))
        assert int(checkpoint.optimizer.iterations) == epoch * -(-metrics["train_images"] // config.batch_size)
    for a, b in zip(final.get_weights(), checkpoint.get_weights()):
        np.testing.assert_array_equal(a, b)
    return metrics

"""Quickstart: a HetConv CNN next to the same CNN with standard convolutions.

Trains both on real Fashion-MNIST (offline, from the Debian package
`dataset-fashion-mnist`) with `model.fit`, then prints test accuracy, MACs
and parameters side by side.

    KERAS_BACKEND=tensorflow python examples/quickstart.py --train-size 12000 --epochs 2
"""

import argparse
import time

import numpy as np

import keras

from keras_effconv import layers
from keras_effconv.datasets import fashion_mnist


def small_cnn(conv):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)  # stem stays standard
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    for filters, strides in [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]:
        x = conv(filters, strides)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def total_macs(model):
    # Sum of per-layer MACs for the layers that define compute_macs, plus standard convs.
    macs = 0
    for layer in model.layers:
        if hasattr(layer, "compute_macs"):
            macs += layer.compute_macs(layer.input.shape)
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            macs += out[1] * out[2] * np.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            macs += np.prod(layer.kernel.shape)
    return int(macs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    x_train = x_train[: args.train_size, :, :, None].astype("float32") / 255.0
    y_train = y_train[: args.train_size]
    x_test = x_test[:, :, :, None].astype("float32") / 255.0
    variants = {
        "Conv2D": lambda f, s: keras.layers.Conv2D(f, 3, strides=s, padding="same", use_bias=False),
        "HetConv2D(part=4)": lambda f, s: layers.HetConv2D(f, 3, strides=s, part=4, use_bias=False),
    }
    rows = []
    for name, conv in variants.items():
        model = small_cnn(conv)
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)
        seconds = time.perf_counter() - start
        _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
        rows.append((name, accuracy, total_macs(model), model.count_params(), seconds))
    print(f"\nFashion-MNIST ({args.train_size} train images, {args.epochs} epochs, full 10k test), backend {keras.backend.backend()}")
    print("| network | test accuracy | MACs | params | train s |")
    print("|---|---:|---:|---:|---:|")
    for name, accuracy, macs, params, seconds in rows:
        print(f"| {name} | {accuracy:.4f} | {macs / 1e6:.2f} M | {params:,} | {seconds:.0f} |")


if __name__ == "__main__":
    main()

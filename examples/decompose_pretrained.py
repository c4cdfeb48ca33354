"""Shrink a trained .keras model with depthwise decomposition, fine-tune it, save it.

    # your own trained classifier (10 classes, fine-tuned on Fashion-MNIST here):
    KERAS_BACKEND=tensorflow python examples/decompose_pretrained.py my_model.keras --rank 1
    # no model at hand: trains a tiny CNN on a Fashion-MNIST subset first (~1 min)
    KERAS_BACKEND=tensorflow python examples/decompose_pretrained.py --method data

Steps: load the model, decompose every k x k Conv2D (`--method svd` or
`data`, the data-driven GSVD, or the `channel` baseline at the same MACs as
rank `--rank`), print the per-layer report, fine-tune briefly on real
Fashion-MNIST (offline, Debian package `dataset-fashion-mnist`), save the
result as `.keras` and print MACs and parameters before and after. Images are
resized / repeated to the model's input shape if it is not 28x28x1. With
your own data, call `depthwise_decompose(model, method="data", data=x)` with
a few hundred to a few thousand of your training images instead.
"""

import argparse
import os
import tempfile
import time

import numpy as np

import keras

from keras_effconv.datasets import fashion_mnist
from keras_effconv.decompose import channel_decompose
from keras_effconv.decompose import depthwise_decompose


def tiny_cnn():
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for width in (16, 32):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="tiny_cnn")


def adapt(x, input_shape):
    """Fashion-MNIST (N, 28, 28, 1) -> the model's per-sample input shape."""
    if tuple(input_shape) == (28, 28, 1):
        return x
    channels_first = input_shape[0] in (1, 3) and input_shape[-1] not in (1, 3)
    h, w, c = (input_shape[1], input_shape[2], input_shape[0]) if channels_first else input_shape
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (h, w)))
    x = np.repeat(x, c, axis=-1)
    return np.transpose(x, (0, 3, 1, 2)) if channels_first else x


def cost(model, report_macs):
    """(MACs, params) from the profiler when installed, else the report's own count."""
    try:
        from keras_effconv.profiling import profile
    except ImportError:
        return report_macs, model.count_params()
    return profile(model).total_macs, model.count_params()


def compile_for_finetuning(model, lr):
    # Softmax outputs (keras.applications style) or logits: pick the matching loss.
    last = model.layers[-1]
    from_logits = getattr(last, "activation", None) is not keras.activations.softmax
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="path of a .keras model; omitted: train a tiny CNN first")
    parser.add_argument("--method", choices=("svd", "data", "channel"), default="data")
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--energy", type=float, default=None, help="keep this share of sum(sigma^2) per layer instead of --rank")
    parser.add_argument("--train-size", type=int, default=12000, help="Fashion-MNIST images for fine-tuning")
    parser.add_argument("--fit-images", type=int, default=1000, help="images for the data-driven fit")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--output", default="decomposed.keras")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    x_train = x_train[: args.train_size, :, :, None].astype("float32") / 255.0
    y_train = y_train[: args.train_size]
    x_test = x_test[:, :, :, None].astype("float32") / 255.0

    path = args.model
    if path is None:
        print("No model given: training a tiny CNN on Fashion-MNIST first.")
        model = tiny_cnn()
        compile_for_finetuning(model, 2e-3)
        model.fit(x_train, y_train, epochs=2, batch_size=128, verbose=2)
        path = os.path.join(tempfile.mkdtemp(), "tiny_cnn.keras")
        model.save(path)
    model = keras.models.load_model(path)
    input_shape = tuple(model.input_shape[1:])
    x_train, x_test = adapt(x_train, input_shape), adapt(x_test, input_shape)
    x_fit = x_train[: args.fit_images]

    start = time.perf_counter()
    data = x_fit if args.method != "svd" else None
    if args.method == "channel":
        _, reference = depthwise_decompose(model, rank=args.rank, energy=args.energy)
        new_model, report = channel_decompose(model, macs=reference.model_macs_after, data=data)
    else:
        new_model, report = depthwise_decompose(
            model, rank=args.rank, energy=args.energy, method=args.method, data=data
        )
    print(f"\nDecomposed in {time.perf_counter() - start:.1f} s\n")
    print(report.to_markdown())

    compile_for_finetuning(model, args.lr)
    _, acc_original = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    compile_for_finetuning(new_model, args.lr)
    _, acc_decomposed = new_model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    new_model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=2)
    _, acc_finetuned = new_model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    new_model.save(args.output)

    macs_before, params_before = cost(model, report.model_macs_before)
    macs_after, params_after = cost(new_model, report.model_macs_after)
    print(f"\nSaved {args.output} (backend {keras.backend.backend()}).")
    print("| model | test accuracy | MACs (M, 1 MAC = 2 FLOPs) | params |")
    print("|---|---:|---:|---:|")
    print(f"| original | {acc_original:.4f} | {macs_before / 1e6:.2f} | {params_before:,} |")
    print(f"| decomposed ({report.method}), before fine-tuning | {acc_decomposed:.4f} | {macs_after / 1e6:.2f} | {params_after:,} |")
    print(f"| decomposed, after {args.epochs} epoch(s) of fine-tuning | {acc_finetuned:.4f} | {macs_after / 1e6:.2f} | {params_after:,} |")
    print(f"MACs ratio {macs_after / macs_before:.3f}, params ratio {params_after / params_before:.3f}")


if __name__ == "__main__":
    main()

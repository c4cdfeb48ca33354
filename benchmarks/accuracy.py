"""Accuracy vs MACs: CIFAR-style ResNet-20 on the full real Fashion-MNIST, every conv type.

Beside the conv types (each replacing ResNet-20's 3x3 convolutions) it
trains the SIC paper's small networks (`factorized_resnet20`,
`factorized_vgg16_cifar`, the CIFAR-style VGG-16 at 28 px) with the same recipe,
epochs and seeds; `--convs` takes conv types and network names.

Fixed epoch budget, at least 2 seeds per conv type; test accuracy (mean ±
half the spread), params, MACs, training images/s (train step at the
recipe's batch size) and inference latency (batch 1), speeds measured with all
models interleaved after training. Writes
`benchmarks/results/accuracy_<backend>.md` and `accuracy_<backend>.png`.
Runs resume: interrupt and start again with the same arguments.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/accuracy.py [--epochs 2] [--seeds 2] [--subset N]

`--igc` runs IGCV1's claim instead ("wider is better at equal parameters"):
the CIFAR IGC network `igc_resnet_cifar` (IGC-L4M8, ResNet-38 layout)
against its regular counterpart of about equal parameters
(`igc_resnet_cifar:standard`, width 16), same recipe, epochs and seeds;
writes `accuracy_igc_<backend>.md` / `.png`.
"""

import argparse
import datetime
import os

import keras

import keras_effconv
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.training import TrainConfig
from keras_effconv.training.compare import accuracy_vs_macs_plot
from keras_effconv.training.compare import compare_convs
from keras_effconv.training.compare import comparison_markdown


# The SIC paper's small networks, trained beside ResNet-20's conv types.
SIC_NETWORKS = ("factorized_resnet20", "factorized_vgg16_cifar")
# IGCV1's claim: the IGC network and the regular ResNet of about equal parameters.
IGC_ENTRIES = ("igc_resnet_cifar", "igc_resnet_cifar:standard")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--convs", default=",".join(conv_method_names() + SIC_NETWORKS))
    parser.add_argument("--runs", default=os.path.join("runs", "accuracy"))
    parser.add_argument("--igc", action="store_true", help="IGCV1's network against the regular one of equal params")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    backend = keras.backend.backend()
    results = args.out
    stem, title = f"accuracy_{backend}", "ResNet-20"
    if args.igc:
        args.convs = ",".join(IGC_ENTRIES)
        stem, title = f"accuracy_igc_{backend}", "IGC-L4M8 vs the regular ResNet-38 of equal parameters"
    base = TrainConfig(model="eff_resnet20", dataset="fashion_mnist", epochs=args.epochs, subset=args.subset)
    rows = compare_convs(args.convs.split(","), base, os.path.join(args.runs, backend), seeds=tuple(range(args.seeds)), verbose=2)
    os.makedirs(results, exist_ok=True)
    plot = os.path.join(results, f"{stem}.png")
    accuracy_vs_macs_plot(rows, plot, title=f"{title}, Fashion-MNIST, {args.epochs} epochs ({backend})")
    text = "\n".join(
        [
            f"# Accuracy vs MACs: {title} on Fashion-MNIST ({backend})",
            "",
            f"Generated {datetime.date.today()} by `benchmarks/accuracy.py`; keras_effconv {keras_effconv.__version__}. "
            f"{args.epochs} epochs of the `keras-effconv train` recipe, {args.seeds} seeds, "
            f"{'full 60k' if args.subset is None else args.subset} training images, full 10k real test split; "
            "accuracy is mean ± half the spread over seeds. Speed is measured after training, all models "
            "interleaved in one run: training images/s from `train_on_batch` at the recipe's batch size, "
            "inference latency at batch 1.",
            "",
            comparison_markdown(rows),
            "",
            f"![accuracy vs MACs]({stem}.png)",
            "",
        ]
    )
    with open(os.path.join(results, f"{stem}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()

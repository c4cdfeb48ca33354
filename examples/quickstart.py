"""README main job: train an efficient ResNet-20 on real Fashion-MNIST, compare, export.

Trains `EffResNet20(conv="hetconv")` (every 3x3 convolution of the residual
blocks is a HetConv with P=4) with the library's `model.fit` recipe on the
full real Fashion-MNIST training split (offline, Debian package
`dataset-fashion-mnist`), evaluates it on the full test split, prints test
accuracy, MACs and parameters next to the standard ResNet-20, and exports a
verified LiteRT model. Interrupted? Run the same command again: it resumes
after the last completed epoch.

    KERAS_BACKEND=tensorflow .venv/bin/python examples/quickstart.py [--epochs 2] [--compare]
"""

import argparse
import os

from keras_effconv.training import TrainConfig
from keras_effconv.training import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conv", default="hetconv")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=None, help="train on N images only (faster, less accurate)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=os.path.join("runs", "quickstart"))
    parser.add_argument("--compare", action="store_true", help="also train the standard ResNet-20 (twice the time)")
    parser.add_argument("--no-export", action="store_true", help="skip the LiteRT export")
    args = parser.parse_args()

    runs = {args.conv: dict(export=not args.no_export)}
    if args.compare:
        runs["standard"] = dict(export=False)
    results = {}
    for conv, extra in runs.items():
        config = TrainConfig(
            model="eff_resnet20", conv=conv, epochs=args.epochs, subset=args.subset, batch_size=args.batch_size, **extra
        )
        # The quickstart owns its output folders: a finished earlier run is replaced,
        # an interrupted one is resumed.
        results[conv] = train(config, os.path.join(args.out, conv), overwrite=True, verbose=2)

    first = results[args.conv]
    print()
    print(f"Fashion-MNIST, {first['train_images']} training images, {first['epochs']} epochs, "
          f"{first['test_images']} real test images, backend {first['backend']}")
    print(f"| network | test accuracy | MACs | params |")
    print(f"|---|---:|---:|---:|")
    print(f"| ResNet-20 {args.conv} | {first['test_accuracy']:.4f} | {first['macs'] / 1e6:.2f} M | {first['params']:,} |")
    standard_accuracy = f"{results['standard']['test_accuracy']:.4f}" if "standard" in results else "(run with --compare)"
    print(f"| ResNet-20 standard | {standard_accuracy} | {first['standard_macs'] / 1e6:.2f} M | {first['standard_params']:,} |")
    print(f"{first['standard_macs'] / first['macs']:.2f}x fewer MACs, {first['standard_params'] / first['params']:.2f}x fewer params")
    if "export" in first:
        export = first["export"]
        print(f"LiteRT model: {os.path.join(args.out, args.conv, 'model.tflite')} -- {export.get('summary', export)}")
    print(f"curves, logs, checkpoints and metrics.json in {os.path.join(args.out, args.conv)}/")


if __name__ == "__main__":
    main()

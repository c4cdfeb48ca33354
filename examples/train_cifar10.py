"""Train EffResNet20 on CIFAR-10 when a local copy (or Keras' cached archive) exists.

    KERAS_BACKEND=tensorflow .venv/bin/python examples/train_cifar10.py --conv hetconv --epochs 30

Without CIFAR-10 on disk it says how to get it and exits; it never downloads
unless you pass --download.
"""

import argparse
import json
import sys

from keras_effconv import datasets
from keras_effconv.training import TrainConfig
from keras_effconv.training import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conv", default="hetconv")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-path", default=None, help="extracted cifar-10-batches-py (or its parent)")
    parser.add_argument("--download", action="store_true", help="let keras.datasets download CIFAR-10")
    parser.add_argument("--out", default="runs/cifar10")
    args = parser.parse_args()
    try:
        datasets.cifar10(path=args.data_path, download=args.download)
    except FileNotFoundError as error:
        print(f"CIFAR-10 not available: {error}", file=sys.stderr)
        return 0
    config = TrainConfig(model="eff_resnet20", conv=args.conv, dataset="cifar10", data_path=args.data_path, epochs=args.epochs)
    print(json.dumps(train(config, f"{args.out}/{args.conv}", overwrite=True), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

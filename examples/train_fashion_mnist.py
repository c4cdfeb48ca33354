"""Train any network/conv type on the real Fashion-MNIST with the library's recipe.

Same as `keras-effconv train ... --dataset fashion_mnist`, from Python:

    KERAS_BACKEND=jax .venv/bin/python examples/train_fashion_mnist.py --conv igc --epochs 5
"""

import argparse
import json

from keras_effconv.training import TrainConfig
from keras_effconv.training import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="eff_resnet20")
    parser.add_argument("--conv", default="hetconv")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--out", default="runs/fashion_mnist")
    args = parser.parse_args()
    config = TrainConfig(model=args.model, conv=args.conv, epochs=args.epochs, subset=args.subset)
    metrics = train(config, f"{args.out}/{args.model}_{args.conv}", overwrite=True)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

"""Compare conv types on equal terms: same network, data, recipe and budget.

    KERAS_BACKEND=tensorflow .venv/bin/python examples/compare_convs.py --subset 10000 --epochs 2
"""

import argparse

from keras_effconv.conv_methods import conv_method_names
from keras_effconv.training import TrainConfig
from keras_effconv.training.compare import compare_convs
from keras_effconv.training.compare import comparison_markdown


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="eff_resnet20")
    parser.add_argument("--convs", default=",".join(conv_method_names()))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args()
    config = TrainConfig(model=args.model, epochs=args.epochs, subset=args.subset)
    rows = compare_convs(args.convs.split(","), config, args.out, verbose=2)
    print(comparison_markdown(rows))


if __name__ == "__main__":
    main()

"""The `keras-effconv` command line.

    keras-effconv train --model eff_resnet20 --conv hetconv --dataset fashion_mnist --epochs 10 --out runs/het
    keras-effconv profile eff_resnet50 --conv hetconv
    keras-effconv profile my_model.keras --input-shape 224,224,3 --layers
    keras-effconv export runs/het/model.keras --out model.tflite --quantize int8 --calibration fashion_mnist
    keras-effconv expand-decompose --model shufflenet_v2_cifar --expanded-epochs 9 --finetune-epochs 1 --out runs/sep
    keras-effconv decompose model.keras --out small.keras --method data --dataset fashion_mnist
    keras-effconv bench eff_resnet50 --conv hetconv --reference keras:ResNet50 --litert
    keras-effconv --version

One module per sub-command (`train`, `profile`, `export`, `separable`,
`decompose`, `bench`), each with a `register(subparsers)`; argument types,
choice lists and `CommandError` in `_args`. Bad input ends with a one-line
`keras-effconv: error: ...` message and exit status 2, never a traceback.

Building the parser imports neither Keras nor a backend: every sub-command
imports what it needs inside its handler, and the choice lists are read
without importing their modules (`_args`), so `--help` answers at once and
prints no TensorFlow log lines (`tests/test_cli.py` checks it).
"""

import argparse
import os

from keras_effconv.cli._args import CommandError

__all__ = ["CommandError", "main", "make_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser():
    """The `keras-effconv` argument parser with every sub-command."""
    from keras_effconv.cli import bench
    from keras_effconv.cli import decompose
    from keras_effconv.cli import export
    from keras_effconv.cli import profile
    from keras_effconv.cli import separable
    from keras_effconv.cli import train
    from keras_effconv.version import __version__

    parser = _Parser(
        prog="keras-effconv",
        description="Efficient convolutions for Keras 3: train, profile, decompose, benchmark and export networks.",
    )
    parser.add_argument("--version", action="version", version=f"keras-effconv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (train, profile, export, separable, decompose, bench):
        command.register(commands)
    return parser


def main(argv=None):
    """Entry point of `keras-effconv`; returns the exit status."""
    # TensorFlow's C++ start-up logging drowns the one-line reports.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except CommandError as error:
        parser.exit(2, f"keras-effconv: error: {error}\n")
    except (ValueError, TypeError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        parser.exit(2, f"keras-effconv: error: {message}\n")
    return 0

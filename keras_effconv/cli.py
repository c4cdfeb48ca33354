"""The `keras-effconv` command line.

    keras-effconv train --model eff_resnet20 --conv hetconv --dataset fashion_mnist --epochs 10 --out runs/het
    keras-effconv profile eff_resnet50 --conv hetconv
    keras-effconv profile my_model.keras --input-shape 224,224,3 --layers
    keras-effconv export runs/het/model.keras --out model.tflite --quantize int8 --calibration fashion_mnist

Bad input ends with a one-line `keras-effconv: error: ...` message and exit
status 2, never a traceback.
"""

import argparse
import json
import os
import sys


class CommandError(Exception):
    """A user error the CLI reports in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 224,224,3, got {text!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers like 224,224,3, got {text!r}")
    return shape


def _parse_json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text!r}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object like \'{{"part": 8}}\', got {text!r}')
    return value


def build_model(name, conv, conv_config=None, input_shape=None, include_top=True, classes=None):
    """A network by CLI name (`eff_resnet50`, ...) or loaded from a `.keras` file."""
    import keras

    from keras_effconv import applications

    if name.endswith(".keras"):
        if not os.path.exists(name):
            raise CommandError(f"model file not found: {name}")
        return keras.saving.load_model(name, compile=False)
    if name not in applications.MODELS:
        raise CommandError(
            f"unknown model {name!r}; choose one of {sorted(applications.MODELS)} or pass a .keras file"
        )
    kwargs = {"conv": conv, "conv_config": conv_config, "include_top": include_top}
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    if classes is not None:
        kwargs["classes"] = classes
    return applications.MODELS[name](**kwargs)


def _profile_command(args):
    from keras_effconv import profile

    model = build_model(
        args.model,
        args.conv,
        args.conv_config,
        input_shape=args.input_shape,
        include_top=not args.no_top,
        classes=args.classes,
    )
    result = profile(model, input_shape=args.input_shape if args.model.endswith(".keras") else None)
    if args.json:
        data = result.to_dict()
        if not args.layers:
            data.pop("layers")
        print(json.dumps(data, indent=2))
        return
    if args.layers:
        print(result.to_markdown(only_costly=True))
        print()
    print(result.summary())


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _train_command(args):
    from keras_effconv.training import TrainConfig
    from keras_effconv.training import train

    config = TrainConfig(
        model=args.model,
        conv=args.conv,
        conv_config=args.conv_config,
        dataset=args.dataset,
        data_path=args.data_path,
        epochs=args.epochs,
        batch_size=args.batch_size,
        subset=args.subset,
        learning_rate=args.learning_rate,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        distribute=args.distribute,
        export=args.export,
        seed=args.seed,
    )
    metrics = train(config, args.out, overwrite=args.overwrite)
    print(
        f"{metrics['model']} conv={metrics['conv']} on {metrics['dataset']} ({metrics['train_images']} train images, "
        f"{metrics['epochs']} epochs, {metrics['backend']}): test accuracy {metrics['test_accuracy']:.4f} on "
        f"{metrics['test_images']} test images"
    )
    print(
        f"MACs {metrics['macs'] / 1e6:.2f} M vs {metrics['standard_macs'] / 1e6:.2f} M standard "
        f"({metrics['standard_macs'] / metrics['macs']:.2f}x fewer); params {metrics['params']:,} vs "
        f"{metrics['standard_params']:,}; trained in {metrics['train_seconds']:.0f} s"
    )
    if "export" in metrics:
        print(f"LiteRT export: {os.path.join(args.out, 'model.tflite')}")
    print(f"results in {args.out}/ (metrics.json, model.keras, curves.png, history.csv, checkpoints/, tensorboard/)")


def make_parser():
    from keras_effconv.applications import CONV_TYPES

    parser = _Parser(
        prog="keras-effconv", description="Efficient convolutions for Keras 3: train, profile and export networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    from keras_effconv.applications import MODELS
    from keras_effconv.datasets import DATASETS

    tr = commands.add_parser("train", help="train a network with model.fit (resumable)")
    tr.add_argument("--model", default="eff_resnet20", choices=sorted(MODELS), help="network (default eff_resnet20)")
    tr.add_argument("--conv", default="hetconv", choices=CONV_TYPES, help="efficient convolution (default hetconv)")
    tr.add_argument("--conv-config", type=_parse_json_dict, default=None, help="method arguments as JSON")
    tr.add_argument("--dataset", default="fashion_mnist", choices=DATASETS, help="training data (default fashion_mnist)")
    tr.add_argument("--data-path", default=None, help="data location (required for image_folder)")
    tr.add_argument("--epochs", type=positive_int, default=10)
    tr.add_argument("--out", required=True, help="output directory; re-run the same command to resume")
    tr.add_argument("--subset", type=positive_int, default=None, help="use only N training images")
    tr.add_argument("--batch-size", type=positive_int, default=128)
    tr.add_argument("--learning-rate", type=positive_float, default=2e-3)
    tr.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16")
    tr.add_argument("--jit-compile", action="store_true", help="XLA (always on for JAX)")
    tr.add_argument("--distribute", action="store_true", help="data-parallel over all local devices (jax, tensorflow)")
    tr.add_argument("--export", action="store_true", help="also write a verified model.tflite")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a finished or unfinished run")
    tr.set_defaults(handler=_train_command)

    prof = commands.add_parser("profile", help="MACs and parameters of a network, per layer and in total")
    prof.add_argument("model", help="eff_resnet20, eff_resnet56, eff_resnet50, eff_resnet101, eff_resnet152, "
                      "eff_vgg16, or a .keras file")
    prof.add_argument("--conv", default="hetconv", choices=CONV_TYPES, help="efficient convolution (default hetconv)")
    prof.add_argument("--conv-config", type=_parse_json_dict, default=None, help='method arguments as JSON, e.g. \'{"part": 8}\'')
    prof.add_argument("--input-shape", type=parse_shape, default=None, help="per-sample input shape H,W,C")
    prof.add_argument("--classes", type=int, default=None, help="classifier size (default: the network's)")
    prof.add_argument("--no-top", action="store_true", help="profile without the classifier")
    prof.add_argument("--layers", action="store_true", help="also print the per-layer table")
    prof.add_argument("--json", action="store_true", help="print JSON (to_dict()) instead of text")
    prof.set_defaults(handler=_profile_command)

    from keras_effconv.export.command import register as register_export

    register_export(commands)
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


if __name__ == "__main__":
    sys.exit(main())

"""The `keras-effconv` command line.

    keras-effconv profile eff_resnet50 --conv hetconv
    keras-effconv profile my_model.keras --input-shape 224,224,3 --layers

Bad input ends with a one-line `keras-effconv: error: ...` message and exit
status 2, never a traceback.
"""

import argparse
import json
import os
import sys


class CommandError(Exception):
    """A user error the CLI reports in one line."""


def _parse_shape(text):
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


def make_parser():
    from keras_effconv.applications import CONV_TYPES

    parser = argparse.ArgumentParser(
        prog="keras-effconv", description="Efficient convolutions for Keras 3: profile networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prof = commands.add_parser("profile", help="MACs and parameters of a network, per layer and in total")
    prof.add_argument("model", help="eff_resnet20, eff_resnet56, eff_resnet50, eff_resnet101, eff_resnet152, "
                      "eff_vgg16, or a .keras file")
    prof.add_argument("--conv", default="hetconv", choices=CONV_TYPES, help="efficient convolution (default hetconv)")
    prof.add_argument("--conv-config", type=_parse_json_dict, default=None, help='method arguments as JSON, e.g. \'{"part": 8}\'')
    prof.add_argument("--input-shape", type=_parse_shape, default=None, help="per-sample input shape H,W,C")
    prof.add_argument("--classes", type=int, default=None, help="classifier size (default: the network's)")
    prof.add_argument("--no-top", action="store_true", help="profile without the classifier")
    prof.add_argument("--layers", action="store_true", help="also print the per-layer table")
    prof.add_argument("--json", action="store_true", help="print JSON (to_dict()) instead of text")
    prof.set_defaults(handler=_profile_command)
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

"""`keras-effconv profile`: MACs and parameters of a network, per layer and in total.

    keras-effconv profile eff_resnet50 --conv hetconv
    keras-effconv profile my_model.keras --input-shape 224,224,3 --layers
"""

import json

from keras_effconv.cli._args import CommandError
from keras_effconv.cli._args import conv_choices
from keras_effconv.cli._args import json_dict
from keras_effconv.cli._args import parse_shape


def _network(name, conv, conv_config=None, input_shape=None, include_top=True, classes=None):
    """A network by CLI name (`eff_resnet50`, ...) or loaded from a `.keras` file."""
    from keras_effconv import applications
    from keras_effconv._files import load_keras_model

    if name.endswith(".keras"):
        return load_keras_model(name, argument="model")
    if name not in applications.MODELS:
        raise CommandError(
            f"unknown model {name!r}; choose one of {sorted(applications.MODELS)} or pass a .keras file"
        )
    kwargs = {"include_top": include_top}
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    if classes is not None:
        kwargs["classes"] = classes
    return applications.create(name, conv, conv_config, **kwargs)


def _profile_command(args):
    from keras_effconv import profile

    model = _network(
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


def register(subparsers):
    """Adds the `profile` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `profile` sub-parser.
    """
    parser = subparsers.add_parser("profile", help="MACs and parameters of a network, per layer and in total")
    parser.add_argument("model", help="eff_resnet20, eff_resnet56, eff_resnet50, eff_resnet101, eff_resnet152, "
                        "eff_vgg16, or a .keras file")
    parser.add_argument("--conv", default=None, choices=conv_choices(),
                        help="efficient convolution (default: the network's, hetconv for eff_*, "
                        "factorized for the SIC networks factorized_*)")
    parser.add_argument("--conv-config", type=json_dict, default=None,
                        help='method arguments as JSON, e.g. \'{"part": 8}\'')
    parser.add_argument("--input-shape", type=parse_shape, default=None, help="per-sample input shape H,W,C")
    parser.add_argument("--classes", type=int, default=None, help="classifier size (default: the network's)")
    parser.add_argument("--no-top", action="store_true", help="profile without the classifier")
    parser.add_argument("--layers", action="store_true", help="also print the per-layer table")
    parser.add_argument("--json", action="store_true", help="print JSON (to_dict()) instead of text")
    parser.set_defaults(handler=_profile_command)
    return parser

"""`keras-effconv profile`: MACs and parameters of a network, per layer and in total.

    keras-effconv profile eff_resnet50 --conv hetconv
    keras-effconv profile my_model.keras --input-shape 224,224,3 --layers
"""

import json

from keras_effconv.cli._args import conv_choices
from keras_effconv.cli._args import json_dict
from keras_effconv.cli._args import model_names
from keras_effconv.cli._args import network
from keras_effconv.cli._args import parse_shape


def _profile_command(args):
    from keras_effconv import profile

    model = network(
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
    parser.add_argument("model", metavar="MODEL", help=f"a network ({', '.join(model_names())}) or a .keras file")
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

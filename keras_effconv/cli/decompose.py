"""`keras-effconv decompose`: the command-line front end of `keras_effconv.decompose`.

    keras-effconv decompose model.keras --out small.keras                          # SVD, rank 1
    keras-effconv decompose model.keras --out small.keras --method data --dataset fashion_mnist
    keras-effconv decompose model.keras --out small.keras --method channel --ratio 0.5 --verbose

`--method svd` and `--method data` run `depthwise_decompose` (every k x k
`Conv2D` becomes a depthwise k x k + 1 x 1 pair; `data` fits the pairs to
the network's layer outputs on `--images` images of `--dataset`);
`--method channel` runs `channel_decompose` (the channel-decomposition
baseline at `--ratio` of each layer's MACs or `--macs` for the whole model).
The arguments mirror the functions'. Everything that can be checked before
the model is loaded is (`--out` writable and a `.keras` file other than the
input, the options of the method); the result is written atomically (a
failed run leaves no file and never replaces an existing one), and the
report (MACs and parameters before and after; per layer with `--verbose`)
is printed.
"""

import argparse
import json
import os

from keras_effconv.cli._args import CommandError
from keras_effconv.cli._args import dataset_names
from keras_effconv.cli._args import positive_int

METHODS = ("svd", "data", "channel")
DEFAULT_IMAGES = 1024
# Options that belong to one family of methods, for the "does not apply" check.
_DEPTHWISE_OPTIONS = ("rank", "energy", "insert_batchnorm", "iterations", "positions_per_image")
_CHANNEL_OPTIONS = ("ratio", "macs")
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}


def fraction(text):
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def mac_count(text):
    """A positive MAC count, optionally with a K/M/G suffix: `"300M"` -> 300000000."""
    scale = _SUFFIXES.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"expected a positive MAC count like 300000000 or 300M, got {text!r}")
    return int(value)


def layer_names(text):
    """`"conv1,conv2"` -> `["conv1", "conv2"]`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got {text!r}")
    return names


def _flag(option):
    return "--" + option.replace("_", "-")


def _check_options(args):
    """Option combinations, checked before anything is loaded."""
    channel = args.method == "channel"
    stray = [_flag(o) for o in (_DEPTHWISE_OPTIONS if channel else _CHANNEL_OPTIONS) if getattr(args, o) not in
             (None, False)]
    if stray:
        raise CommandError(f"{', '.join(stray)} do(es) not apply to --method {args.method}")
    if channel and (args.ratio is None) == (args.macs is None):
        raise CommandError("--method channel needs exactly one of --ratio (share of each layer's MACs) and --macs "
                           "(target MACs of the whole model)")
    if args.method == "data" and args.dataset is None:
        raise CommandError("--method data needs images: pass --dataset (e.g. --dataset fashion_mnist)")
    if args.dataset is None:
        for option in ("data_path", "images"):
            if getattr(args, option) is not None:
                raise CommandError(f"{_flag(option)} needs --dataset")
    if os.path.abspath(args.out) == os.path.abspath(args.model):
        raise CommandError("--out must differ from MODEL.keras: the trained model is never overwritten")


def _images(args, model):
    """`--images` images of `--dataset` in the model's input format, as a batched `tf.data.Dataset`."""
    import keras
    import tensorflow as tf

    from keras_effconv.datasets import load_dataset

    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3:
        raise CommandError(f"--dataset needs a model with one image input; {args.model} has inputs "
                           f"{[tuple(t.shape) for t in model.inputs]}")
    channels_first = keras.config.image_data_format() == "channels_first"
    channels, size = (shape[0], shape[1:]) if channels_first else (shape[-1], shape[:2])
    image_size = None if None in size else size
    data = load_dataset(args.dataset, path=args.data_path, subset=args.images or DEFAULT_IMAGES,
                        image_size=image_size, seed=args.seed)
    axis = 0 if channels_first else -1
    have = data.input_shape[axis]
    if channels not in (None, have) and {channels, have} != {1, 3}:
        raise CommandError(f"--dataset {args.dataset} has {have}-channel images; the model takes {channels} channels")

    def prepare(image, label):
        if channels == 3 and have == 1:
            image = tf.repeat(image, 3, axis=axis)
        elif channels == 1 and have == 3:
            image = tf.reduce_mean(image, axis=axis, keepdims=True)
        return image

    return data.train.map(prepare).batch(args.batch_size)


def _millions(value):
    return "n/a" if value is None else f"{value / 1e6:.2f} M"


def summary(report):
    """One line: method, decomposed layers, whole-model MACs and parameters before -> after."""
    before, after = report.model_macs_before, report.model_macs_after
    if before is None or after is None:  # a spatial size is unknown: the decomposed layers' own
        before, after, scope = report.macs_before, report.macs_after, "decomposed layers' MACs"
    else:
        scope = "MACs"
    fewer = f" ({before / after:.2f}x fewer)" if before and after else ""
    errors = [layer.output_error for layer in report.layers if layer.output_error is not None]
    error = f"; largest relative output error {max(errors):.4f}" if errors else ""
    return (
        f"decomposed {len(report.layers)} convolution(s) with method {report.method}: {scope} "
        f"{_millions(before)} -> {_millions(after)}{fewer}, params {report.model_params_before:,} -> "
        f"{report.model_params_after:,}{error}"
    )


def _command(args):
    from keras_effconv._files import atomic_path
    from keras_effconv._files import check_output_path
    from keras_effconv._files import load_keras_model

    # Before loading anything: a bad --out or option must not cost a decomposition.
    check_output_path(args.out, ".keras", argument="--out")
    _check_options(args)
    model = load_keras_model(args.model, argument="model")
    data = _images(args, model) if args.dataset else None
    if args.method == "channel":
        from keras_effconv.decompose import channel_decompose

        new_model, report = channel_decompose(
            model, ratio=args.ratio, macs=args.macs, data=data, layers=args.layers, batch_size=args.batch_size
        )
    else:
        from keras_effconv.decompose import depthwise_decompose

        new_model, report = depthwise_decompose(
            model,
            rank=args.rank or 1,
            energy=args.energy,
            method=args.method,
            data=data,
            layers=args.layers,
            batch_size=args.batch_size,
            positions_per_image=args.positions_per_image,
            iterations=args.iterations or 10,
            seed=args.seed,
            insert_batchnorm=args.insert_batchnorm,
        )
    with atomic_path(args.out) as path:
        new_model.save(path)
    if args.json:
        print(json.dumps(dict(report.to_dict(), out=args.out), indent=2))
        return
    if args.verbose:
        print(report.to_markdown())
        print()
    print(summary(report))
    print(f"wrote {args.out}")


def register(subparsers):
    """Adds the `decompose` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `decompose` sub-parser.
    """
    parser = subparsers.add_parser(
        "decompose",
        help="shrink a trained .keras model: k x k convs -> depthwise + 1x1 (svd, data) or channel decomposition",
        description="Replaces every k x k Conv2D of a trained model (or --layers) by a depthwise k x k + 1x1 pair "
        "(He et al.: --method svd of the kernels, or data, fitted to the layer outputs on real images) or by the "
        "channel-decomposition baseline (--method channel), writes the new model and prints MACs and parameters "
        "before and after.",
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the trained model (.keras file)")
    parser.add_argument("--out", required=True, metavar="OUT.keras", help="where to write the decomposed model")
    parser.add_argument("--method", choices=METHODS, default="svd",
                        help="svd (default), data (needs --dataset) or channel (needs --ratio or --macs)")
    parser.add_argument("--layers", type=layer_names, default=None, metavar="NAME[,NAME...]",
                        help="decompose only these Conv2D layers (default: every k x k Conv2D)")
    depthwise = parser.add_argument_group("depthwise decomposition (--method svd, data)")
    depthwise.add_argument("--rank", type=positive_int, default=None,
                           help="depthwise kernels per input channel (default 1)")
    depthwise.add_argument("--energy", type=fraction, default=None,
                           help="instead of --rank: per layer the smallest rank keeping this share of sum(sigma^2)")
    depthwise.add_argument("--insert-batchnorm", action="store_true",
                           help="put a BatchNormalization (the identity in inference) between the two halves")
    depthwise.add_argument("--iterations", type=positive_int, default=None,
                           help="most block-coordinate sweeps of --method data (default 10)")
    depthwise.add_argument("--positions-per-image", type=positive_int, default=None,
                           help="random output positions per image for the data statistics (default all)")
    channel = parser.add_argument_group("channel decomposition (--method channel; exactly one of)")
    channel.add_argument("--ratio", type=fraction, default=None, help="share of each layer's MACs to keep")
    channel.add_argument("--macs", type=mac_count, default=None, metavar="N",
                         help="target MACs of the whole model, e.g. 300M")
    data = parser.add_argument_group(
        "images (needed by --method data; otherwise optional: output errors in the report, and the principal "
        "subspace of the responses for --method channel)"
    )
    data.add_argument("--dataset", choices=dataset_names(), default=None, help="training images of this dataset")
    data.add_argument("--data-path", default=None, help="data location (required for image_folder)")
    data.add_argument("--images", type=positive_int, default=None, metavar="N",
                      help=f"number of images (default {DEFAULT_IMAGES})")
    data.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="default 32")
    data.add_argument("--seed", type=int, default=0, help="seed of the image sample and positions (default 0)")
    parser.add_argument("--verbose", action="store_true", help="also print the per-layer report")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (to_dict())")
    parser.set_defaults(handler=_command)
    return parser

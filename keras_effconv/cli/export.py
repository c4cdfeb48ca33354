"""`keras-effconv export`: the command-line front end of `export_litert`.

    keras-effconv export model.keras --out model.tflite
    keras-effconv export model.keras --out model_int8.tflite --quantize int8 --calibration fashion_mnist

Bad input (`--out` a directory, in a missing or read-only directory, or not
a `.tflite` file: checked before the model is even loaded) and a failed
export (a failed check, the GPU check included for `--target gpu`) raise
ValueError/OSError with a one-line message, which `main` prints as
`keras-effconv: error: ...` (exit status 2); nothing is written then.
"""

import json

from keras_effconv.cli._args import parse_shape
from keras_effconv.cli._args import positive_int

QUANTIZE_CHOICES = ("none", "float16", "dynamic_int8", "int8")
CALIBRATION_CHOICES = ("fashion_mnist",)
CALIBRATION_SAMPLES = 300


def calibration_images(name, input_shape, count=CALIBRATION_SAMPLES, seed=0, split="train"):
    """Real calibration images in the training recipe's format (float32 in [0, 1]).

    Args:
        name: `"fashion_mnist"` (the offline Debian dataset).
        input_shape: the model's per-sample input `(H, W, C)`; images are
            resized and their gray channel repeated to match.
        count: number of images, drawn with a fixed seed.
        seed: the random seed.
        split: `"train"` (calibration) or `"test"` (verification: images
            the calibration never saw).

    Returns:
        float32 array `(count, H, W, C)`.

    Raises:
        ValueError: for an unknown `name` or a channel count other than 1 or 3.
        FileNotFoundError: if the dataset is not installed.
    """
    import numpy as np

    import keras

    from keras_effconv.datasets import fashion_mnist

    if name not in CALIBRATION_CHOICES:
        raise ValueError(
            f"Invalid value for argument `calibration`: expected one of {CALIBRATION_CHOICES}. Received: {name!r}"
        )
    if split not in ("train", "test"):
        raise ValueError(f"Invalid value for argument `split`: expected 'train' or 'test'. Received: {split!r}")
    (x_train, _), (x_test, _) = fashion_mnist()
    source = x_train if split == "train" else x_test
    keep = np.random.default_rng(seed).permutation(len(source))[:count]
    images = source[keep].astype("float32")[..., None] / 255.0
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(
            f"--calibration {name} gives gray images; the model input has {channels} channels (allowed: 1 or 3)"
        )
    if (height, width) != images.shape[1:3]:
        images = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (height, width)))
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return np.asarray(images, dtype="float32")


def _export_command(args):
    from keras_effconv._files import check_output_path
    from keras_effconv._files import load_keras_model
    from keras_effconv.export.verification import GPU_SAMPLES
    from keras_effconv.export.litert import export_litert

    # Before loading anything: a bad --out must not cost a conversion.
    check_output_path(args.out, ".tflite", argument="--out")
    quantization = None if args.quantize == "none" else args.quantize
    if quantization == "int8" and args.calibration is None:
        raise ValueError("--quantize int8 needs --calibration (e.g. --calibration fashion_mnist)")
    model = load_keras_model(args.model, argument="model")
    data = checks = None
    if args.calibration is not None:
        shape = args.input_shape or tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ValueError(f"the model input {tuple(model.inputs[0].shape)} has unknown sizes; pass --input-shape H,W,C")
        data = calibration_images(args.calibration, shape)
        checks = calibration_images(args.calibration, shape, count=GPU_SAMPLES, split="test")
    report = export_litert(
        model,
        args.out,
        input_shape=args.input_shape,
        batch_size=args.batch_size,
        quantization=quantization,
        representative_data=data,
        target=args.target,
        verify=not args.no_verify,
        verification_data=checks,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())


def register(subparsers):
    """Adds the `export` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `export` sub-parser.
    """
    from keras_effconv.export.inference import TARGETS

    parser = subparsers.add_parser(
        "export",
        help="export a .keras model to a verified, GPU-ready LiteRT .tflite file",
        description="Optimizes the model for inference, converts it to LiteRT with builtin ops only and a "
        "static input shape, and verifies it (no Flex ops, outputs vs Keras, GPU check).",
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the trained model (.keras file)")
    parser.add_argument("--out", required=True, metavar="PATH", help="where to write the .tflite file")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none", help="quantization (default none)")
    parser.add_argument(
        "--calibration", choices=CALIBRATION_CHOICES, default=None,
        help="real images for int8 calibration (training split) and verification (test split; needed with "
        "--quantize int8)",
    )
    parser.add_argument("--target", choices=TARGETS, default="gpu", help="mobile GPU (default) or CPU/XNNPACK")
    parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="H,W,C",
                        help="per-sample input shape, when the model's is not fixed")
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="static batch size (default 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip the interpreter and GPU checks")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_export_command)
    return parser

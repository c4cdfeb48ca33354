"""`keras-effconv export`: the command-line front end of `export_litert`.

    keras-effconv export model.keras --out model.tflite
    keras-effconv export model.keras --out model_int8.tflite --quantize int8 --calibration fashion_mnist
    keras-effconv export model.keras --out m.tflite --quantize int8 --calibration photos/ --labels labels.txt
    keras-effconv export model.keras --format onnx --out model.onnx

`--format onnx` runs `keras_effconv.export.export_onnx` instead (verified
with ONNX Runtime; `--quantize`, `--target`, `--metadata` and `--labels`
are LiteRT's and refused before the model is loaded; `--calibration` gives
real verification images).

The model's metadata (input normalisation, layout, class names, provenance:
`keras_effconv.export.metadata`) is read from `model.json` beside the
`.keras` file (written by `keras-effconv train`) or `--metadata`, embedded in
the `.tflite` file, and written as `model.json` + `labels.txt` beside it;
calibration images are prepared with its preprocessing. Without metadata the
command says so in one line and records the input shape and layout only.

Bad input (`--out` a directory, in a missing or read-only directory, or not
a `.tflite` file: checked before the model is even loaded) and a failed
export (a failed check, the GPU check included for `--target gpu`) raise
ValueError/OSError with a one-line message, which `main` prints as
`keras-effconv: error: ...` (exit status 2); nothing is written then.
"""

import json
import os
import sys

from keras_effconv.cli._args import parse_shape
from keras_effconv.cli._args import positive_int

QUANTIZE_CHOICES = ("none", "float16", "dynamic_int8", "int8")
# `--calibration` also takes the path of an image folder (one sub-directory per class).
CALIBRATION_CHOICES = ("fashion_mnist", "cifar10", "image_folder")
CALIBRATION_SAMPLES = 300
_IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def _check_calibration(name, path=None):
    """`(dataset, path)` for `--calibration NAME` / `--calibration-path`; a directory means an image folder."""
    import os

    if name not in CALIBRATION_CHOICES:
        if os.path.isdir(name):
            return "image_folder", name
        raise ValueError(
            f"Invalid value for argument `calibration`: expected one of {CALIBRATION_CHOICES} or an image-folder "
            f"directory. Received: {name!r}"
        )
    if name == "image_folder" and path is None:
        raise ValueError("--calibration image_folder needs --calibration-path DIR (one sub-directory per class)")
    return name, path


def _folder_images(path, count, seed, split, size):
    """Up to `count` RGB uint8 images of an image folder, resized to `size`; train/test: disjoint 80/20 parts."""
    import os

    import numpy as np

    import keras

    if not os.path.isdir(path):
        raise FileNotFoundError(f"image folder not found: {path!r} (expected one sub-directory per class)")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.lower().endswith(_IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(_IMAGE_EXTENSIONS)}) in the image folder {path}")
    files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    cut = max(1, int(len(files) * 0.8)) if len(files) > 1 else 1
    part = files[:cut] if split == "train" else (files[cut:] or files)
    images = [
        keras.utils.img_to_array(
            keras.utils.load_img(f, color_mode="rgb", target_size=size, interpolation="bilinear"),
            data_format="channels_last", dtype="uint8",
        )
        for f in part[:count]
    ]
    return np.stack(images)


def calibration_images(name, metadata, count=CALIBRATION_SAMPLES, seed=0, split="train", path=None):
    """Real images prepared as the model expects them (its metadata's preprocessing).

    Args:
        name: `"fashion_mnist"`, `"cifar10"`, `"image_folder"` (with `path`)
            or the path of an image folder (one sub-directory per class).
        metadata: the model's metadata dict (`keras_effconv.export.metadata`);
            its `input` gives the shape and layout, its `preprocessing` how
            8-bit pixels become inputs (None: the training recipe's
            pixels / 255). A per-sample shape `(H, W, C)` instead means no
            metadata. Gray images are repeated for 3-channel models, colour
            images turned to luma for 1-channel ones, and all resized.
        count: number of images, drawn with a fixed seed.
        seed: the random seed.
        split: `"train"` (calibration) or `"test"` (verification: images
            the calibration never saw).
        path: where the dataset is (optional for the built-in datasets).

    Returns:
        float32 array `(count, ...)` in the model's input shape.

    Raises:
        ValueError: for an unknown `name`, or a channel count other than
            1 or 3 without metadata.
        FileNotFoundError: if the dataset is not installed.
    """
    import numpy as np

    from keras_effconv.export.metadata import model_metadata
    from keras_effconv.export.metadata import preprocess_images

    name, path = _check_calibration(name, path)
    if split not in ("train", "test"):
        raise ValueError(f"Invalid value for argument `split`: expected 'train' or 'test'. Received: {split!r}")
    if not isinstance(metadata, dict):
        metadata = model_metadata(tuple(metadata))
    spec = metadata["input"]
    shape = spec["shape"] if spec["layout"] == "NHWC" else [spec["shape"][1], spec["shape"][2], spec["shape"][0]]
    if metadata.get("preprocessing") is None and shape[2] not in (1, 3):
        raise ValueError(
            f"--calibration {name} gives gray or RGB images; the model input has {shape[2]} channels (allowed: 1 or 3)"
        )
    if name == "image_folder":
        size = (shape[0], shape[1]) if None not in shape[:2] else None
        raw = _folder_images(path, count, seed, split, size)
    else:
        from keras_effconv import datasets

        (x_train, _), (x_test, _) = datasets.fashion_mnist(path) if name == "fashion_mnist" else datasets.cifar10(path)
        source = x_train if split == "train" else x_test
        raw = source[np.random.default_rng(seed).permutation(len(source))[:count]]
    return preprocess_images(raw, metadata)


def _model_metadata(args, model, shape):
    """The metadata to embed: `--metadata`, else `model.json` beside the model, else only what the model says."""
    import os

    from keras_effconv.export.metadata import MODEL_JSON
    from keras_effconv.export.metadata import model_metadata
    from keras_effconv.export.metadata import read_labels
    from keras_effconv.export.metadata import read_metadata

    source = args.metadata or os.path.join(os.path.dirname(os.path.abspath(args.model)), MODEL_JSON)
    names = read_labels(args.labels) if args.labels else None
    if args.metadata or os.path.isfile(source):
        metadata = read_metadata(source)
        if names:
            metadata = dict(metadata, class_names=names)
        if args.input_shape:
            metadata = dict(metadata, input=dict(metadata["input"], shape=list(args.input_shape)))
        note = None
    else:
        import keras

        channels_first = keras.config.image_data_format() == "channels_first"
        metadata = model_metadata(shape, names, layout="NCHW" if channels_first else "NHWC",
                                  source=os.path.basename(args.model))
        known = "shape and layout" + (" and --labels" if names else "")
        note = (f"no metadata: no {MODEL_JSON} beside {args.model} (or --metadata); the export records the input "
                f"{known} only, and --calibration assumes pixels / 255")
    outputs = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if metadata.get("class_names") and outputs is not None and outputs != len(metadata["class_names"]):
        raise ValueError(
            f"{len(metadata['class_names'])} class names ({args.labels or source}) for a model with {outputs} outputs"
        )
    return metadata, note


def _export_onnx_command(args):
    from keras_effconv._files import check_output_path
    from keras_effconv._files import load_keras_model
    from keras_effconv.export.onnx import export_onnx

    # Before loading anything: LiteRT-only options and a bad --out must not cost a conversion.
    litert_only = [
        option
        for option, given in (
            ("--quantize", args.quantize != "none"),
            ("--target", args.target is not None),
            ("--metadata", args.metadata is not None),
            ("--labels", args.labels is not None),
        )
        if given
    ]
    if litert_only:
        what = "is a LiteRT option" if len(litert_only) == 1 else "are LiteRT options"
        raise ValueError(f"{', '.join(litert_only)} {what} (--format litert), not for --format onnx")
    check_output_path(args.out, ".onnx", argument="--out")
    if args.calibration is not None:
        _check_calibration(args.calibration, args.calibration_path)
    model = load_keras_model(args.model, argument="model")
    checks = None
    if args.calibration is not None:
        shape = args.input_shape or tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ValueError(f"the model input {tuple(model.inputs[0].shape)} has unknown sizes; pass --input-shape H,W,C")
        metadata, _ = _model_metadata(args, model, shape)
        checks = calibration_images(args.calibration, dict(metadata, input=dict(metadata["input"], shape=list(shape))),
                                    count=4 * args.batch_size, split="test", path=args.calibration_path)
    report = export_onnx(
        model,
        args.out,
        input_shape=args.input_shape,
        batch_size=args.batch_size,
        verify=not args.no_verify,
        verification_data=checks,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())


def _export_command(args):
    if args.format == "onnx":
        return _export_onnx_command(args)
    from keras_effconv._files import check_output_path
    from keras_effconv._files import load_keras_model
    from keras_effconv.export.verification import GPU_SAMPLES
    from keras_effconv.export.litert import export_litert
    from keras_effconv.export.metadata import read_metadata
    from keras_effconv.export.metadata import write_metadata_files

    # Before loading anything: a bad --out must not cost a conversion.
    check_output_path(args.out, ".tflite", argument="--out")
    quantization = None if args.quantize == "none" else args.quantize
    if quantization == "int8" and args.calibration is None:
        raise ValueError("--quantize int8 needs --calibration (e.g. --calibration fashion_mnist)")
    if args.calibration is not None:
        _check_calibration(args.calibration, args.calibration_path)
    model = load_keras_model(args.model, argument="model")
    shape = args.input_shape or tuple(model.inputs[0].shape[1:])
    metadata, note = _model_metadata(args, model, shape)
    if note:
        print(f"keras-effconv export: {note}", file=sys.stderr if args.json else sys.stdout, flush=True)
    data = checks = None
    if args.calibration is not None:
        if any(d is None for d in shape):
            raise ValueError(f"the model input {tuple(model.inputs[0].shape)} has unknown sizes; pass --input-shape H,W,C")
        calibration = dict(metadata, input=dict(metadata["input"], shape=list(shape)))
        data = calibration_images(args.calibration, calibration, path=args.calibration_path)
        checks = calibration_images(args.calibration, calibration, count=GPU_SAMPLES, split="test",
                                    path=args.calibration_path)
    report = export_litert(
        model,
        args.out,
        input_shape=args.input_shape,
        batch_size=args.batch_size,
        quantization=quantization,
        representative_data=data,
        target=args.target or "gpu",
        verify=not args.no_verify,
        verification_data=checks,
        metadata=metadata,
    )
    # What was embedded, beside the output: the app reads these (examples/android).
    embedded = read_metadata(args.out)
    written = write_metadata_files(os.path.dirname(os.path.abspath(args.out)), embedded)
    if args.json:
        print(json.dumps(dict(report.to_dict(), metadata=embedded, metadata_files=written), indent=2, default=str))
    else:
        print(report.summary())
        print(f"metadata: embedded, and written to {', '.join(written)}")


def register(subparsers):
    """Adds the `export` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `export` sub-parser.
    """
    from keras_effconv.cli._args import module_constant

    TARGETS = module_constant("keras_effconv.export.inference", "TARGETS")  # without importing Keras (--help)

    parser = subparsers.add_parser(
        "export",
        help="export a .keras model to a verified, GPU-ready LiteRT .tflite file (or ONNX: --format onnx)",
        description="Optimizes the model for inference, converts it to LiteRT with builtin ops only and a "
        "static input shape, and verifies it (no Flex ops, outputs vs Keras, GPU check).",
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the trained model (.keras file)")
    parser.add_argument("--out", required=True, metavar="PATH", help="where to write the .tflite (.onnx) file")
    parser.add_argument("--format", choices=("litert", "onnx"), default="litert",
                        help="litert (default: .tflite for mobile GPUs) or onnx (.onnx, verified with ONNX Runtime)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none", help="quantization (default none)")
    parser.add_argument(
        "--calibration", default=None, metavar="DATASET|DIR",
        help="real images for int8 calibration (training split) and verification (test split; needed with "
        "--quantize int8): fashion_mnist, cifar10, image_folder (with --calibration-path) or an image-folder "
        "directory; prepared with the model's metadata (its preprocessing)",
    )
    parser.add_argument("--calibration-path", default=None, metavar="DIR",
                        help="where the --calibration dataset is (the image folder; optional for the others)")
    parser.add_argument("--metadata", default=None, metavar="PATH",
                        help="the model's metadata (model.json; default: model.json beside MODEL.keras), embedded "
                        "in the .tflite and written as model.json + labels.txt beside --out")
    parser.add_argument("--labels", default=None, metavar="PATH",
                        help="class names, one per line (labels.txt), overriding the metadata's")
    parser.add_argument("--target", choices=TARGETS, default=None,
                        help="LiteRT: mobile GPU (default) or CPU/XNNPACK")
    parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="H,W,C",
                        help="per-sample input shape, when the model's is not fixed")
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="static batch size (default 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip the interpreter and GPU checks")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_export_command)
    return parser

"""`keras-effconv train`: the `model.fit` training recipe, resumable.

    keras-effconv train --model eff_resnet20 --conv hetconv --dataset fashion_mnist --epochs 10 --out runs/het
"""

import os

from keras_effconv.cli._args import CommandError
from keras_effconv.cli._args import conv_choices
from keras_effconv.cli._args import json_dict
from keras_effconv.cli._args import positive_float
from keras_effconv.cli._args import positive_int


def parse_size(text):
    """`"64"` -> (64, 64), `"64,48"` -> (64, 48)."""
    import argparse

    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size like 64 or 64,48, got {text!r}")
    return size


def _train_command(args):
    from keras_effconv.applications import default_conv
    from keras_effconv.training import TrainConfig
    from keras_effconv.training import train
    from keras_effconv.training.finetune import keras_application_name

    fine_tuning = args.init is not None or keras_application_name(args.model) is not None
    if not fine_tuning:
        from keras_effconv.applications import MODELS

        if args.model not in MODELS:
            raise CommandError(f"unknown --model {args.model!r}; choose one of {sorted(MODELS)} or keras:NAME")

    config = TrainConfig(
        model=args.model,
        # A model to fine-tune (--init, keras:NAME) is kept as it is unless --conv says otherwise.
        conv=args.conv or ("standard" if fine_tuning else default_conv(args.model)),
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
        precise_bn_images=args.precise_bn_images,
        keep_checkpoints=args.keep_checkpoints,
        init=args.init,
        weights=args.weights,
        image_size=list(args.image_size) if args.image_size else None,
        freeze=args.freeze,
    )
    metrics = train(config, args.out, overwrite=args.overwrite)
    print(
        f"{os.path.basename(metrics['init']) if metrics.get('init') else metrics['model']} conv={metrics['conv']} on {metrics['dataset']} ({metrics['train_images']} train images, "
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
    print(f"results in {args.out}/ (metrics.json, model.keras, model.json, labels.txt, curves.png, history.csv, "
          "checkpoints/, tensorboard/)")


def register(subparsers):
    """Adds the `train` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `train` sub-parser.
    """
    from keras_effconv.cli._args import dataset_names
    from keras_effconv.cli._args import model_names

    MODELS = model_names()  # names read without importing Keras (--help): see cli/_args.py
    DATASETS = dataset_names()

    parser = subparsers.add_parser("train", help="train a network with model.fit (resumable)")
    parser.add_argument("--model", default="eff_resnet20",
                        help=f"network (default eff_resnet20): one of {', '.join(sorted(MODELS))}, or keras:NAME "
                        "for a keras.applications network (e.g. keras:ResNet50, with --weights)")
    parser.add_argument("--conv", default=None, choices=conv_choices(),
                        help="efficient convolution (default: the network's, hetconv for eff_*, "
                        "factorized for the SIC networks factorized_*)")
    parser.add_argument("--conv-config", type=json_dict, default=None, help="method arguments as JSON")
    parser.add_argument("--dataset", default="fashion_mnist", choices=DATASETS,
                        help="training data (default fashion_mnist)")
    parser.add_argument("--data-path", default=None, help="data location (required for image_folder)")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--out", required=True, help="output directory; re-run the same command to resume")
    parser.add_argument("--subset", type=positive_int, default=None, help="use only N training images")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--learning-rate", type=positive_float, default=2e-3)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16")
    parser.add_argument("--jit-compile", action="store_true", help="XLA (always on for JAX)")
    parser.add_argument("--distribute", action="store_true",
                        help="data-parallel over all local devices (jax, tensorflow)")
    parser.add_argument("--export", action="store_true", help="also write a verified model.tflite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, metavar="MODEL.keras",
                        help="fine-tune: start from this .keras model (--conv converts it; default keeps it)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local weights file: a keras:NAME network's (with or without its top) or the network's")
    parser.add_argument("--image-size", type=parse_size, default=None, metavar="H[,W]",
                        help="resize the images (e.g. 64 or 64,48)")
    parser.add_argument("--freeze", default=None, metavar="WHAT",
                        help="backbone: train only the classifier; untouched: train the classifier and the layers "
                        "--conv replaced")
    parser.add_argument("--precise-bn-images", type=int, default=5000, metavar="N",
                        help="training images on which BatchNormalization statistics are recomputed before each "
                        "evaluation (default 5000; 0 keeps the moving averages)")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=2, metavar="N",
                        help="keep the newest N epoch checkpoints plus the best one (default 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if --out holds a finished or unfinished run")
    parser.set_defaults(handler=_train_command)
    return parser

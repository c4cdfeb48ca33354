"""`keras-effconv expand-decompose`: He et al.'s depth-wise decomposition recipe in one resumable command.

    keras-effconv expand-decompose --model shufflenet_v2_cifar --dataset fashion_mnist \\
        --expanded-epochs 9 --finetune-epochs 1 --method data --out runs/sep
"""

from keras_effconv.cli._args import dataset_names
from keras_effconv.cli._args import json_dict
from keras_effconv.cli._args import model_names
from keras_effconv.cli._args import module_constant
from keras_effconv.cli._args import positive_float
from keras_effconv.cli._args import positive_int


def _command(args):
    from keras_effconv.training import TrainConfig
    from keras_effconv.training import expand_decompose_finetune

    config = TrainConfig(
        model=args.model,
        conv="standard",
        conv_config=args.conv_config,
        dataset=args.dataset,
        data_path=args.data_path,
        epochs=args.expanded_epochs + args.finetune_epochs,
        batch_size=args.batch_size,
        subset=args.subset,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    metrics = expand_decompose_finetune(
        config,
        args.out,
        args.expanded_epochs,
        args.finetune_epochs,
        method=args.method,
        finetune_learning_rate=args.finetune_learning_rate,
        decompose_images=args.decompose_images,
        positions_per_image=args.positions_per_image,
        overwrite=args.overwrite,
    )
    print(
        f"{metrics['model']} on {metrics['dataset']}: expanded {metrics['expanded_test_accuracy']:.4f}, "
        f"decomposed ({metrics['method']}) {metrics['decomposed_test_accuracy']:.4f}, fine-tuned "
        f"{metrics['test_accuracy']:.4f} test accuracy; {metrics['macs'] / 1e6:.2f} M MACs "
        f"({metrics['standard_macs'] / 1e6:.2f} M standard, {metrics['expanded_macs'] / 1e6:.2f} M expanded)"
    )
    print(f"results in {args.out}/ (expanded/, {metrics['method']}/decomposed.keras, {metrics['method']}/finetune/, "
          f"{metrics['method']}/metrics.json)")


def register(subparsers):
    """Adds the `expand-decompose` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `expand-decompose` sub-parser.
    """
    # Read without importing Keras (`--help` must stay fast): see `_args`.
    MODELS = model_names()
    DATASETS = dataset_names()
    METHODS = module_constant("keras_effconv.training.separable", "METHODS")

    parser = subparsers.add_parser(
        "expand-decompose",
        help="train with depthwise/pointwise pairs expanded, decompose back, fine-tune (resumable)",
    )
    parser.add_argument("--model", default="shufflenet_v2_cifar", choices=sorted(MODELS),
                        help="a network with depthwise/pointwise pairs (default shufflenet_v2_cifar)")
    parser.add_argument("--conv-config", type=json_dict, default=None,
                        help='network knobs as JSON, e.g. \'{"width_multiplier": 0.5}\'')
    parser.add_argument("--dataset", default="fashion_mnist", choices=DATASETS)
    parser.add_argument("--data-path", default=None, help="data location (required for image_folder)")
    parser.add_argument("--expanded-epochs", type=positive_int, default=9)
    parser.add_argument("--finetune-epochs", type=positive_int, default=1)
    parser.add_argument("--method", default="data", choices=METHODS,
                        help="data (GSVD, multi-layer; default), svd, or channel (the baseline)")
    parser.add_argument("--out", required=True, help="output directory; re-run the same command to resume")
    parser.add_argument("--subset", type=positive_int, default=None, help="use only N training images")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--learning-rate", type=positive_float, default=2e-3)
    parser.add_argument("--finetune-learning-rate", type=positive_float, default=None,
                        help="default: a tenth of --learning-rate")
    parser.add_argument("--decompose-images", type=positive_int, default=1024,
                        help="training images for the decomposition statistics")
    parser.add_argument("--positions-per-image", type=positive_int, default=None,
                        help="random output positions per image for the statistics (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="redo every stage")
    parser.set_defaults(handler=_command)
    return parser

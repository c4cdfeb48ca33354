"""Fills the Android example's assets: the exported model with its metadata, and real test images.

    python examples/android/make_assets.py --model runs/het/model.keras    # export + 8 real test images
    python examples/android/make_assets.py --model m.keras --quantize float16
    python examples/android/make_assets.py                                   # test images only (model already there)

Writes into examples/android/app/src/main/assets/ (or --out-dir):

    model.tflite, model.json, labels.txt   with --model: `keras-effconv export` writes all three (the
                                           metadata comes from the model.json beside the .keras file,
                                           which `keras-effconv train` writes)
    samples/sample_NN_true_K.png           real test images of the model's dataset (model.json's
                                           provenance: fashion_mnist or cifar10), 8-bit PNGs as stored
                                           in the dataset; K is the true class index (a line of labels.txt)

The app preprocesses each PNG with model.json only (resize, channel order,
scale, mean, std), and shows the top-1 label, the true label and the latency.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app", "src", "main", "assets")
SAMPLE_DATASETS = ("fashion_mnist", "cifar10")


def write_samples(out_dir, dataset="fashion_mnist", count=8):
    """Writes the first `count` test images of `dataset` as `samples/sample_NN_true_K.png`; returns the paths."""
    from PIL import Image

    from keras_effconv import datasets

    if dataset not in SAMPLE_DATASETS:
        raise ValueError(
            f"sample images come from {SAMPLE_DATASETS}; for {dataset!r} copy a few of your own images into "
            f"{os.path.join(out_dir, 'samples')} named sample_NN_true_K.png (K: the line of labels.txt, from 0)"
        )
    (_, _), (images, labels) = datasets.fashion_mnist() if dataset == "fashion_mnist" else datasets.cifar10()
    samples = os.path.join(out_dir, "samples")
    os.makedirs(samples, exist_ok=True)
    for old in glob.glob(os.path.join(samples, "sample_*.png")):
        os.remove(old)
    written = []
    for i in range(count):
        path = os.path.join(samples, f"sample_{i:02d}_true_{int(np.ravel(labels[i])[0])}.png")
        Image.fromarray(np.asarray(images[i], dtype=np.uint8)).save(path)  # (28, 28) gray or (32, 32, 3) RGB
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a trained .keras file to export into the assets")
    parser.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic_int8"))
    parser.add_argument("--count", type=int, default=8, help="number of test images (default 8)")
    parser.add_argument("--dataset", default=None, choices=SAMPLE_DATASETS,
                        help="where the images come from (default: the dataset in model.json, else fashion_mnist)")
    parser.add_argument("--out-dir", default=ASSETS)
    args = parser.parse_args(argv)

    os.makedirs(args.out_dir, exist_ok=True)
    if args.model:
        from keras_effconv.cli import main as cli

        status = cli(["export", args.model, "--out", os.path.join(args.out_dir, "model.tflite"),
                      "--quantize", args.quantize])
        if status:
            return status
    dataset, names = args.dataset, None
    meta_path = os.path.join(args.out_dir, "model.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        dataset, names = dataset or (meta.get("provenance") or {}).get("dataset"), meta.get("class_names")
    try:
        written = write_samples(args.out_dir, dataset or "fashion_mnist", args.count)
    except (ValueError, OSError) as error:
        print(f"make_assets: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} test images to {os.path.dirname(written[0])}")
    from keras_effconv.datasets.prepare import CIFAR10_CLASSES
    from keras_effconv.datasets.prepare import FASHION_MNIST_CLASSES

    own = FASHION_MNIST_CLASSES if (dataset or "fashion_mnist") == "fashion_mnist" else CIFAR10_CLASSES
    if names != own:
        print(f"note: the model's class names (labels.txt) are not {dataset or 'fashion_mnist'}'s: the app's "
              "'true' labels (K in sample_NN_true_K.png, a line of labels.txt) will not match the images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fashion-MNIST from local files only (never downloads)."""

import gzip
import os

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def _candidate_dirs(path):
    if path is not None:
        return [path]
    return [
        os.environ.get("KERAS_EFFCONV_FASHION_MNIST", ""),
        DEBIAN_DIR,
        os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"),
    ]


def _read_idx(filename):
    with gzip.open(filename, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(path=None):
    """Loads the real Fashion-MNIST (60k train / 10k test) from local files.

    Looks in `path`, else `$KERAS_EFFCONV_FASHION_MNIST`, the Debian package
    `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`) and the
    Keras cache `~/.keras/datasets/fashion-mnist`.

    Args:
        path: optional directory holding the four `*-ubyte.gz` files.

    Returns:
        `((x_train, y_train), (x_test, y_test))` as uint8 arrays, images
        `(N, 28, 28)`, like `keras.datasets.fashion_mnist.load_data()`.

    Raises:
        FileNotFoundError: if no directory has the files; the message says
            how to install them (`apt-get install dataset-fashion-mnist`).

    Example:

    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist()  # doctest: +SKIP
    """
    for directory in _candidate_dirs(path):
        if directory and all(os.path.exists(os.path.join(directory, f)) for f in FILES.values()):
            arrays = {k: _read_idx(os.path.join(directory, f)) for k, f in FILES.items()}
            return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    raise FileNotFoundError(
        "Fashion-MNIST was not found locally (looked in "
        f"{[d for d in _candidate_dirs(path) if d]}). Install it with "
        "`sudo apt-get install dataset-fashion-mnist`, or pass `path=` a "
        "directory with the four *-ubyte.gz files."
    )

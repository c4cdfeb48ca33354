"""CIFAR-10 from a local copy or Keras' cache; downloads only when asked to."""

import os
import pickle

import numpy as np

import keras

_KERAS_ARCHIVE = "cifar-10-batches-py-target_archive"
_BATCHES = "cifar-10-batches-py"


def _keras_datasets_dir():
    # Keras' own cache location: $KERAS_HOME, else ~/.keras.
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")


def _candidate_dirs(path):
    if path is not None:
        return [path, os.path.join(path, _BATCHES)]
    datasets = _keras_datasets_dir()
    env = os.environ.get("KERAS_EFFCONV_CIFAR10", "")
    return [
        env,
        os.path.join(env, _BATCHES) if env else "",
        os.path.join(datasets, "cifar-10-batches-py-target", _BATCHES),
        os.path.join(datasets, _BATCHES),
    ]


def _load_batch(filename):
    with open(filename, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[b"labels"], dtype=np.uint8).reshape(-1, 1)
    return data, labels


def _has_batches(directory):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return bool(directory) and all(os.path.exists(os.path.join(directory, n)) for n in names)


def cifar10(path=None, download=False):
    """Loads CIFAR-10 (50k train / 10k test) without touching the network by default.

    Looks for the extracted `cifar-10-batches-py` folder in `path`, else
    `$KERAS_EFFCONV_CIFAR10` and Keras' cache (`~/.keras/datasets`); when
    Keras' own downloaded archive is cached, `keras.datasets.cifar10` reads
    it (offline). With `download=True` and nothing local, Keras downloads it.

    Args:
        path: optional directory holding `data_batch_1..5` and `test_batch`
            (or their `cifar-10-batches-py` parent).
        download: allow `keras.datasets.cifar10.load_data()` to download.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, uint8 images
        `(N, 32, 32, 3)` and labels `(N, 1)`, as `keras.datasets.cifar10`.

    Raises:
        FileNotFoundError: if no local copy exists and `download` is False.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = cifar10()  # doctest: +SKIP
    """
    for directory in _candidate_dirs(path):
        if _has_batches(directory):
            parts = [_load_batch(os.path.join(directory, f"data_batch_{i}")) for i in range(1, 6)]
            x_train = np.concatenate([p[0] for p in parts])
            y_train = np.concatenate([p[1] for p in parts])
            return (x_train, y_train), _load_batch(os.path.join(directory, "test_batch"))
    archive_cached = path is None and os.path.exists(os.path.join(_keras_datasets_dir(), _KERAS_ARCHIVE))
    if archive_cached or download:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        if x_train.shape[-1] != 3:  # keras follows image_data_format; we always return NHWC
            x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
        return (x_train, y_train), (x_test, y_test)
    raise FileNotFoundError(
        "CIFAR-10 was not found locally (looked in "
        f"{[d for d in _candidate_dirs(path) if d]}). Pass `path=` an extracted "
        "cifar-10-python.tar.gz, set $KERAS_EFFCONV_CIFAR10, or call "
        "cifar10(download=True) on a machine with network access."
    )

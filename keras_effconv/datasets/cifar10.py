"""CIFAR-10 from a local copy or Keras' cache; downloads only when asked to.

Both distributions of the data set are read, and neither can run code:

- the binary version (`cifar-10-batches-bin`: `data_batch_1.bin` ...
  `data_batch_5.bin`, `test_batch.bin`), records of 1 label byte and 3072
  pixel bytes (1024 red, 1024 green, 1024 blue, row-major), is parsed as
  bytes, with no unpickling at all; it is preferred where both are present;
- the Python version (`cifar-10-batches-py`: `data_batch_1` ... `test_batch`),
  pickled dicts, is read by `_BatchUnpickler`, which admits only the globals
  that rebuild a numpy array. A file asking for anything else (e.g.
  `os.system` through `__reduce__`) is refused before that object is
  built, with a `pickle.UnpicklingError` (also a `ValueError`) naming the file
  and the refused global.

Only a hash-checked copy of Keras' own download (`~/.keras/datasets`) is
left to `keras.datasets.cifar10`, whose loader is restricted the same way.
"""

import importlib
import os
import pickle

import numpy as np

import keras

_KERAS_ARCHIVE = "cifar-10-batches-py-target_archive"
_BATCHES = "cifar-10-batches-py"
_BINARY_BATCHES = "cifar-10-batches-bin"
_RECORD_BYTES = 1 + 32 * 32 * 3
_NUM_CLASSES = 10

# (module, name) -> (modules to try, attribute): numpy 2 moved `numpy.core`
# to `numpy._core`; files written under either name load under both.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): (("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): (("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct"),
    ("numpy", "ndarray"): (("numpy",), "ndarray"),
    ("numpy", "dtype"): (("numpy",), "dtype"),
    # numpy's array form under pickle protocol 5 (Python's default since 3.8).
    ("numpy.core.numeric", "_frombuffer"): (("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): (("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer"),
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A CIFAR-10 batch file asked to load a global that is not part of the format.

    A `ValueError` too, so that callers reporting bad input in one line (the
    command line) report this one as well.
    """


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's Python-format batches: dicts, lists, bytes, numbers and numpy arrays only.

    Builtin containers, strings and numbers come from pickle opcodes that
    never call `find_class`; every global goes through it, and only numpy's
    array reconstruction (`_reconstruct`, `ndarray`, `dtype`, or
    `_frombuffer` under protocol 5) and Python 3's latin-1 encoding of
    bytes under protocols 0-2 are admitted.
    """

    def __init__(self, file, filename):
        super().__init__(file, encoding="bytes")
        self.filename = filename

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            # Python 3 pickles bytes as `_codecs.encode(text, "latin1")` under
            # protocols 0-2; no other codec is admitted.
            return self._latin1_encode
        allowed = _NUMPY_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"{self.filename}: refused to load the global '{module}.{name}': a CIFAR-10 batch holds only "
                "numpy arrays, lists, dicts and strings (the file is corrupt or malicious)"
            )
        modules, attribute = allowed
        for candidate in modules:
            try:
                return getattr(importlib.import_module(candidate), attribute)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"{self.filename}: this numpy has no '{module}.{name}'")

    def _latin1_encode(self, text, encoding="utf-8"):
        if encoding != "latin1" or not isinstance(text, str):
            raise UnsafePickleError(f"{self.filename}: refused '_codecs.encode' with encoding {encoding!r}")
        return text.encode("latin1")


def _keras_datasets_dir():
    # Keras' own cache location: $KERAS_HOME, else ~/.keras.
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")


def _candidate_dirs(path):
    if path is not None:
        roots = [path]
    else:
        env = os.environ.get("KERAS_EFFCONV_CIFAR10", "")
        datasets = _keras_datasets_dir()
        roots = ([env] if env else []) + [os.path.join(datasets, "cifar-10-batches-py-target"), datasets]
    directories = []
    for root in roots:
        directories += [root, os.path.join(root, _BINARY_BATCHES), os.path.join(root, _BATCHES)]
    return directories


def _batch_names(binary):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return [f"{n}.bin" for n in names] if binary else names


def _has_batches(directory, binary):
    return bool(directory) and all(os.path.isfile(os.path.join(directory, n)) for n in _batch_names(binary))


def _checked_labels(filename, labels, count):
    labels = np.asarray(labels)
    valid = labels.shape == (count,) and labels.dtype.kind in "ui"
    if not valid or (count and not 0 <= labels.min() <= labels.max() < _NUM_CLASSES):
        raise ValueError(f"{filename} is not a CIFAR-10 batch: expected {count} labels in [0, {_NUM_CLASSES})")
    return labels.astype(np.uint8).reshape(-1, 1)


def _load_binary_batch(filename):
    raw = np.fromfile(filename, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD_BYTES:
        raise ValueError(
            f"{filename} is not a CIFAR-10 binary batch: {raw.size} bytes is not a multiple of "
            f"{_RECORD_BYTES}-byte records (1 label + 3072 pixels)"
        )
    records = raw.reshape(-1, _RECORD_BYTES)
    labels = _checked_labels(filename, records[:, 0], len(records))
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_python_batch(filename):
    with open(filename, "rb") as f:
        try:
            batch = _BatchUnpickler(f, filename).load()
        except UnsafePickleError:
            raise
        except Exception as error:  # noqa: BLE001 -- truncated or garbled files fail in many ways
            raise ValueError(f"{filename} is not a CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if isinstance(batch, dict):
        # Python 2 wrote the keys as bytes; a file pickled by Python 3 may have str keys.
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "ui" or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{filename} is not a CIFAR-10 batch: expected a dict with b'data' of shape (N, 3072)")
    labels = _checked_labels(filename, batch.get("labels"), len(data))
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_directory(directory, binary):
    load = _load_binary_batch if binary else _load_python_batch
    train_name, test_name = _batch_names(binary)[:5], _batch_names(binary)[5]
    parts = [load(os.path.join(directory, name)) for name in train_name]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return (x_train, y_train), load(os.path.join(directory, test_name))


def cifar10(path=None, download=False):
    """Loads CIFAR-10 (50k train / 10k test) without touching the network by default.

    Looks in `path`, else `$KERAS_EFFCONV_CIFAR10` and Keras' cache
    (`~/.keras/datasets`), for the binary version (`data_batch_1.bin` ...,
    preferred: read as bytes) or the Python version (`data_batch_1` ...,
    read with an unpickler that admits numpy arrays only, never code); when
    Keras' own downloaded archive is cached, `keras.datasets.cifar10` reads
    it (offline). With `download=True` and nothing local, Keras downloads it.

    Args:
        path: optional directory holding the batches, or the parent of
            `cifar-10-batches-bin` / `cifar-10-batches-py`.
        download: allow `keras.datasets.cifar10.load_data()` to download.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, uint8 images
        `(N, 32, 32, 3)` and labels `(N, 1)`, as `keras.datasets.cifar10`.

    Raises:
        FileNotFoundError: if no local copy exists and `download` is False.
        ValueError: if a batch file is not a CIFAR-10 batch; a Python-format
            file that asks to load anything but numpy arrays raises
            `UnsafePickleError` (a `pickle.UnpicklingError` and
            `ValueError`) naming the file and the global, and runs nothing.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = cifar10()  # doctest: +SKIP
    """
    for directory in _candidate_dirs(path):
        for binary in (True, False):
            if _has_batches(directory, binary):
                return _load_directory(directory, binary)
    archive_cached = path is None and os.path.exists(os.path.join(_keras_datasets_dir(), _KERAS_ARCHIVE))
    if archive_cached or download:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        if x_train.shape[-1] != 3:  # keras follows image_data_format; we always return NHWC
            x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
        return (x_train, y_train), (x_test, y_test)
    raise FileNotFoundError(
        "CIFAR-10 was not found locally (looked in "
        f"{[d for d in _candidate_dirs(path) if d]}). Pass `path=` an extracted "
        "cifar-10-binary.tar.gz or cifar-10-python.tar.gz, set $KERAS_EFFCONV_CIFAR10, or call "
        "cifar10(download=True) on a machine with network access."
    )

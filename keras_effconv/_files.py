"""Files the package reads and writes: `.keras` models in, results written atomically."""

import contextlib
import os
import uuid
import zipfile


def load_keras_model(path, argument="model", safe_mode=True):
    """Loads a `.keras` file (uncompiled), with one-line errors naming the file.

    Keras' own `load_model` says "File not found" for a file that exists but
    is not a `.keras` archive, and raises a bare `KeyError` for a zip without
    a model in it.

    Args:
        path: path of the `.keras` file.
        argument: the name of the argument or command-line operand the path
            came from, for messages.
        safe_mode: passed to `keras.saving.load_model`: when True (the
            default), a file with Python code in it (a `Lambda`) is refused.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: if `path` does not end in `.keras`, or the file is not a
            valid `.keras` file (not a zip archive, or no model in it), or
            Keras refuses it (e.g. unsafe content with `safe_mode=True`).
        FileNotFoundError: if `path` does not exist.
        OSError: if the file cannot be read.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"Invalid value for argument `{argument}`: expected a .keras file. Received: {argument}={path!r}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"{argument} file not found: {path}")
    # Checked here: Keras reports both cases as "File not found" or KeyError.
    try:
        with zipfile.ZipFile(path) as archive:
            has_config = "config.json" in archive.namelist()
    except (zipfile.BadZipFile, IsADirectoryError):
        raise ValueError(f"{path} is not a valid .keras file (not a zip archive)") from None
    if not has_config:
        raise ValueError(f"{path} is not a valid .keras file (no config.json in the archive)")
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)


def existing_directory(path):
    """The directory `path` would be written to; OSError if it does not exist."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise OSError(f"directory of `path` does not exist: {directory}")
    return directory


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`, moved onto `path` only on success.

    The temporary name keeps `path`'s extension (Keras' `model.save` and
    matplotlib's `savefig` go by it). If the block raises, the temporary file
    is removed and an existing file at `path` is left as it was.

    Raises:
        OSError: if the directory of `path` does not exist.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    # Not mkstemp: its 0600 file would become the result's permissions.
    tmp = os.path.join(
        existing_directory(path), f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{os.path.splitext(name)[1]}"
    )
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

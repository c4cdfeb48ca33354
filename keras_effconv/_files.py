"""Writing result files so that a failure never leaves a partial or missing file."""

import contextlib
import os
import uuid


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

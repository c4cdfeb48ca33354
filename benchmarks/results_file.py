"""Writing a benchmark's markdown results file: one helper for every benchmark script."""

import os
import sys
import tempfile

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(text, path):
    """Writes `text` to `path` atomically (a temporary file beside it, then a rename).

    An interrupted or failed run leaves the previous results in place and no
    temporary file behind.

    Args:
        text: the markdown to write.
        path: the results file; its directory is created if missing.

    Returns:
        `path`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp creates the file 0600; a results file gets the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_results(text, name, out=None):
    """Prints `text` and writes it to `out` (default `benchmarks/results/<name>`) with `write_results`.

    Args:
        text: the markdown to write.
        name: the file name under `benchmarks/results/` when `out` is None.
        out: an explicit path, or None.

    Returns:
        The path written.
    """
    print(text)
    out = write_results(text, out or os.path.join(RESULTS_DIR, name))
    print(f"wrote {out}", file=sys.stderr)
    return out

"""Writing a benchmark's markdown results file: one helper for the benchmark scripts."""

import os
import sys

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def save_results(text, name, out=None):
    """Prints `text` and writes it to `out` (default `benchmarks/results/<name>`) atomically.

    Args:
        text: the markdown to write.
        name: the file name under `benchmarks/results/` when `out` is None.
        out: an explicit path, or None.

    Returns:
        The path written.
    """
    out = out or os.path.join(RESULTS_DIR, name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    print(text)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(out + ".tmp", out)  # an interrupted run leaves the previous results in place
    print(f"wrote {out}", file=sys.stderr)
    return out

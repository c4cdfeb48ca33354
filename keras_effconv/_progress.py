"""Progress of long operations, shown with Keras' own `keras.utils.Progbar`.

One `verbose` convention for every long-running function (decompositions,
`export_litert`, `compare_convs`, the benchmarks), with `model.fit`'s values:

- `0`: silent.
- `1`: a title line per stage, then a progress bar counting its steps
  (layers, batches, runs, stages) with the elapsed time and an ETA; lines
  naming sub-steps are printed above the bar.
- `2`: the same lines without the animated bar: one summary line when a
  stage ends (for log files).
- `"auto"` (the default of the functions that take `verbose`): `1` when a
  person watches, i.e. standard output is a terminal or a Jupyter kernel
  runs, and `0` otherwise, so scripts writing to a file, doctests and test
  runs stay quiet. (`model.fit`'s `"auto"` means 1 whatever the output is;
  these functions are also called inside pipelines and tests, where a bar
  in a captured stream is noise.) `True`/`False` are accepted as 1/0.

Output goes where Keras' goes: standard output, or absl logging after
`keras.config.disable_interactive_logging()`.

This module sits at the bottom of the package: it imports only
`_validation`, and Keras when a bar is shown.
"""

import functools
import sys

from keras_effconv import _validation

_EXPECTED = (
    "expected 0 (silent), 1 (progress bar), 2 (one line per stage) or 'auto' "
    "(1 when standard output is a terminal or a notebook, else 0)"
)


def interactive():
    """Whether a person is likely watching standard output (a terminal or a Jupyter kernel)."""
    stdout = sys.stdout
    isatty = getattr(stdout, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed or detached stream
        tty = False
    return tty or "ipykernel" in sys.modules


def check_verbose(verbose, name="verbose"):
    """Validates a `verbose` argument and resolves `"auto"`.

    Args:
        verbose: 0, 1, 2, `"auto"`, or a boolean (1/0).
        name: the argument's name, for the message.

    Returns:
        0, 1 or 2 (`"auto"` is 1 when `interactive()`, else 0).

    Raises:
        ValueError: for any other value, naming the argument.

    Example:

    >>> check_verbose(2), check_verbose(False)
    (2, 0)
    >>> check_verbose("auto")  # doctests capture standard output
    0
    """
    if isinstance(verbose, str) and verbose == "auto":
        return 1 if interactive() else 0
    if isinstance(verbose, bool):
        return int(verbose)
    if _validation.is_int(verbose) and 0 <= verbose <= 2:
        return int(verbose)
    raise _validation.invalid_value(name, _EXPECTED, verbose)


def write_line(message):
    """Prints one line the way Keras prints its progress (stdout, or absl logging)."""
    import keras

    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        from absl import logging

        logging.info(message)


# Stages whose bar is drawn and not finished, innermost last (see `closes_bars`).
_OPEN = []


def closes_bars(function):
    """Decorates a function that shows progress: if it raises, its unfinished bars end their line.

    Without it a bar left mid-line would run into the traceback or the next
    output. The signature, docstring and module are the function's own.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        depth = len(_OPEN)
        try:
            return function(*args, **kwargs)
        except BaseException:
            while len(_OPEN) > depth:
                _OPEN[-1].abandon()
            raise

    return wrapper


def _raw(text):
    """Writes terminal control text (line clearing) where Keras writes its bar."""
    import keras

    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(text)
        sys.stdout.flush()


class Progress:
    """One stage of a long operation: a title line and a `keras.utils.Progbar`.

    Silent (no output, no Keras import) when `verbose` resolves to 0. Use it
    as a context manager, or call `finish()` when the stage is done.

    Args:
        title: the line printed first, e.g. `"depthwise_decompose: fitting
            13 layers on data"`.
        target: the number of steps, or None if unknown (the bar then
            counts up, and the total is set when it finishes).
        verbose: 0, 1, 2, `"auto"` or a boolean (see the module docstring).
        unit_name: what a step is (`"layer"`, `"batch"`, `"stage"`), shown
            as time per step.

    Example:

    >>> with Progress("counting", 3, verbose=0) as progress:
    ...     total = sum(progress.iterate([1, 2, 3]))
    >>> total, progress.count
    (6, 3)
    """

    def __init__(self, title, target, verbose="auto", unit_name="step"):
        self.verbose = check_verbose(verbose)
        self.target = target
        self.count = 0
        self._bar = None
        self._done = False
        if self.verbose:
            import keras

            if _OPEN and _OPEN[-1].verbose == 1:
                _raw("\r\x1b[2K")  # a stage inside another: the outer bar is drawn again when it advances
            write_line(title)
            _OPEN.append(self)
            # interval=0: steps here are seconds apart, so every one is drawn.
            self._bar = keras.utils.Progbar(target, verbose=self.verbose, interval=0.0, unit_name=unit_name)
            if self.verbose == 1:
                self._bar.update(0)

    def advance(self, steps=1):
        """Counts `steps` more finished steps."""
        self.count += steps
        if self._bar is not None:
            self._bar.update(self.count, finalize=False)

    def iterate(self, iterable):
        """Yields the items of `iterable`, counting one step after each is processed."""
        for item in iterable:
            yield item
            self.advance()

    def log(self, message, redraw=True):
        """Prints `message` on its own line above the bar (nothing when silent).

        With `redraw=False` the bar is drawn again only at the next step,
        so that output of the step itself (e.g. `model.fit`'s) starts on a
        line of its own.
        """
        if not self.verbose:
            return
        if self.verbose == 1 and not self._done:
            _raw("\r\x1b[2K")  # clear the bar's line; it is drawn again below the message
        write_line(message)
        if redraw and self.verbose == 1 and not self._done:
            self._bar.update(self.count, finalize=False)

    def _close(self):
        self._done = True
        if self in _OPEN:
            _OPEN.remove(self)

    def finish(self):
        """Ends the stage: the bar shows its final count and time, on a line of its own."""
        if self._done:
            return
        self._close()
        if self._bar is not None:
            if self._bar.target is None:
                self._bar.target = max(self.count, 1)
            self._bar.update(self.count, finalize=True)

    def abandon(self):
        """Ends an interrupted stage: closes the bar's line so that what follows starts on a new one."""
        if self._done:
            return
        self._close()
        if self.verbose == 1:
            _raw("\n")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self.abandon()
        return False

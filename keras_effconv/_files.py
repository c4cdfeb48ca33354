"""Files the package reads and writes: `.keras` models in, results written atomically.

Temporary files never outlive a run: `atomic_path` and `temporary_directory`
remove their own on success, on an exception and (inside `interruptible`) on
SIGTERM/SIGINT, and remove those that a killed run (SIGKILL, power loss) left
behind the next time they are used: every temporary name carries the pid of
its process, and one whose process is gone is stale.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
import zipfile
import zlib

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the pid alone marks staleness.
    fcntl = None

# effconv-<kind>-<pid>-<random>, in the system temporary directory.
_TEMP_DIRECTORY = re.compile(r"^effconv-[a-z0-9]+-(\d+)-")
_LOCK_NAME = ".lock"


def _reason(error, first_line=True):
    text = str(error).strip() or type(error).__name__
    # Keras appends the whole object config ("Full object config: {...}") to some messages.
    text = text.split(" Full object config:")[0]
    return text.splitlines()[0] if first_line else text


def load_keras_model(path, argument="model", safe_mode=True):
    """Loads a `.keras` file (uncompiled), with one-line errors naming the file.

    A missing file and a corrupt one are told apart: Keras' own `load_model`
    says "File not found" for a file that exists but is not a `.keras`
    archive, raises a bare `KeyError` for a zip without a model in it, and
    `BadZipFile`, `JSONDecodeError` or h5py's `OSError` (none naming the
    file) for damaged contents.

    Args:
        path: path of the `.keras` file.
        argument: the name of the argument or command-line operand the path
            came from, for messages.
        safe_mode: passed to `keras.saving.load_model`: when True (the
            default), a file with Python code in it (a `Lambda`) is refused.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: if `path` does not end in `.keras`; if the file is not a
            valid `.keras` file (not a zip archive, no model in it, or corrupt:
            a damaged archive, config or weights), naming the file; or if
            Keras refuses it (e.g. unsafe content with `safe_mode=True`),
            with Keras' reason after the file name.
        TypeError: Keras cannot re-create an object in it (e.g. a custom
            class that is not registered), naming the file.
        FileNotFoundError: if `path` does not exist.
        OSError: if the file cannot be read (permissions, I/O error).
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"Invalid value for argument `{argument}`: expected a .keras file. Received: {argument}={path!r}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"{argument} file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is not a valid .keras file (a directory)")
    # Checked here: Keras reports these cases as "File not found", KeyError or JSONDecodeError.
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ValueError(f"{path} is not a valid .keras file (no config.json in the archive)")
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, EOFError):
        with open(path, "rb") as f:
            damaged = f.read(4) == b"PK\x03\x04"  # starts as a zip archive: damaged, e.g. a cut-off copy
        if damaged:
            raise ValueError(f"{path} is a corrupt .keras file (a damaged or truncated zip archive)") from None
        raise ValueError(f"{path} is not a valid .keras file (not a zip archive)") from None
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = _reason(error)
        raise ValueError(f"{path} is a corrupt .keras file (config.json unreadable: {reason})") from None
    except OSError as error:
        raise OSError(error.errno, f"cannot read {argument} file {path}: {error.strerror or error}") from None
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, json.JSONDecodeError) as error:
        reason = f"{type(error).__name__}: {_reason(error)}"
        raise ValueError(f"{path} is a corrupt .keras file ({reason})") from None
    except OSError as error:
        if error.errno is None:  # h5py: the weights inside the archive are damaged
            raise ValueError(f"{path} is a corrupt .keras file (weights unreadable: {_reason(error)})") from None
        raise OSError(error.errno, f"cannot read {argument} file {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"cannot load {path}: {_reason(error, first_line=False)}") from error
    except TypeError as error:
        raise TypeError(f"cannot load {path}: {_reason(error, first_line=False)}") from error


def existing_directory(path, argument="path"):
    """The directory `path` would be written to; OSError (naming `argument`) if it does not exist."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise OSError(f"directory of `{argument}` does not exist: {directory}")
    return directory


def check_output_path(path, extension, argument="path"):
    """Checks, before any work starts, that a result can be written to `path`.

    Args:
        path: the file to be written (str or path-like).
        extension: the required extension, e.g. `".tflite"`.
        argument: the argument or option the path came from, for messages.

    Returns:
        `path` as a string.

    Raises:
        ValueError: if `path` does not end in `extension` or is an existing
            directory.
        OSError: if its directory does not exist or is not writable.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"Invalid value for argument `{argument}`: {path} is a directory, not a {extension} file.")
    if not path.endswith(extension):
        raise ValueError(
            f"Invalid value for argument `{argument}`: expected a {extension} file. Received: {argument}={path!r}"
        )
    directory = existing_directory(path, argument)
    # os.access answers for the real uid, as the later write will run.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"directory of `{argument}` is not writable: {directory}")
    return path


def pid_alive(pid):
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(directory, name_pattern, include_this_process=False):
    """Removes `atomic_path` temporaries left in `directory` by processes that are gone.

    Args:
        directory: the folder to clean (missing or unreadable: nothing done).
        name_pattern: a regular expression for the target names whose
            temporaries to remove (e.g. `re.escape("model.keras")`).
        include_this_process: also remove this process's own temporaries
            (for a caller that knows none of its writes is in progress).
    """
    # atomic_path's temporary names: `.NAME.<pid>-<hex>.tmp<ext>`.
    pattern = re.compile(r"\.(?:" + name_pattern + r")\.(\d+)-[0-9a-f]+\.tmp(?:\.[^.]*)?")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if not match:
            continue
        pid = int(match.group(1))
        if include_this_process if pid == os.getpid() else not pid_alive(pid):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, entry))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`, moved onto `path` only on success.

    The temporary name, `.NAME.<pid>-<random>.tmp.EXT`, keeps `path`'s
    extension (Keras' `model.save` and matplotlib's `savefig` go by it). If
    the block raises, the temporary file is removed and an existing file at
    `path` is left as it was. Temporaries of the same `path` left by killed
    processes are removed first.

    Raises:
        OSError: if the directory of `path` does not exist.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    directory = existing_directory(path)
    remove_stale_temporaries(directory, re.escape(name))
    # Not mkstemp: its 0600 file would become the result's permissions.
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{os.path.splitext(name)[1]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _stale(path, pid):
    if pid == os.getpid() or pid_alive(pid):
        return False
    # The pid may belong to another pid namespace sharing this temporary
    # directory (containers): a live owner still holds the directory's lock.
    if fcntl is None:
        return True
    try:
        fd = os.open(os.path.join(path, _LOCK_NAME), os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temporary_directories(root=None):
    """Removes `effconv-*` directories that killed processes left in `root`.

    Args:
        root: the directory to clean (default: the system temporary
            directory, `tempfile.gettempdir()`).

    Returns:
        The removed paths.
    """
    root = root or tempfile.gettempdir()
    removed = []
    try:
        entries = os.listdir(root)
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_DIRECTORY.match(entry)
        path = os.path.join(root, entry)
        if match and os.path.isdir(path) and not os.path.islink(path) and _stale(path, int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def temporary_directory(kind):
    """Yields a new `effconv-<kind>-<pid>-*` directory; removed afterwards, whatever happened.

    Stale directories of killed runs are removed first. The directory holds a
    lock while in use, so a process in another pid namespace never takes it
    for stale.

    Args:
        kind: a lower-case word naming the user (`"export"`, `"worker"`).

    Yields:
        The directory's absolute path.
    """
    remove_stale_temporary_directories()
    path = tempfile.mkdtemp(prefix=f"effconv-{kind}-{os.getpid()}-")
    lock = None
    try:
        if fcntl is not None:
            lock = os.open(os.path.join(path, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(path, ignore_errors=True)


class _Interrupted(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def interruptible():
    """Makes SIGTERM and SIGINT end the block through its `finally` clauses.

    By default SIGTERM ends a Python process at once, leaving its temporary
    files behind. Inside this block it raises an exception instead, so every
    `atomic_path`, `temporary_directory` and `subprocess.run` (which kills its
    child) cleans up; further signals are ignored during that cleanup. Then
    the previous handlers are restored and the signal is delivered again, so
    the process ends as it would have without the block (SIGTERM: killed by
    SIGTERM; SIGINT: `KeyboardInterrupt`).

    Only default handlers are replaced: a handler the application installed
    stays in charge. Outside the main thread (where Python cannot install
    handlers) the block runs unchanged.
    """
    replaced = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            for number in replaced:
                signal.signal(number, signal.SIG_IGN)
            raise _Interrupted(signum)

        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if previous in (signal.SIG_DFL, signal.default_int_handler):
                replaced[number] = previous
                signal.signal(number, handler)
    received = None
    try:
        yield
    except _Interrupted as interrupted:
        received = interrupted.signum
    finally:
        for number, previous in replaced.items():
            signal.signal(number, previous)
    if received is not None:
        if replaced[received] is signal.default_int_handler:
            raise KeyboardInterrupt from None
        signal.raise_signal(received)
        raise SystemExit(128 + received) from None  # only if the signal did not end the process

"""Running a worker in its own Python process: arguments as JSON in, result as JSON out.

Used by the LiteRT conversion (`export/_convert.py`), quantization-aware
training (`export/_qat.py`) and the GPU check (`export/_gpu_worker.py`), which
need a process of their own (TensorFlow's converter leaks memory per call,
tfmot switches its process to legacy Keras, LiteRT's GPU accelerator crashes
where TensorFlow is loaded).

The parent calls `run_worker(...)`; the worker's `__main__` calls
`worker_main(function)`. The worker is started as `python -I` from an empty
temporary directory: neither the user's working directory (where a `csv.py` or
`json.py` would shadow the standard library) nor the user site-packages nor
`PYTHONPATH` is on its `sys.path`, so it imports only what is installed.
That directory (`effconv-worker-<pid>-*`) is also the worker's `TMPDIR`, so
everything the worker writes goes where the parent removes it; and on Linux
the worker dies with its parent (`PR_SET_PDEATHSIG`), so a killed export
leaves no converter running on to write its file later.

`worker_main` (the worker side) imports only the standard library:
`_gpu_worker.py` loads this module by path, because importing the package
would load TensorFlow. `run_worker` (the parent side) uses the package's
`_files`.
"""

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import traceback

# TensorFlow/absl start-up chatter that is never the reason a worker failed.
_LOG_NOISE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d"  # absl: I0000 00:00:1796036676.003113 4102 port.cc:153] ...
    r"|cudart_stub|absl::InitializeLog|rebuild TensorFlow with the appropriate compiler flags"
    r"|TF_ENABLE_ONEDNN_OPTS|^To enable the following instructions"
)


class WorkerError(RuntimeError):
    """A worker process failed; the message says how, in one line.

    Attributes:
        detail: what went wrong, without the worker's description (the
            worker's own error, "killed by signal SIGKILL", ...).
        kind: `"error"` (the worker reported an exception), `"signal"`,
            `"exit"` (a non-zero exit status without a reported error, or
            no result) or `"timeout"`.
        returncode: the exit status (negative: the signal), None on timeout.
        stdout: what the worker printed to stdout.
    """

    def __init__(self, message, detail, kind, returncode=None, stdout=""):
        super().__init__(message)
        self.detail = detail
        self.kind = kind
        self.returncode = returncode
        self.stdout = stdout


def _last_error_line(stderr):
    for line in reversed((stderr or "").strip().splitlines()):
        line = line.strip()
        if line and not _LOG_NOISE.search(line):
            return line
    return ""


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _text(output):
    # subprocess.run's TimeoutExpired carries bytes even in text mode.
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def run_worker(args, description, module=None, script=None, timeout=None, keras_backend="tensorflow", env=None):
    """Runs a worker module or script on `args` in an isolated Python process.

    The worker is started as `[sys.executable, "-I", "-m", module, ARGS.json]`
    (or `[sys.executable, "-I", script, ARGS.json]`) with a fresh temporary
    directory as its working directory and `TMPDIR`; `args` gets a
    `"result_path"` entry there, where the worker (`worker_main`) writes its
    JSON result, and the parent's pid (`"parent_pid"`), with which the worker
    dies. The directory is removed afterwards, whatever happened (stale ones
    of killed parents on the next call). File paths inside
    `args` must be absolute: the worker does not run in the caller's
    working directory.

    Args:
        args: JSON-serializable dict of worker arguments.
        description: what the worker does, for messages
            (e.g. `"LiteRT conversion"`).
        module: the worker's module name (`keras_effconv.export._convert`).
        script: absolute path of a worker script, instead of `module`.
        timeout: seconds before the worker is killed, or None.
        keras_backend: `KERAS_BACKEND` of the worker (None keeps the
            caller's environment value).
        env: extra environment variables for the worker.

    Returns:
        The worker's result dict.

    Raises:
        WorkerError: if the worker reported an error (its message), was
            killed by a signal (named), exited with a non-zero status or
            without a result (the last line of its stderr that is not a
            TensorFlow log line), or ran past `timeout`.
    """
    if (module is None) == (script is None):
        raise ValueError("run_worker needs exactly one of `module` and `script`.")
    if script is not None and not os.path.isabs(script):
        raise ValueError(f"`script` must be an absolute path. Received: script={script!r}")
    child_env = dict(os.environ)
    if keras_backend is not None:
        child_env["KERAS_BACKEND"] = keras_backend
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child_env.update(env or {})
    from keras_effconv._files import temporary_directory

    with temporary_directory("worker") as work:
        child_env["TMPDIR"] = work
        args = dict(args, result_path=os.path.join(work, "result.json"), parent_pid=os.getpid())
        args_path = os.path.join(work, "args.json")
        with open(args_path, "w") as f:
            json.dump(args, f)
        target = ["-m", module] if module is not None else [script]
        try:
            proc = subprocess.run(
                [sys.executable, "-I", *target, args_path],
                cwd=work,
                env=child_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            detail = f"did not finish within {timeout:g} s"
            raise WorkerError(
                f"the {description} {detail}", detail, "timeout", stdout=_text(error.stdout)
            ) from None
        result = None
        if os.path.exists(args["result_path"]):
            try:
                with open(args["result_path"]) as f:
                    result = json.load(f)
            except ValueError:
                result = None  # a worker killed while writing it
        if isinstance(result, dict) and "error" in result:
            kind, detail = "error", str(result["error"])
        elif proc.returncode < 0:
            kind, detail = "signal", f"killed by signal {_signal_name(-proc.returncode)}"
        elif proc.returncode != 0 or not isinstance(result, dict):
            line = _last_error_line(proc.stderr)
            status = f"exit status {proc.returncode}" + ("" if proc.returncode else " without a result")
            kind, detail = "exit", f"{line} ({status})" if line else status
        else:
            return result
        raise WorkerError(
            f"{description} failed: {detail}", detail, kind, returncode=proc.returncode, stdout=proc.stdout or ""
        )


def _die_with_parent(parent_pid):
    """Has the kernel kill this worker when its parent dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def worker_main(function, argv=None):
    """The `__main__` of a worker: reads ARGS.json, runs `function`, writes the result.

    Args:
        function: called with the argument dict; returns a JSON-serializable
            dict.
        argv: the command-line arguments after the program name (default
            `sys.argv[1:]`); the first is the path of the ARGS.json file.

    Returns:
        The exit status: 0, or 1 when `function` raised (the result is then
        `{"error": "Type: message", "traceback": ...}`).
    """
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        args = json.load(f)
    if args.get("parent_pid"):
        _die_with_parent(int(args["parent_pid"]))
    try:
        result, status = function(args), 0
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        status = 1
    with open(args["result_path"], "w") as f:
        json.dump(result, f)
    return status

"""run_worker / worker_main: isolated worker processes, their errors in one line, their files never left behind."""

import json
import os
import textwrap
import time

import pytest

from keras_effconv import _subprocess
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker

# A worker script that uses worker_main without importing the package (which
# would load TensorFlow), as _gpu_worker.py does.
_PROLOGUE = f"""
import importlib.util, os, signal, sys, time
spec = importlib.util.spec_from_file_location("_effconv_subprocess", {_subprocess.__file__!r})
helper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helper)
"""


def _script(tmp_path, body):
    path = tmp_path / "worker.py"
    path.write_text(_PROLOGUE + textwrap.dedent(body))
    return str(path)


def _hostile_modules(directory, marker):
    for name in ("json", "csv"):
        (directory / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")


def test_result_and_isolation_from_cwd_and_pythonpath(tmp_path, monkeypatch):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    marker = tmp_path / "imported.txt"
    _hostile_modules(here, marker)
    _hostile_modules(elsewhere, marker)
    monkeypatch.chdir(here)
    monkeypatch.setenv("PYTHONPATH", str(elsewhere))
    script = _script(tmp_path, """
        import csv, json
        def run(args):
            return {"cwd": os.getcwd(), "path": sys.path, "twice": args["x"] * 2,
                    "backend": os.environ.get("KERAS_BACKEND"), "extra": os.environ.get("EXTRA")}
        sys.exit(helper.worker_main(run))
    """)
    result = run_worker({"x": 21}, "test run", script=script, env={"EXTRA": "1"}, keras_backend="jax")
    assert result["twice"] == 42 and result["backend"] == "jax" and result["extra"] == "1"
    assert not marker.exists(), "a module from the working directory or PYTHONPATH was imported"
    assert str(here) not in result["path"] and str(elsewhere) not in result["path"]
    assert result["cwd"] != str(here)
    assert not os.path.exists(result["cwd"]), "the worker's temporary directory was not removed"


def test_worker_error_is_reported(tmp_path):
    script = _script(tmp_path, """
        def run(args):
            raise ValueError("the model has no inputs")
        sys.exit(helper.worker_main(run))
    """)
    with pytest.raises(WorkerError, match=r"^test run failed: ValueError: the model has no inputs$") as info:
        run_worker({}, "test run", script=script)
    assert info.value.kind == "error" and info.value.returncode == 1


def test_killed_worker_is_reported_by_signal_name(tmp_path):
    script = _script(tmp_path, """
        print("started", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    with pytest.raises(WorkerError, match=r"^test run failed: killed by signal SIGKILL$") as info:
        run_worker({}, "test run", script=script)
    assert info.value.kind == "signal" and info.value.stdout.strip() == "started"


def test_crash_reports_the_last_stderr_line_that_is_not_a_log_line(tmp_path):
    script = _script(tmp_path, """
        sys.stderr.write("RuntimeError: out of memory in the converter\\n")
        sys.stderr.write("I0000 00:00:1796036676.003688    4102 cudart_stub.cc:31] Could not find cuda drivers\\n")
        sys.stderr.write("W0000 00:00:1796036676.044132    4102 cpu_feature_guard.cc:227] optimized\\n")
        sys.exit(3)
    """)
    with pytest.raises(WorkerError) as info:
        run_worker({}, "test run", script=script)
    assert str(info.value) == "test run failed: RuntimeError: out of memory in the converter (exit status 3)"
    assert info.value.kind == "exit"


def test_no_result_and_timeout(tmp_path):
    script = _script(tmp_path, "pass\n")
    with pytest.raises(WorkerError, match="exit status 0 without a result"):
        run_worker({}, "test run", script=script)
    script = _script(tmp_path, "time.sleep(60)\n")
    with pytest.raises(WorkerError, match=r"^the test run did not finish within 1 s$") as info:
        run_worker({}, "test run", script=script, timeout=1)
    assert info.value.kind == "timeout"


def test_bad_calls():
    with pytest.raises(ValueError, match="exactly one"):
        run_worker({}, "test run")
    with pytest.raises(ValueError, match="absolute"):
        run_worker({}, "test run", script="worker.py")


def test_worker_main_writes_the_result(tmp_path):
    args_path = tmp_path / "args.json"
    result_path = tmp_path / "result.json"
    args_path.write_text(json.dumps({"result_path": str(result_path), "n": 2}))
    assert _subprocess.worker_main(lambda args: {"n": args["n"] + 1}, [str(args_path)]) == 0
    assert json.loads(result_path.read_text()) == {"n": 3}
    assert _subprocess.worker_main(lambda args: 1 / 0, [str(args_path)]) == 1
    assert json.loads(result_path.read_text())["error"] == "ZeroDivisionError: division by zero"


def test_module_worker_does_not_import_from_the_working_directory(tmp_path, monkeypatch):
    # `python -m` without -I puts the working directory first on sys.path:
    # `-m json.tool` would then import this json.py.
    marker = tmp_path / "imported.txt"
    _hostile_modules(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkerError, match="without a result"):
        run_worker({}, "test run", module="json.tool")
    assert not marker.exists()


def test_worker_temp_files_go_to_its_directory(tmp_path):
    script = _script(tmp_path, """
        import tempfile
        def run(args):
            handle, name = tempfile.mkstemp()
            return {"tmp": name, "cwd": os.getcwd(), "parent": args["parent_pid"]}
        sys.exit(helper.worker_main(run))
    """)
    result = run_worker({}, "test run", script=script)
    assert os.path.dirname(result["tmp"]) == result["cwd"] and result["parent"] == os.getpid()
    assert os.path.basename(result["cwd"]).startswith(f"effconv-worker-{os.getpid()}-")
    assert not os.path.exists(result["tmp"])


_PARENT = """
import sys
from keras_effconv._subprocess import run_worker
run_worker({{}}, "test run", script={script!r})
"""


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_worker_dies_with_its_killed_parent_and_its_directory_is_removed_next_time(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from keras_effconv._files import remove_stale_temporary_directories

    private = tmp_path / "tmp"
    private.mkdir()
    pid_file = tmp_path / "worker.pid"
    script = _script(tmp_path, f"""
        def run(args):
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(120)
        sys.exit(helper.worker_main(run))
    """)
    (tmp_path / "parent.py").write_text(_PARENT.format(script=script))
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], env=dict(os.environ, TMPDIR=str(private)))
    deadline = time.time() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and parent.poll() is None, "the worker did not start"
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{worker}") and "Z" not in _state(worker):
        assert time.time() < deadline, "the worker outlived its killed parent"
        time.sleep(0.1)
    leftovers = os.listdir(private)
    assert len(leftovers) == 1 and leftovers[0].startswith(f"effconv-worker-{parent.pid}-")
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    remove_stale_temporary_directories()
    assert os.listdir(private) == []


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
